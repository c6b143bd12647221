"""One driver per pull-source kind for the source contract suite.

A driver owns the kind's real counterpart for one test and speaks the suite's one
record shape, ``{"p": <partition label>, "seq": <int>, "eid": "<p>-<seq>"}``. To add a
kind: write a class with these members and list it in ``DRIVERS``.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import orjson
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion

from feed_server import Feed
from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.files import DirectorySource
from headwater.connectors.sources.mqtt import MqttSource
from headwater.connectors.sources.poll import PollSource
from headwater.connectors.sources.runtime import PullSource

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

    def stop(self) -> None: ...


def record(part: str, i: int) -> dict[str, Any]:
    return {"p": part, "seq": i, "eid": f"{part}-{i}"}


class FileDriver:
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
        publish(self.broker.port, body)

    def produce_bad(self) -> int:
        publish(self.broker.port, [("contract/a", b'{"seq": -1, "eid": "a-bad"}'),
                                   ("contract/a", b"not json")])  # fmt: skip
        return 2

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

    def stop(self) -> None:
        self.feed.stop()


def _until(check: Callable[[], Any], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the counterpart did not answer")
        time.sleep(0.01)


DRIVERS: dict[str, Callable[[Path], Driver]] = {
    "file": FileDriver,
    "mqtt": MqttDriver,
    "poll": PollDriver,
}
