"""One driver per pull-source kind for the source contract suite.

A driver owns the kind's real counterpart for one test and speaks the suite's one
record shape, ``{"p": <partition label>, "seq": <int>, "eid": "<p>-<seq>"}``. To add a
kind: write a class with these members and list it in ``DRIVERS``.

Servers that are slow to start (the Kafka broker, NATS, a PostgreSQL cluster) run once
per test module (``COUNTERPARTS``); each driver takes its own topic, stream or database
in them, so tests stay apart.

The ``simulator`` kind is not in the suite: it makes its own events (devices, readings
and malformed ones drawn at random), so no driver can write a chosen partition label and
sequence, nor a chosen bad record, and there is nothing to count loss or duplicates by;
it has no upstream to resume in either (its tests are ``test_simulator*``).
"""

from __future__ import annotations

import itertools
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

import orjson
import psycopg
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from feed_server import Feed
from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.files import DirectorySource
from headwater.connectors.sources.kafka import KafkaSource
from headwater.connectors.sources.mqtt import MqttSource
from headwater.connectors.sources.nats import NatsSource
from headwater.connectors.sources.poll import PollSource
from headwater.connectors.sources.ports import PullSource
from headwater.connectors.sources.postgres_cdc import PostgresCdcSource
from kafka_broker import Tansu
from nats_server import NatsServer
from pgcluster import PgCluster

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "e2e"))
from mqtt_broker import Broker, publish


class Driver(Protocol):
    kind: str
    exactly_once: bool  # False: at-least-once, made effectively-once by the stream's id
    root: Path | None  # the directory file sources are confined to, if the kind needs one

    def config(self) -> dict[str, Any]:
        """The source's ``config``, pointing at this driver's counterpart."""
        ...

    def source(self, rec: SourceRecord) -> PullSource:
        """The kind's ``PullSource`` for ``rec`` (as the server builds it)."""
        ...

    def produce(self, part: str, seqs: range) -> None:
        """Write the records ``seqs`` of partition label ``part`` into the counterpart."""
        ...

    def produce_bad(self) -> int:
        """Write bad records (one with ``seq`` -1); return how many rows they make."""
        ...

    def server_env(self) -> dict[str, str]:
        """Environment a ``headwater serve`` needs to run this kind here."""
        ...

    def served(self) -> int | None:
        """Chunks the counterpart has handed to the source so far, where it can tell (an
        API's answers, a JetStream consumer's deliveries), else None."""
        ...

    def acknowledged(self) -> int | None:
        """Records the source has acknowledged to the counterpart, where it can tell, else
        None. MQTT tells only while the source is not connected: the driver takes the
        source's session over for a moment, to count what the broker still holds for it."""
        ...

    def stop(self) -> None: ...


class Untold:
    """A counterpart that tells neither what it handed out nor what was acknowledged."""

    def served(self) -> int | None:
        return None

    def acknowledged(self) -> int | None:
        return None


def record(part: str, i: int) -> dict[str, Any]:
    return {"p": part, "seq": i, "eid": f"{part}-{i}"}


class FileDriver(Untold):
    """A watched directory; each ``produce`` is one NDJSON file, renamed into place."""

    kind, exactly_once = "file", True

    def __init__(self, workdir: Path) -> None:
        self.root = workdir.resolve()
        self.inbox = self.root / "inbox"
        self.inbox.mkdir(parents=True)
        self._names = itertools.count()

    def config(self) -> dict[str, Any]:
        return {"path": str(self.inbox), "settle_ms": 0, "chunk_bytes": 1024}

    def source(self, rec: SourceRecord) -> PullSource:
        return DirectorySource(rec, self.root)

    def _write(self, lines: list[bytes]) -> None:
        name = f"{next(self._names):06d}.ndjson"
        tmp = self.inbox / f".{name}"
        tmp.write_bytes(b"".join(line + b"\n" for line in lines))
        os.replace(tmp, self.inbox / name)

    def produce(self, part: str, seqs: range) -> None:
        self._write([orjson.dumps(record(part, i)) for i in seqs])

    def produce_bad(self) -> int:
        self._write([orjson.dumps({"p": "a", "seq": -1, "eid": "a-bad"}), b"not json"])
        return 2

    def server_env(self) -> dict[str, str]:
        return {"HEADWATER_FILE_SOURCE_ROOT": str(self.root)}

    def stop(self) -> None:
        pass


