"""Kafka source (kind ``kafka``): consume topics; offsets live in Headwater's own log.

Each Kafka topic-partition is a partition of the source, named ``topic/N``; its position
is the next offset to read. The position is committed in the same durable log entry as
the rows (``ingest.accept``), never only in the broker's consumer group, so after
``kill -9`` the source resumes at exactly the last durable offset: no loss and no
duplicate (exactly-once, as Kafka can replay).

The consumer joins ``group`` so that several consumers split the partitions, but on each
(re)assignment it seeks every partition to Headwater's committed offset (a partition it
never read starts at ``start``: ``earliest`` or ``latest``). Offsets are also committed to
the group after they are durable, only so that the usual tools show the group's lag.
It reads with ``isolation.level=read_committed``: messages of an open transaction wait
until it commits.

Values are JSON objects (``format: json``, one per message), NDJSON lines
(``format: ndjson``), or Avro data of the record ``schema`` given in the config
(``format: avro``; ``avro-confluent`` when each value starts with the 5-byte header of
Confluent's serializers); a payload that is not a JSON object is rejected into the stream's
quarantine, named by the source and the partition@offset. ``fields`` adds message
metadata to each row: ``{"key": "device_id", "offset": "kafka_offset"}`` (``topic``,
``partition``, ``offset``, ``key``, ``timestamp`` in epoch milliseconds).
"""

from __future__ import annotations

import io
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import fastavro
import orjson
import pyarrow as pa
from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_END,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import Chunk, End, Positions, Reader
from headwater.errors import BadRequest

