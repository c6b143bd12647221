"""DEDUP: the first row of each id passes; checked against a plain-Python model, and the
cost of a batch does not grow with the number of ids remembered."""

from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine.operators.dedup import Dedup
from headwater.engine.operators.seen import STATE, SeenIds, Work, id_hashes
from headwater.engine.plan import DedupSpec, Options
from headwater.engine.state import pack
from headwater.errors import QueryError

SCHEMA = pa.schema([("id", pa.string()), ("ts", pa.int64()), ("rid", pa.int64())])
HOUR = 3_600_000


def dedup(horizon_ms: int, delay_ms: int = 0, schema: pa.Schema = SCHEMA) -> Dedup:
    return Dedup(DedupSpec("id", "ts", horizon_ms), Options(watermark_delay_ms=delay_ms), schema)


class Model:
    """The documented rule, row by row."""

    def __init__(self, horizon_ms: int, delay_ms: int) -> None:
        self.horizon, self.delay = horizon_ms, delay_ms
        self.watermark = -(2**62)
        self.remembered: dict[str, int] = {}

    def process(self, rows: list[dict[str, Any]]) -> tuple[list[int], list[int]]:
        passed, late, in_batch = [], [], set()
        for row in rows:
            if row["ts"] + self.horizon <= self.watermark:
                late.append(row["rid"])
            elif row["id"] is None:
                passed.append(row["rid"])
            elif row["id"] not in in_batch:
                in_batch.add(row["id"])
                at = self.remembered.get(row["id"])
                if at is None or at + self.horizon <= self.watermark:
                    self.remembered[row["id"]] = row["ts"]
                    passed.append(row["rid"])
        if rows:
            self.watermark = max(self.watermark, max(r["ts"] for r in rows) - self.delay)
        return passed, late


@st.composite
def streams(draw: st.DrawFn) -> tuple[list[list[dict[str, Any]]], int, int]:
    n = draw(st.integers(1, 150))
    some_id = st.sampled_from(["", "a", "b" * 9, "é", "c"]) | st.text(max_size=20)
    ids = draw(st.lists(st.none() | some_id, min_size=n, max_size=n))
    ts = draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n))
    order = sorted(range(n), key=lambda i: ts[i] + draw(st.integers(0, 3_000)))
    rows = [{"id": ids[i], "ts": ts[i], "rid": i} for i in order]
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=10))) | {0, n})
    batches = [rows[a:b] for a, b in itertools.pairwise(cuts)]
    return batches, draw(st.sampled_from([0, 1, 500, 2_000])), draw(st.sampled_from([0, 700]))


@settings(max_examples=examples(150), deadline=None)
@given(stream=streams(), data=st.data())
def test_dedup_equals_the_row_by_row_rule(
    stream: tuple[list[list[dict[str, Any]]], int, int], data: st.DataObject
) -> None:
    batches, horizon, delay = stream
    model, op = Model(horizon, delay), dedup(horizon, delay)
    restore_at = data.draw(st.integers(0, len(batches)))
    for i, batch in enumerate(batches):
        if i == restore_at:
            blob = op.snapshot()
            op = dedup(horizon, delay)
            op.restore(blob)
        out = op.process(pa.Table.from_pylist(batch, schema=SCHEMA), now_ms=i)
        passed, late = model.process(batch)
        assert out.appends is not None and out.appends["rid"].to_pylist() == passed
        assert (out.late["rid"].to_pylist() if out.late is not None else []) == late


