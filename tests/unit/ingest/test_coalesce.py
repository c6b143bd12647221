"""Small requests ingested together answer exactly as they would one by one."""

import asyncio
import gzip
from pathlib import Path

import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.errors import HeadwaterError
from headwater.ingest.admission import Admission
from headwater.ingest.batch import DecodeLimits
from headwater.ingest.coalesce import Coalescer, Waiting, split
from headwater.ingest.idempotency import IdempotencyKeys, body_digest, records_of
from headwater.ingest.model import RowError
from headwater.ingest.service import IngestOutcome, IngestService
from headwater.ingest.streams import StreamState
from headwater.log.file import FileLog
from headwater.log.memory import MemoryLog
from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock

NOW = 1_795_255_300_000
SCHEMA = schema_from_dict(
    {
        "name": "readings",
        "fields": [
            {"name": "device_id", "type": "string", "required": True},
            {"name": "ts", "type": "timestamp", "required": True},
            {"name": "temperature", "type": "float", "min": -50, "max": 150},
            {"name": "event_id", "type": "string"},
        ],
        "event_time": "ts",
        "key": ["device_id"],
        "id": "event_id",
    }
)
LIMITS = DecodeLimits(1 << 20, 10_000, 32, 0, 86_400_000, 100)


def service() -> tuple[IngestService, MemoryLog, StreamState]:
    log = MemoryLog()
    svc = IngestService(
        log, ManualClock(NOW), LIMITS, IdempotencyKeys(ttl_ms=60_000),
        Admission(lambda st: 0, 1),
    )  # fmt: skip
    return svc, log, StreamState("t", SCHEMA, [SCHEMA])


def row(i: int, temp: float, event_id: str | None) -> dict[str, object]:
    out: dict[str, object] = {"device_id": f"d{i % 3}", "ts": "2026-11-22T01:00:00Z"}
    out["temperature"] = temp
    if event_id is not None:
        out["event_id"] = event_id
    return out


async def ingest_all(
    svc: IngestService,
    s: StreamState,
    bodies: list[tuple[bytes, str]],
    alone: bool,
    first: int = 0,
) -> list[IngestOutcome | str]:
    """Send every body at once; ``alone`` sends them gzipped, which never share a group."""

    async def one(k: int, body: bytes, ctype: str) -> IngestOutcome | str:
        try:
            encoding = "gzip" if alone else None
            data = gzip.compress(body) if alone else body
            return await svc.ingest(s, data, ctype, encoding, None, "principal", f"req-{first + k}")
        except HeadwaterError as exc:
            return exc.code

    return await asyncio.gather(*(one(k, b, c) for k, (b, c) in enumerate(bodies)))


def stored(log: MemoryLog, topic: str, column: str) -> list[object]:
    return [v for e in log.read(topic, 0, 1 << 20) for v in e.batch.column(column).to_pylist()]


async def test_concurrent_single_events_share_one_log_entry() -> None:
    svc, log, s = service()
    bodies = [(orjson.dumps(row(i, 20.0 + i, f"e{i}")), "application/json") for i in range(40)]
    bodies.append((orjson.dumps(row(99, 999.0, "e99")), "application/json"))  # rejected
    bodies.append((orjson.dumps(row(5, 25.0, "e5")), "application/json"))  # duplicate
    outcomes = await ingest_all(svc, s, bodies, alone=False)
    answers = [orjson.loads(o.body) for o in outcomes if isinstance(o, IngestOutcome)]
    assert [a["accepted"] for a in answers] == [1] * 40 + [0, 0]
    assert answers[40]["errors"] == [
        {
            "row": 0,
            "field": "temperature",
            "code": "above_max",
            "message": answers[40]["errors"][0]["message"],
        }
    ]
    assert answers[41]["duplicates"] == 1
    entries = log.read(s.topic, 0, 1 << 20)
    assert len(entries) == 1 and entries[0].batch.num_rows == 40
    assert stored(log, s.quarantine_topic, "request_id") == ["req-40"]


async def test_a_lone_request_is_answered_without_waiting_for_company() -> None:
    svc, _, s = service()
    out = await asyncio.wait_for(
        svc.ingest(s, orjson.dumps(row(1, 1.0, None)), "application/json", None, None, "p", "r"), 1
    )
    assert orjson.loads(out.body)["accepted"] == 1