FORMATS = ("json", "ndjson", "avro", "avro-confluent")
ASSIGNMENT = "assignment"  # the one reader of the runtime: the consumer's assignment
META = ("topic", "partition", "offset", "key", "timestamp")
# what the source sets itself: an option may not change how offsets are kept
OWN_OPTIONS = frozenset({"bootstrap.servers", "group.id", "enable.auto.commit",
                         "enable.auto.offset.store", "isolation.level", "auto.offset.reset"})  # fmt: skip


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_source_config")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap: str
    topics: tuple[str, ...]
    group: str | None
    start: str
    fmt: str
    fields: tuple[tuple[str, str], ...]  # (metadata, field name)
    batch_max: int
    batch_ms: int
    session_timeout_ms: int
    username: str | None
    password: str | None
    options: tuple[tuple[str, str], ...]
    avro: Callable[[bytes | None], bytes | None] | None = field(default=None, compare=False)

    @classmethod
    def parse(cls, c: dict[str, Any]) -> KafkaConfig:
        boot = c.get("bootstrap")
        if isinstance(boot, list):
            boot = ",".join(str(b) for b in boot)
        if not isinstance(boot, str) or not boot or " " in boot:
            raise _bad('config.bootstrap: the brokers, e.g. "127.0.0.1:9092" or a list of them')
        topics = c.get("topics")
        topics = [topics] if isinstance(topics, str) else topics
        if not topics or not all(isinstance(t, str) and t and "/" not in t for t in topics):
            raise _bad('config.topics must list topic names, e.g. ["orders"]')
        group = c.get("group")
        if group is not None and (not isinstance(group, str) or not group):
            raise _bad("config.group: the consumer group id (a non-empty string)")
        start = c.get("start", "earliest")
        if start not in ("earliest", "latest"):
            raise _bad("config.start: earliest or latest (where a partition never read starts)")
        fmt = c.get("format", "json")
        if fmt not in FORMATS:
            raise _bad("config.format: json (one object per message), ndjson, avro or "
                       "avro-confluent (with config.schema)")  # fmt: skip
        avro = avro_decoder(c.get("schema"), fmt == "avro-confluent") if "avro" in fmt else None
        fields = c.get("fields", {})
        if not isinstance(fields, dict) or not all(
            k in META and isinstance(v, str) and v for k, v in fields.items()
        ):
            raise _bad(f"config.fields maps message metadata ({', '.join(META)}) to field names")
        batch_max, batch_ms = c.get("batch_max", 10_000), c.get("batch_ms", 50)
        session = c.get("session_timeout_ms", 10_000)
        if not all(isinstance(v, int) and v > 0 for v in (batch_max, batch_ms, session)):
            raise _bad("config.batch_max, batch_ms and session_timeout_ms: positive integers")
        options = c.get("options", {})
        if not isinstance(options, dict) or set(options) & OWN_OPTIONS:
            raise _bad("config.options: client settings (e.g. security.protocol) as an object, "
                       f"without {', '.join(sorted(OWN_OPTIONS))}, which the source sets")  # fmt: skip
        return cls(
            boot, tuple(topics), group, start, fmt, tuple(sorted(fields.items())), batch_max,
            batch_ms, session, c.get("username"), c.get("password"),
            tuple((str(k), str(v)) for k, v in options.items()), avro,
        )  # fmt: skip

    def client(self, group: str) -> dict[str, Any]:
        """librdkafka settings of the consumer."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap, "group.id": group,
            "enable.auto.commit": False, "enable.auto.offset.store": False,
            "isolation.level": "read_committed", "auto.offset.reset": self.start,
            "session.timeout.ms": self.session_timeout_ms,
            "max.poll.interval.ms": max(300_000, self.session_timeout_ms),
            "heartbeat.interval.ms": max(100, self.session_timeout_ms // 10),
            "fetch.wait.max.ms": min(100, self.batch_ms * 2),
            "topic.metadata.refresh.interval.ms": 10_000,
        }  # fmt: skip
        if self.username is not None:
            conf.update({"sasl.username": self.username, "sasl.password": self.password or "",
                         "sasl.mechanism": "PLAIN", "security.protocol": "SASL_PLAINTEXT"})  # fmt: skip
        conf.update(dict(self.options))
        return conf


def avro_decoder(schema: Any, confluent: bool) -> Callable[[bytes | None], bytes | None]:
    r"""Avro datum → one JSON line; one that does not decode becomes a JSON string saying
    why, to be rejected into the quarantine.

    >>> import io, fastavro
    >>> s = {"type": "record", "name": "R", "fields": [{"name": "n", "type": "int"}]}
    >>> out = io.BytesIO(); fastavro.schemaless_writer(out, s, {"n": 7})
    >>> avro_decoder(s, False)(out.getvalue())
    b'{"n":7}'
    >>> avro_decoder(s, True)(b"\0\0\0\0\1" + out.getvalue())
    b'{"n":7}'
    """
    if not isinstance(schema, dict):
        raise _bad("config.schema: the Avro schema of the values (a record), as JSON")
    try:
        parsed = fastavro.parse_schema(schema)
    except Exception as exc:
        raise _bad(f"config.schema is not a valid Avro schema: {exc}") from exc

    def decode(value: bytes | None) -> bytes | None:
        if not value:
            return None
        if confluent:
            if value[:1] != b"\0":
                return orjson.dumps("not Confluent-framed Avro (no magic byte 0)")
            value = value[5:]
        try:
            rec = fastavro.schemaless_reader(io.BytesIO(value), parsed, None)
        except Exception as exc:
            return orjson.dumps(f"not Avro of the configured schema: {type(exc).__name__}")
        return orjson.dumps(rec, default=_plain)

    return decode


def _plain(value: object) -> object:
    """What orjson cannot write: Avro bytes and decimals."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value)


def check_client(cfg: KafkaConfig) -> None:
    """Refuse settings the client does not take (an unknown or invalid option) with a 400,
    before the source is stored: a consumer is made with them and closed at once."""
    try:
        Consumer(cfg.client("headwater-check")).close()
    except KafkaException as exc:
        raise _bad(f"config: the Kafka client refuses it: {exc.args[0].str()}") from exc


