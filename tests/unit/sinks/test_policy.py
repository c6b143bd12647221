"""Pure delivery decisions and request cutting."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given
from hypothesis import strategies as st

from headwater.log.ports import LogEntry
from headwater.sinks.policy import Aimd, Breaker, classify, retry_after_s
from headwater.sinks.rows import encode_rows, requests_of


@given(st.integers(100, 599))
def test_classify_follows_the_http_rules(status: int) -> None:
    verdict = classify(status)
    if 200 <= status < 300:
        assert verdict == "ok"
    elif status in (408, 425, 429) or status >= 500:
        assert verdict == "retry"
    else:
        assert verdict == "dead"
    assert classify(409, success_on_409=True) == "ok"


def test_retry_after_reads_both_forms() -> None:
    assert retry_after_s("120", 0.0) == 120.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 - 30) == 30.0
    assert retry_after_s("Wed, 21 Oct 2015 07:28:00 GMT", 1445412480.0 + 30) == 0.0
    assert retry_after_s("", 0.0) is None and retry_after_s("-1", 0.0) is None


@given(st.integers(1, 64), st.lists(st.booleans(), max_size=300))
def test_aimd_stays_within_bounds_and_halves_on_push_back(
    maximum: int, successes: list[bool]
) -> None:
    a = Aimd(maximum)
    for ok in successes:
        before = a.limit
        if ok:
            a.on_success()
            assert before <= a.limit <= min(maximum, before + 1)
        else:
            a.on_push_back()
            assert a.limit == max(1, before // 2)
        assert 1 <= a.limit <= maximum


def test_breaker_opens_probes_once_and_closes() -> None:
    b = Breaker(failures=3, open_s=10.0)
    for t in range(3):
        assert b.admit(float(t))
        b.on_failure(float(t))
    assert b.state(3.0) == "open" and not b.admit(3.0)
    assert b.state(12.5) == "half_open" and b.admit(12.5) and not b.admit(12.6)
    b.on_failure(13.0)  # the probe failed: open again
    assert b.state(14.0) == "open"
    assert b.admit(23.5)
    b.on_success()
    assert b.state(23.6) == "closed" and b.admit(23.6) and b.admit(23.6)


def test_a_probe_without_verdict_does_not_block_the_breaker_forever() -> None:
    b = Breaker(failures=1, open_s=2.0)
    b.on_failure(0.0)
    assert b.admit(2.0)  # the probe goes, then is cancelled: no verdict
    assert not b.admit(3.0)
    assert b.admit(4.0)  # another probe after open_s


def entry(offset: int, n: int) -> LogEntry:
    batch = pa.record_batch({"v": list(range(offset, offset + n)), "_id_hash": [0] * n})
    return LogEntry("t.s", offset, batch)


@given(
    st.integers(0, 50), st.lists(st.integers(1, 30), min_size=1, max_size=5),
    st.integers(1, 12), st.integers(20, 200),
)  # fmt: skip
def test_requests_keep_every_row_once_in_order(
    start: int, sizes: list[int], batch_rows: int, batch_bytes: int
) -> None:
    entries, offset = [], start
    for n in sizes:
        entries.append(entry(offset, n))
        offset += n
    rows = encode_rows("s", entries, by_offset=True)
    assert [r.json for r in rows][:1] == [f'{{"v":{start}}}'.encode()]  # no "_" columns
    reqs = requests_of("s", rows, batch_rows, batch_bytes, aligned=True)
    assert [r.offset for q in reqs for r in q.rows] == list(range(start, offset))
    for q in reqs:
        assert len(q.rows) <= batch_rows
        assert q.rows[-1].offset // batch_rows == q.rows[0].offset // batch_rows or batch_rows == 1
    again = requests_of(
        "s", encode_rows("s", entries, by_offset=True), batch_rows, batch_bytes, True
    )
    assert [q.key for q in again] == [q.key for q in reqs]  # stable keys


def test_result_rows_are_keyed_by_content() -> None:
    a = encode_rows("s", [entry(0, 3)], by_offset=False)
    b = encode_rows("s", [LogEntry("t.s", 7, entry(0, 3).batch)], by_offset=False)
    assert [r.key for r in a] == [r.key for r in b]  # same rows at new offsets: same keys
    assert len({r.key for r in a}) == 3


def test_rows_left_out_keep_the_offsets_of_the_others() -> None:
    entries = [entry(10, 3), entry(13, 2)]
    keep = pa.array([True, False, True, False, True])
    rows = encode_rows("s", entries, by_offset=True, keep=keep)
    assert [(r.offset, r.key, r.json) for r in rows] == [
        (10, "s-10", b'{"v":10}'), (12, "s-12", b'{"v":12}'), (14, "s-14", b'{"v":14}'),
    ]  # fmt: skip