async def test_request_level_problems_are_answered_alone() -> None:
    svc, _, s = service()
    bodies = [
        (b'{"device_id": "d1", "ts": ', "application/json"),  # malformed: 400, not a row error
        (b"\xff\xfe", "application/json"),
        (b"", "application/x-ndjson"),
        (orjson.dumps(row(1, 1.0, "x")), "application/json"),
    ]
    outcomes = await ingest_all(svc, s, bodies, alone=False)
    assert outcomes[:3] == ["malformed_json", "invalid_encoding", "empty_body"]
    assert isinstance(outcomes[3], IngestOutcome)


async def test_a_failed_append_fails_every_member_and_frees_their_ids() -> None:
    svc, log, s = service()
    await log.close()
    bodies = [(orjson.dumps(row(i, 1.0, f"e{i}")), "application/json") for i in range(5)]
    outcomes = await ingest_all(svc, s, bodies, alone=False)
    assert all(isinstance(o, str) for o in outcomes)
    assert len(s.ids) == 0


temps = st.sampled_from([20.0, -60.0, 200.0, None])
ids = st.sampled_from(["a", "b", "c", None])
rows = st.lists(st.tuples(temps, ids), min_size=1, max_size=4)
ctypes = st.sampled_from(["application/json", "application/x-ndjson"])


@settings(max_examples=examples(60), deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(rows, ctypes), min_size=1, max_size=12))
def test_coalesced_answers_equal_one_by_one_answers(
    requests: list[tuple[list[tuple[float | None, str | None]], str]],
) -> None:
    bodies = []
    for k, (rs, ctype) in enumerate(requests):
        objs = [
            row(k + j, t, i) if t is not None else {"device_id": "x"} for j, (t, i) in enumerate(rs)
        ]
        if ctype == "application/json":
            objs = objs[:1]
            bodies.append((orjson.dumps(objs[0]), ctype))
        else:
            bodies.append((b"\n".join(map(orjson.dumps, objs)) + b"\n", ctype))

    async def run(alone: bool) -> tuple[list[object], list[object], list[object]]:
        svc, log, s = service()
        outcomes = []
        # One at a time through the per-request path, all at once through the coalescer.
        if alone:
            for k, b in enumerate(bodies):
                outcomes += await ingest_all(svc, s, [b], alone=True, first=k)
        else:
            outcomes = await ingest_all(svc, s, bodies, alone=False)
        answers = [orjson.loads(o.body) if isinstance(o, IngestOutcome) else o for o in outcomes]
        return answers, stored(log, s.topic, "event_id"), stored(log, s.quarantine_topic, "code")

    alone, together = asyncio.run(run(True)), asyncio.run(run(False))
    assert together == alone


def test_split_numbers_rows_within_each_member() -> None:
    errors = [RowError(0, "f", "c", "m", "r0"), RowError(4, "f", "c", "m", "r4")]
    shares = split([2, 0, 3], np.array([1, 2, 3]), np.array([True, False, True]), errors)
    assert shares.accepted == [1, 0, 1]
    assert shares.duplicates == [0, 0, 1]
    assert [[e.row for e in es] for es in shares.errors] == [[0], [], [2]]
    assert shares.owners() == [0, 2]


async def test_coalescer_caps_a_group_by_rows() -> None:
    sizes: list[int] = []

    async def flush(group: list[Waiting]) -> None:
        sizes.append(sum(len(w.lines) for w in group))
        for w in group:
            w.future.set_result(None)

    c = Coalescer(flush, max_rows=5, max_bytes=1 << 20)
    await asyncio.gather(*(c.join("k", Waiting(None, [b"{}"] * 2, 4, "r")) for _ in range(6)))
    assert sizes == [4, 4, 4]


async def test_coalescer_passes_a_flush_failure_to_every_member() -> None:
    async def flush(group: list[Waiting]) -> None:
        raise RuntimeError("disk gone")

    c = Coalescer(flush)
    futures = [c.join("k", Waiting(None, [b"{}"], 2, "r")) for _ in range(3)]
    results = await asyncio.gather(*futures, return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)