def part_name(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def where(msg: Message) -> tuple[str, int, int]:
    """Topic, partition and offset of a consumed message (set on every one without error)."""
    topic, partition, offset = msg.topic(), msg.partition(), msg.offset()
    assert topic is not None and partition is not None and offset is not None
    return topic, partition, offset


def lines_of(value: bytes | None, head: bytes = b"") -> list[bytes]:
    r"""The NDJSON line(s) of one message value, with ``head`` (metadata fields, encoded)
    first, so the payload's own values win; a payload that is not valid UTF-8 becomes a
    JSON string, to be rejected with its text; a tombstone (no value) is no row.

    >>> lines_of(b'{"t": 1}', b'"device_id":"d7"')
    [b'{"device_id":"d7","t": 1}']
    >>> lines_of(b'{"a": 1}\n{"a": 2}\n')
    [b'{"a": 1}', b'{"a": 2}']
    >>> lines_of(b"\xff"), lines_of(None)
    ([b'"\\\\xff"'], [])
    """
    if not value:
        return []
    text = value.strip()
    try:
        text.decode("utf-8")
    except UnicodeDecodeError:
        return [orjson.dumps(text.decode("utf-8", "backslashreplace"))]
    lines = [text]
    if b"\n" in text or b"\r" in text:
        try:
            lines = [orjson.dumps(orjson.loads(text))]
        except orjson.JSONDecodeError:
            lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not head:
        return lines
    out = []
    for ln in lines:
        if ln.startswith(b"{"):
            rest = ln[1:].lstrip()
            ln = b"{" + head + (b"" if rest.startswith(b"}") else b",") + rest
        out.append(ln)
    return out


def head_of(msg: Message, fields: tuple[tuple[str, str], ...]) -> bytes:
    """The metadata fields of a message, as JSON members."""
    return b",".join(orjson.dumps(name) + b":" + orjson.dumps(_meta(msg, what))
                     for what, name in fields)  # fmt: skip


def _meta(msg: Message, what: str) -> object:
    if what == "topic":
        return msg.topic()
    if what == "partition":
        return msg.partition()
    if what == "offset":
        return msg.offset()
    if what == "timestamp":
        return msg.timestamp()[1]
    key = msg.key()
    return key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else key


class KafkaSource:
    """The ``PullSource`` of a Kafka subscription: the runtime opens one reader (the
    consumer), whose chunks each hold one topic-partition and name it."""

    def __init__(self, rec: SourceRecord) -> None:
        self.config = KafkaConfig.parse(rec.config)
        self.group = self.config.group or f"headwater-{rec.tenant}-{rec.name}"
        self._committed: Positions = {}

    def partitions(self, committed: Positions) -> list[str]:
        self._committed = committed
        return [ASSIGNMENT]

    def open(self, partition: str, position: str | None) -> Reader:
        nexts = {p: int(pos) for p, (pos, _) in self._committed.items() if pos.isdigit()}
        return KafkaReader(self.config, self.group, nexts)


class KafkaReader:
    """One consumer, polled from the reader's thread; see the module doc."""

    def __init__(self, cfg: KafkaConfig, group: str, nexts: dict[str, int]) -> None:
        self._cfg = cfg
        self._next = nexts  # partition -> next offset, past the last chunk handed out
        self._ready: deque[Chunk] = deque()
        self._commits: list[TopicPartition] = []  # durable offsets to tell the group
        self._lock = threading.Lock()
        # a read still running in its thread when the source stops finishes first
        self._busy = threading.Lock()
        self._error: str | None = None
        self._assigned = 0  # partitions
        conf = cfg.client(group)
        conf["error_cb"] = self._on_error
        self._consumer = Consumer(conf)
        self._consumer.subscribe(list(cfg.topics), on_assign=self._on_assign,
                                 on_revoke=self._on_revoke)  # fmt: skip

    def _on_error(self, err: KafkaError) -> None:
        if err.fatal() or err.code() == KafkaError._ALL_BROKERS_DOWN:
            self._error = f"{err.name()}: {err.str()}"

    def _on_assign(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        """Seek each partition to Headwater's committed offset, not the group's."""
        begin = OFFSET_BEGINNING if self._cfg.start == "earliest" else OFFSET_END
        for tp in parts:
            tp.offset = self._next.get(part_name(tp.topic, tp.partition), begin)
        consumer.assign(parts)
        self._assigned = len(parts)

    def _on_revoke(self, consumer: Consumer, parts: list[TopicPartition]) -> None:
        gone = {part_name(tp.topic, tp.partition) for tp in parts}
        self._ready = deque(c for c in self._ready if c.partition not in gone)
        consumer.unassign()
        self._assigned = 0

    def read(self, timeout_s: float) -> Chunk | End | None:
        with self._busy:
            if not self._ready:
                self._fetch(timeout_s)
            if self._ready:
                chunk = self._ready.popleft()
                # Where a rebalance seeks this partition: past the chunk handed out, which
                # the runtime commits before it reads again (or reads one ahead of, in a
                # process of its own, and then on any failure reopens at its commit).
                self._next[chunk.partition] = int(chunk.position)
                return chunk
            return None

    def _fetch(self, timeout_s: float) -> None:
        c, cfg = self._consumer, self._cfg
        with self._lock:
            commits, self._commits = self._commits, []
        if commits:
            c.commit(offsets=commits, asynchronous=True)
        deadline = time.monotonic() + timeout_s
        msgs: list[Message] = []
        while not msgs:
            if self._error is not None:
                raise ConnectionError(self._error)
            wait = min(cfg.batch_ms / 1000, max(0.0, deadline - time.monotonic()))
            # up to batch_max per partition: a fetch interleaves the partitions
            msgs = c.consume(cfg.batch_max * max(1, self._assigned), wait)
            if time.monotonic() >= deadline:
                break
        by_part: dict[tuple[str | None, int | None], list[Message]] = {}
        key, run = None, None
        for msg in msgs:  # messages come in runs of one partition: one lookup per run
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(err)
            k = (msg.topic(), msg.partition())
            if k != key or run is None:
                key, run = k, by_part.setdefault(k, [])
            run.append(msg)
        for group in by_part.values():
            for at in range(0, len(group), cfg.batch_max):
                self._ready.append(self._chunk(group[at : at + cfg.batch_max]))

    def _chunk(self, msgs: list[Message]) -> Chunk:
        topic, partition, last = where(msgs[-1])
        position = last + 1
        data = self._lines(msgs)
        _, high = self._consumer.get_watermark_offsets(
            TopicPartition(topic, partition), cached=True
        )
        lag = max(0, high - position) if high >= 0 else None
        part = part_name(topic, partition)
        return Chunk(data or pa.table({}), "ndjson" if data else "arrow", part, str(position),
                     lag=lag, done=lambda: self._durable(topic, partition, position))  # fmt: skip

    def _lines(self, msgs: list[Message]) -> bytes:
        """The NDJSON of the messages' rows (``b""``: none)."""
        fields = self._cfg.fields
        values = [m.value() for m in msgs]
        if self._cfg.avro is not None:
            values = [self._cfg.avro(v) for v in values]
        if not fields and None not in values:  # usually: one-line UTF-8 objects, checked at once
            try:
                data = b"\n".join(v for v in values if v is not None) + b"\n"
                if data.count(b"\n") == len(values) and b"\r" not in data:
                    data.decode("utf-8")
                    return data
            except UnicodeDecodeError:
                pass
        heads = [head_of(m, fields) if fields else b"" for m in msgs]
        if self._cfg.fmt == "ndjson":
            lines = [ln for v, h in zip(values, heads, strict=True) for ln in lines_of(v, h)]
        else:  # one row per message: lines of a message that is no JSON object stay together
            lines = [b" ".join(ls) for v, h in zip(values, heads, strict=True)
                     if (ls := lines_of(v, h))]  # fmt: skip
        return b"\n".join(lines) + b"\n" if lines else b""

    def _durable(self, topic: str, partition: int, offset: int) -> None:
        """Called once the chunk is in the log: the group hears of it with the next read."""
        with self._lock:
            self._commits.append(TopicPartition(topic, partition, offset))

    def close(self) -> None:
        with self._busy:
            try:
                with self._lock:
                    commits, self._commits = self._commits, []
                if commits:
                    self._consumer.commit(offsets=commits, asynchronous=False)
            except KafkaException:
                pass  # the group's offsets are informative; Headwater's are in its log
            finally:
                self._consumer.close()
