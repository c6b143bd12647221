"""Live feeds: rows encoded once, off the writer's thread, as the HTTP API encodes them."""

import asyncio
import threading
from decimal import Decimal

import orjson
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.pipelines import subscriptions as subs_module
from headwater.pipelines.json_rows import SMALL_ROWS, JsonRows
from headwater.pipelines.subscriptions import Subscriptions
from headwater.query.json_values import JSON_OPTS, json_default

ENCODER = JsonRows()  # a module's worth of examples; its connection closes with the process


def python_json(rows: pa.Table) -> bytes:
    return orjson.dumps(rows.to_pylist(), option=JSON_OPTS, default=json_default)


def many(table: pa.Table) -> pa.Table:
    """Enough copies of the rows that the DuckDB path runs, not the small-table one."""
    return pa.concat_tables([table] * (SMALL_ROWS // max(1, table.num_rows) + 1))


def test_rows_encode_as_the_http_api_encodes_them() -> None:
    table = many(
        pa.table(
            {
                "s": ["a\"b\\\n\x01é", None, ""],
                "i": pa.array([2**63 - 1, -5, None], pa.int64()),
                "u": pa.array([2**64 - 1, 0, 1], pa.uint64()),
                "f": [1.5, float("nan"), float("-inf")],
                "f32": pa.array([0.1, None, 2.5], pa.float32()),
                "b": [True, None, False],
                "d": pa.array([19000, None, 0], pa.date32()),
                "ts": pa.array([1_700_000_000_123, 1_700_000_000_000, None], pa.timestamp("ms", "UTC")),
                "naive": pa.array([5, 0, 1_000_001], pa.timestamp("us")),
                "sec": pa.array([1, 2, 3], pa.timestamp("s", "UTC")),
                "wide": pa.array([Decimal(2**70), Decimal(-5), None], pa.decimal128(38, 0)),
            }
        )
    )  # fmt: skip
    ours = ENCODER.encode(table)
    assert orjson.loads(ours) == orjson.loads(python_json(table))


def test_a_typical_result_table_is_byte_for_byte_the_same() -> None:
    n = 1000
    table = pa.table(
        {
            "device_id": [f"device-{i:05d}" for i in range(n)],
            "window_start": pa.array([60_000 * (i % 3) for i in range(n)], pa.int64()).cast(
                pa.timestamp("ms", "UTC")
            ),
            "n": list(range(n)),
            "avg": [i / 7 for i in range(n)],
        }
    )
    assert ENCODER.encode(table) == python_json(table)


def test_types_duckdb_would_encode_differently_go_the_python_way() -> None:
    table = many(pa.table({"l": pa.array([[1, 2], None], pa.list_(pa.int64())), "x": [1, 2]}))
    assert ENCODER.encode(table) == python_json(table)
    small = pa.table({"k": ["a"], "n": [1]})
    assert ENCODER.encode(small) == python_json(small)


@settings(max_examples=examples(40), deadline=None)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.text(max_size=8)),
            st.one_of(st.none(), st.floats(width=64)),
            st.one_of(st.none(), st.integers(-(2**63), 2**63 - 1)),
            st.one_of(st.none(), st.integers(-(2**40), 2**40)),
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_strings_floats_ints_and_times_encode_alike(values: list[tuple]) -> None:
    s, f, i, t = zip(*values, strict=True)
    table = many(
        pa.table(
            {
                "s": pa.array(s, pa.string()),
                "f": pa.array(f, pa.float64()),
                "i": pa.array(i, pa.int64()),
                "t": pa.array(t, pa.int64()).cast(pa.timestamp("ms", "UTC")),
            }
        )
    )
    assert orjson.loads(ENCODER.encode(table)) == orjson.loads(python_json(table))


def hold_publisher(subs: Subscriptions) -> tuple[threading.Event, threading.Event]:
    """Make the publisher wait in each delivery until ``gate`` is set; ``held``: it waits."""
    gate, held = threading.Event(), threading.Event()
    original = subs._deliver

    def deliver(*args: object) -> None:
        held.set()
        gate.wait(5)
        original(*args)  # type: ignore[arg-type]

    subs._deliver = deliver  # type: ignore[method-assign]
    return gate, held


async def next_event(queue: asyncio.Queue[bytes]) -> dict:
    return orjson.loads(await asyncio.wait_for(queue.get(), 5))


async def test_published_rows_reach_every_subscriber_of_the_table() -> None:
    subs = Subscriptions()
    try:
        a, b = subs.subscribe("t", "counts"), subs.subscribe("t", "counts")
        other = subs.subscribe("t", "other")
        rows = pa.table({"k": ["x"], "n": [1]})
        threading.Thread(target=subs.publish, args=("t", "counts", rows)).start()
        for sub in (a, b):
            assert await next_event(sub.queue) == {"kind": "rows", "rows": [{"k": "x", "n": 1}]}
        await asyncio.sleep(0.05)
        assert other.queue.empty()
    finally:
        subs.close()


async def test_rows_queued_behind_each_other_go_out_as_one_event() -> None:
    subs = Subscriptions()
    try:
        sub = subs.subscribe("t", "counts")
        gate, held = hold_publisher(subs)
        subs.publish("t", "counts", pa.table({"k": ["k0"], "n": [0]}))
        assert held.wait(5)  # the publisher is in its first delivery
        for n in range(1, 4):
            subs.publish("t", "counts", pa.table({"k": [f"k{n}"], "n": [n]}))
        gate.set()
        first, second = await next_event(sub.queue), await next_event(sub.queue)
        assert [r["n"] for r in first["rows"]] == [0]
        assert [r["n"] for r in second["rows"]] == [1, 2, 3]
    finally:
        subs.close()


async def test_a_publisher_that_falls_behind_tells_subscribers_to_resync(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(subs_module, "PENDING_TABLES", 2)
    subs = Subscriptions()
    try:
        sub = subs.subscribe("t", "a")
        subs.subscribe("t", "b")
        gate, held = hold_publisher(subs)
        subs.publish("t", "a", pa.table({"n": [0]}))
        assert held.wait(5)
        for n in range(1, 4):  # a, b, a alternate: nothing to combine; a queue of 2
            subs.publish("t", "b" if n == 2 else "a", pa.table({"n": [n]}))
        gate.set()
        events = [await next_event(sub.queue) for _ in range(3)]
        assert [e["kind"] for e in events] == ["rows", "resync", "rows"]
        assert events[2]["rows"] == [{"n": 3}]
    finally:
        subs.close()


async def test_a_subscriber_past_its_buffer_gets_a_final_event_and_nothing_more() -> None:
    subs = Subscriptions()
    try:
        sub = subs.subscribe("t", "counts", buffer_bytes=2048)
        rows = pa.table({"k": ["x" * 300] * 3})  # ~1 KB an event
        for _ in range(3):
            subs.publish("t", "counts", rows)
        events: list[dict] = []
        while not events or events[-1]["kind"] != "closed":
            events.append(orjson.loads(await asyncio.wait_for(sub.next(), 5)))
        assert events[-1]["reason"] == "slow_subscriber"
        assert all(e["kind"] == "rows" for e in events[:-1]) and len(events) <= 2
        witness = subs.subscribe("t", "counts")  # offered after ``sub``, on the same loop
        subs.publish("t", "counts", rows)
        await asyncio.wait_for(witness.next(), 5)
        assert sub.queue.empty() and sub.waiting == 0
    finally:
        subs.close()


async def test_subscriptions_per_tenant_stop_at_the_limit() -> None:
    from headwater.errors import QuotaExceeded

    subs = Subscriptions()
    a = subs.subscribe("t", "x", limit=2)
    subs.subscribe("t", "y", limit=2)
    subs.subscribe("u", "x", limit=2)  # another tenant's count is its own
    with pytest.raises(QuotaExceeded):
        subs.subscribe("t", "z", limit=2)
    subs.unsubscribe("t", "x", a)
    subs.subscribe("t", "z", limit=2)