class MqttDriver:
    """A private Mosquitto; ``contract/<p>`` topics, the label read back from the topic."""

    kind, exactly_once, root = "mqtt", False, None

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True)
        self.broker = Broker(workdir)
        self.client_id = f"hw-contract-{self.broker.port}"
        self.produced: set[bytes] = set()
        self._subscribe_once()

    def _subscribe_once(self) -> None:
        """Open the source's persistent session now, so the broker queues what is
        published before the source first connects."""
        done: list[bool] = []
        c = Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False)
        c.on_subscribe = lambda *_: done.append(True)
        c.connect("127.0.0.1", self.broker.port)
        c.subscribe("contract/+", qos=1)
        c.loop_start()
        _until(lambda: done)
        c.disconnect()
        c.loop_stop()

    def config(self) -> dict[str, Any]:
        return {"url": self.broker.url, "topics": ["contract/+"], "qos": 1, "batch_ms": 20,
                "batch_max": 200, "topic_fields": "contract/{p}", "client_id": self.client_id}  # fmt: skip

    def source(self, rec: SourceRecord) -> PullSource:
        return MqttSource(rec)

    def produce(self, part: str, seqs: range) -> None:
        body = [(f"contract/{part}", orjson.dumps({"seq": i, "eid": f"{part}-{i}"})) for i in seqs]
        self._publish(body)

    def produce_bad(self) -> int:
        self._publish([("contract/a", b'{"seq": -1, "eid": "a-bad"}'), ("contract/a", b"not json")])
        return 2

    def _publish(self, body: list[tuple[str, bytes]]) -> None:
        publish(self.broker.port, body)
        self.produced.update(f"{topic}:".encode() + payload for topic, payload in body)

    def served(self) -> int | None:
        return None

    def acknowledged(self) -> int | None:
        """What was produced less what the broker delivers again to the source's session,
        which is taken over and left without acknowledging anything."""
        held: set[bytes] = set()
        c = Client(CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=False,
                   manual_ack=True)  # fmt: skip
        c.on_message = lambda _c, _u, m: held.add(f"{m.topic}:".encode() + m.payload)
        c.connect("127.0.0.1", self.broker.port)
        c.loop_start()
        try:
            _until(lambda: held >= self.produced, 10, fail=False)
        finally:
            c.disconnect()
            c.loop_stop()
        return len(self.produced - held)

    def server_env(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        self.broker.stop()


class PollDriver:
    """A JSON API paged by ``next`` URLs (``feed_server``)."""

    kind, exactly_once, root = "poll", True, None

    def __init__(self, workdir: Path) -> None:
        self.feed = Feed()

    def config(self) -> dict[str, Any]:
        return {"url": f"{self.feed.url}/feed?limit=40", "items": "data.items", "next": "next",
                "interval": 0.1}  # fmt: skip

    def source(self, rec: SourceRecord) -> PullSource:
        return PollSource(rec)

    def produce(self, part: str, seqs: range) -> None:
        self.feed.add([record(part, i) for i in seqs])

    def produce_bad(self) -> int:
        self.feed.add([{"p": "a", "seq": -1, "eid": "a-bad"}, "not an object"])
        return 2

    def server_env(self) -> dict[str, str]:
        return {}

    def served(self) -> int | None:
        return sum(hit.status == 200 for hit in self.feed.requests)

    def acknowledged(self) -> int | None:
        return None

    def stop(self) -> None:
        self.feed.stop()


class Counterparts:
    """Servers shared by the drivers of one test module, started on first use."""

    def __init__(self) -> None:
        self._made: dict[str, Any] = {}
        self._stops: list[Callable[[], None]] = []
        self.names = itertools.count()  # topics, streams, databases: one per driver

    def get(self, key: str, start: Callable[[Path], Any], stop: Callable[[Any], None]) -> Any:
        if key not in self._made:
            workdir = Path(tempfile.mkdtemp(prefix=f"hw-contract-{key}-"))
            made = self._made[key] = start(workdir)
            self._stops.append(lambda: (stop(made), shutil.rmtree(workdir, True)))
        return self._made[key]

    def stop(self) -> None:
        while self._stops:
            self._stops.pop()()
        self._made.clear()


COUNTERPARTS = Counterparts()
KAFKA_PARTS = ("a", "b", "c")  # the label's Kafka partition is its index here


class KafkaDriver(Untold):
    """A topic of three partitions on the module's Tansu broker; label ``a`` in partition 0."""

    kind, exactly_once, root = "kafka", True, None

    def __init__(self, workdir: Path) -> None:
        self.broker: Tansu = COUNTERPARTS.get("kafka", lambda d: Tansu(d).start(),
                                              Tansu.stop)  # fmt: skip
        n = next(COUNTERPARTS.names)
        self.topic, self.group = f"contract-{n}", f"hw-contract-{n}"
        self.broker.create_topic(self.topic, len(KAFKA_PARTS))

    def config(self) -> dict[str, Any]:
        return {"bootstrap": self.broker.bootstrap, "topics": [self.topic], "group": self.group,
                "session_timeout_ms": 1000, "batch_max": 100, "batch_ms": 20}  # fmt: skip

    def source(self, rec: SourceRecord) -> PullSource:
        return KafkaSource(rec)

    def produce(self, part: str, seqs: range) -> None:
        at = KAFKA_PARTS.index(part)
        self.broker.produce(self.topic, [(at, orjson.dumps(record(part, i))) for i in seqs])

    def produce_bad(self) -> int:
        self.broker.produce(self.topic, [(0, orjson.dumps({"p": "a", "seq": -1, "eid": "a-bad"})),
                                         (0, b"not json")])  # fmt: skip
        return 2

    def server_env(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        pass


class NatsDriver:
    """A JetStream stream of its own on the module's NATS server; the label in the subject."""

    kind, exactly_once, root = "nats", True, None

    def __init__(self, workdir: Path) -> None:
        self.server: NatsServer = COUNTERPARTS.get("nats", NatsServer, NatsServer.stop)
        n = next(COUNTERPARTS.names)
        self.stream, self.prefix = f"CONTRACT{n}", f"contract{n}"
        _off_loop(self.server.add_stream, self.stream, [f"{self.prefix}.>"])

    def config(self) -> dict[str, Any]:
        return {"url": self.server.url, "subjects": [f"{self.prefix}.*"], "stream": self.stream,
                "subject_fields": f"{self.prefix}.{{p}}", "batch_max": 100}  # fmt: skip

    def source(self, rec: SourceRecord) -> PullSource:
        return NatsSource(rec)

    def produce(self, part: str, seqs: range) -> None:
        subject = f"{self.prefix}.{part}"
        _off_loop(self.server.publish, [(subject, orjson.dumps({"seq": i, "eid": f"{part}-{i}"}))
                                        for i in seqs])  # fmt: skip

    def produce_bad(self) -> int:
        subject = f"{self.prefix}.a"
        _off_loop(self.server.publish, [(subject, b'{"seq": -1, "eid": "a-bad"}'),
                                        (subject, b"not json")])  # fmt: skip
        return 2

    def _consumer(self) -> Any:
        """The source's durable consumer (the only one on the driver's stream), or None."""

        async def info(js: Any) -> Any:
            found = await js.consumers_info(self.stream)
            return found[0] if found else None

        return _off_loop(self.server.run, info)

    def served(self) -> int | None:
        info = self._consumer()
        delivered = info.delivered.stream_seq if info and info.delivered else 0
        return int(delivered) // self.config()["batch_max"]

    def acknowledged(self) -> int | None:
        info = self._consumer()
        return int(info.ack_floor.stream_seq) if info and info.ack_floor else 0

    def server_env(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        pass


class PostgresCdcDriver(Untold):
    """A database of its own on the module's private cluster; one row per record, inserted
    in one transaction per ``produce`` (rows written before the start come by snapshot)."""

    kind, exactly_once, root = "postgres_cdc", True, None

    def __init__(self, workdir: Path) -> None:
        cluster: PgCluster = COUNTERPARTS.get("postgres", lambda d: PgCluster().start(),
                                              PgCluster.stop)  # fmt: skip
        self.dsn = cluster.create_db(f"contract_{next(COUNTERPARTS.names)}")
        with psycopg.connect(self.dsn, autocommit=True) as db:
            db.execute("CREATE TABLE contract (id serial PRIMARY KEY, p text, seq int, eid text)")

    def config(self) -> dict[str, Any]:
        return {"dsn": self.dsn, "tables": ["contract"], "poll_ms": 20, "batch_rows": 100}

    def source(self, rec: SourceRecord) -> PullSource:
        return PostgresCdcSource(rec)

    def _insert(self, rows: list[tuple[str | None, int, str]]) -> None:
        with psycopg.connect(self.dsn) as db, db.cursor() as cur:
            cur.executemany("INSERT INTO contract (p, seq, eid) VALUES (%s, %s, %s)", rows)

    def produce(self, part: str, seqs: range) -> None:
        self._insert([(part, i, f"{part}-{i}") for i in seqs])

    def produce_bad(self) -> int:
        self._insert([("a", -1, "a-bad"), (None, 0, "no-label")])  # a required field missing
        return 2

    def server_env(self) -> dict[str, str]:
        return {}

    def stop(self) -> None:
        pass


def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a thread of its own: the NATS helpers run their own event loop, and
    the in-process tests call drivers from inside one."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn, *args).result()


def _until(check: Callable[[], Any], timeout_s: float = 10.0, fail: bool = True) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            if not fail:
                return
            raise TimeoutError("the counterpart did not answer")
        time.sleep(0.01)


DRIVERS: dict[str, Callable[[Path], Driver]] = {
    "file": FileDriver,
    "kafka": KafkaDriver,
    "mqtt": MqttDriver,
    "nats": NatsDriver,
    "poll": PollDriver,
    "postgres_cdc": PostgresCdcDriver,
}