def test_a_million_remembered_ids_cost_a_batch_what_a_thousand_do() -> None:
    """Probes of one batch of 10k distinct ids (up to half of them remembered) with 1k
    and with 1M ids remembered: the same bound, and no pass over the remembered ids."""

    def work(remembered: int) -> Work:
        h, c = id_hashes(pa.array(np.arange(remembered)))
        seen = SeenIds.load(HOUR, pa.table([h, c, np.zeros(remembered, np.int64)], schema=STATE))
        before = dataclasses.replace(seen.work)
        known = np.arange(0, remembered, max(1, remembered // 5_000))[:5_000]
        ids = np.r_[known, remembered + np.arange(10_000 - len(known))]
        new = seen.first_seen(*id_hashes(pa.array(ids)), np.ones(10_000, np.int64), 0)
        assert new.sum() == 10_000 - len(known)
        return Work(seen.work.probes - before.probes, seen.work.rebuilt - before.rebuilt)

    small, large = work(1_000), work(1_000_000)
    assert large.rebuilt == 0  # nothing scanned the million
    assert large.probes <= 2.5 * 10_000 and small.probes <= 2.5 * 10_000 + 2 * 1_000


def test_work_and_memory_stay_proportional_to_the_stream_as_ids_expire() -> None:
    """400 batches of 1k new ids (5% repeats), ids expiring after 20 batches: all the
    table work stays within a constant per row, and the table within a constant of the
    ids alive."""
    op = dedup(horizon_ms=20_000)
    rng = np.random.default_rng(1)
    peak = 0
    for b in range(400):
        fresh = b * 1_000 + np.arange(1_000)
        fresh[rng.random(1_000) < 0.05] -= rng.integers(1, 30_000)
        ids = pa.array([f"event-{i}" for i in fresh])
        batch = pa.table({"id": ids, "ts": fresh, "rid": fresh}, schema=SCHEMA)
        op.process(batch, now_ms=b)
        peak = max(peak, op.seen.capacity)
    work = op.seen.work
    assert work.probes + work.rebuilt <= 12 * 400_000, work
    alive = 20_000  # ids within the horizon of the watermark
    assert peak <= 3 * 2 * 2 * alive and op.status()["state_rows"] <= 3 * alive


def test_state_saved_as_ids_restores() -> None:
    old = pack(
        {"watermark": dedup(HOUR).watermark.to_dict() | {"watermark_ms": 10},
         "counters": {"rows_in": 2}},
        {"seen": pa.table({"id": ["a", "b"], "ts": pa.array([5, 6], pa.int64())})},
    )  # fmt: skip
    op = dedup(HOUR)
    op.restore(old)
    out = op.process(pa.table({"id": ["a", "c", "b"], "ts": [20, 20, 20], "rid": [0, 1, 2]}), 0)
    assert out.appends is not None and out.appends["id"].to_pylist() == ["c"]
    assert op.status()["rows_in"] == 5 and op.status()["dropped_duplicates"] == 2


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        ([3, -1, 3, 2**63 - 1], pa.int64()),
        ([3, 1, 3, 2**64 - 1], pa.uint64()),
        ([0.0, 1.5, -0.0, 2.5], pa.float64()),  # -0.0 is 0.0
        ([b"\x00", b"", b"\x00", b"\x00\x00"], pa.binary()),
        ([1, 2, 1, 3], pa.timestamp("ms", tz="UTC")),
        ([1, 2, 1, 3], pa.date32()),
        (["x", "y", "x", "z"], pa.dictionary(pa.int32(), pa.string())),
    ],
)
def test_ids_of_any_scalar_type(values: list[Any], dtype: pa.DataType) -> None:
    schema = pa.schema([("id", dtype), ("ts", pa.int64()), ("rid", pa.int64())])
    op = dedup(HOUR, schema=schema)
    if pa.types.is_dictionary(dtype):
        ids = pa.array(values, dtype.value_type).dictionary_encode()
    else:
        ids = pa.array(values, dtype)
    batch = pa.table({"id": ids, "ts": [1, 2, 3, 4], "rid": [0, 1, 2, 3]}, schema=schema)
    out = op.process(batch, now_ms=0)
    assert out.appends is not None and out.appends["rid"].to_pylist() == [0, 1, 3]


def test_ids_that_cannot_be_hashed_are_refused_up_front() -> None:
    schema = pa.schema([("id", pa.list_(pa.int64())), ("ts", pa.int64())])
    with pytest.raises(QueryError, match="DEDUP id column"):
        dedup(HOUR, schema=schema)


def test_hashes_never_change() -> None:
    """Snapshots hold these words: a change would forget every remembered id."""
    h, c = id_hashes(pa.array(["", "a", "hello, world", None]))
    assert [f"{x:016x}" for x in h[:3]] == GOLDEN_STRINGS[0]
    assert [f"{x:016x}" for x in c[:3]] == GOLDEN_STRINGS[1]
    h, c = id_hashes(pa.array([0, -1, 2**62]))
    assert [f"{x:016x}" for x in h] == GOLDEN_INTS and c.tolist() == [1, 1, 1]


GOLDEN_STRINGS = (
    ["93a9bdb51e5d5285", "e2aeb7585d7030be", "d4db047c56bd440d"],
    ["b11e4b8da6a2b579", "56e6317157e94435", "84518789ef0f5379"],
)
GOLDEN_INTS = ["e220a8397b1dcdaf", "e4d971771b652c20", "00aa50ea8e0fa9eb"]


@settings(max_examples=examples(100), deadline=None)
@given(values=st.lists(st.one_of(st.text(max_size=40), st.binary(max_size=40)), max_size=40))
def test_a_hash_depends_on_the_value_alone(values: list[str | bytes]) -> None:
    texts = [v if isinstance(v, str) else v.hex() for v in values]
    arr = pa.array(texts, pa.string())
    h, c = id_hashes(arr)
    for i, text in enumerate(texts):
        one_h, one_c = id_hashes(pa.array([text]))
        assert (one_h[0], one_c[0]) == (h[i], c[i])
        sliced_h, _ = id_hashes(pa.chunked_array([arr.slice(i, 1)]))
        assert sliced_h[0] == h[i]
    pairs = {(int(a), int(b)) for a, b in zip(h, c, strict=True)}
    assert len(pairs) == len(set(texts))


def test_an_idle_stream_lets_go_of_its_ids() -> None:
    op = Dedup(DedupSpec("id", "ts", 1_000), Options(idle_timeout_ms=5_000), SCHEMA)
    ids = [f"e{i}" for i in range(10_000)]
    op.process(pa.table({"id": ids, "ts": [0] * 10_000, "rid": range(10_000)}, schema=SCHEMA), 0)
    assert op.status()["state_rows"] == 10_000
    op.on_time(now_ms=10_000)  # idle: the watermark follows processing time past the horizon
    assert op.status()["state_rows"] == 0 and op.status()["state_bytes"] <= 24 * 1024