async def test_keyed_requests_share_an_entry_and_retries_get_their_own_answers() -> None:
    svc, log, s = service()
    bodies = [orjson.dumps(row(i, 20.0 if i != 2 else 999.0, None)) for i in range(4)]

    async def send(k: int, body: bytes) -> IngestOutcome:
        return await svc.ingest(s, body, "application/json", None, f"key-{k}", "p", f"r{k}")

    first = await asyncio.gather(*(send(k, b) for k, b in enumerate(bodies)))
    entries = log.read(s.topic, 0, 1 << 20)
    assert len(entries) == 1 and entries[0].batch.num_rows == 3
    assert sorted(r.key for r in records_of(entries[0].meta)) == [f"key-{k}" for k in range(4)]
    again = await asyncio.gather(*(send(k, b) for k, b in enumerate(bodies)))
    assert [o.body for o in again] == [o.body for o in first]
    assert all(o.replayed for o in again) and len(log.read(s.topic, 0, 1 << 20)) == 1
    # A process that starts again learns the answers from the entry's meta.
    fresh = IdempotencyKeys(ttl_ms=60_000)
    for rec in records_of(entries[0].meta):
        fresh.remember("t", "readings", rec)
    assert await fresh.begin("t", "readings", "key-2", body_digest(bodies[2]), NOW) == first[2].body


async def test_keyed_requests_that_store_nothing_leave_a_durable_marker() -> None:
    svc, log, s = service()
    body = orjson.dumps(row(1, 20.0, "same-id"))
    await svc.ingest(s, body, "application/json", None, None, "p", "r0")
    outs = await asyncio.gather(
        *(svc.ingest(s, body, "application/json", None, f"k{k}", "p", "r") for k in range(3))
    )
    assert [orjson.loads(o.body)["duplicates"] for o in outs] == [1, 1, 1]
    markers = log.read(s.idempotency_topic, 0, 1 << 20)
    assert [r.key for e in markers for r in records_of(e.meta)] == ["k0", "k1", "k2"]


async def test_a_group_may_hold_more_than_one_request_may() -> None:
    log = MemoryLog()
    tight = DecodeLimits(300, 3, 32, 0, 86_400_000, 100)  # 300-byte bodies of 3 rows at most
    svc = IngestService(
        log, ManualClock(NOW), tight, IdempotencyKeys(ttl_ms=60_000),
        Admission(lambda st: 0, 1),
    )  # fmt: skip
    s = StreamState("t", SCHEMA, [SCHEMA])
    bodies = [(orjson.dumps(row(i, 20.0, f"e{i}")), "application/json") for i in range(20)]
    outcomes = await ingest_all(svc, s, bodies, alone=False)
    assert all(isinstance(o, IngestOutcome) for o in outcomes)
    assert len(log.read(s.topic, 0, 1 << 20)) == 1 and log.end_offset(s.topic) == 20


async def test_a_cancelled_request_does_not_cost_the_others_their_answers() -> None:
    svc, log, s = service()
    tasks = [
        asyncio.ensure_future(
            svc.ingest(
                s, orjson.dumps(row(i, 1.0, f"e{i}")), "application/json", None, None, "p", "r"
            )
        )
        for i in range(5)
    ]
    await asyncio.sleep(0)  # every request has joined the group
    tasks[1].cancel()
    done = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(done[1], asyncio.CancelledError)
    assert [orjson.loads(o.body)["accepted"] for k, o in enumerate(done) if k != 1] == [1, 1, 1, 1]
    # The cancelled request's row was in the group's entry: a retry with its id is a duplicate.
    assert log.end_offset(s.topic) == 5


@pytest.mark.parametrize("encoding", [None, "gzip"])  # in a group, and on its own
async def test_a_cancelled_keyed_request_is_answered_on_retry_not_stored_twice(
    tmp_path: Path, encoding: str | None
) -> None:
    log = FileLog(tmp_path / "log")  # a real append waits for its fsync: time to cancel
    svc = IngestService(
        log, ManualClock(NOW), LIMITS, IdempotencyKeys(ttl_ms=60_000),
        Admission(lambda st: 0, 1),
    )  # fmt: skip
    s = StreamState("t", SCHEMA, [SCHEMA])
    raw = orjson.dumps(row(1, 1.0, None))  # no event id: only the key protects it
    body = gzip.compress(raw) if encoding else raw
    try:
        task = asyncio.ensure_future(
            svc.ingest(s, body, "application/json", encoding, "k1", "p", "r")
        )
        for _ in range(3):
            await asyncio.sleep(0)  # in the middle of its append
        assert not task.done()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        # Retried at once, before the append is durable: it waits for the first answer.
        again = await svc.ingest(s, body, "application/json", encoding, "k1", "p", "r")
        assert again.replayed and log.end_offset(s.topic) == 1
    finally:
        await log.close()
