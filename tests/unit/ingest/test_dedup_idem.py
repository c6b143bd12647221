import asyncio

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.errors import Conflict
from headwater.ingest.admission import TokenBucket
from headwater.ingest.dedup import IdIndex, hash_ids
from headwater.ingest.idempotency import IdempotencyKeys, IdemRecord


@given(st.lists(st.text(max_size=12), max_size=200), st.lists(st.text(max_size=12), max_size=200))
def test_id_index_is_a_set_of_ids(first: list[str], second: list[str]) -> None:
    idx = IdIndex()
    h1 = hash_ids(pa.array(first, pa.string()))
    keep = idx.first_unseen(h1)
    assert keep.sum() == len(set(first))
    idx.add(h1[keep])
    h2 = hash_ids(pa.array(second, pa.string()))
    seen = idx.seen(h2)
    assert [bool(x) for x in seen] == [s in set(first) for s in second]


def test_hash_is_stable_across_slices_chunks_and_types() -> None:
    arr = pa.array([f"id-{i}" for i in range(100)])
    whole = hash_ids(arr)
    assert np.array_equal(hash_ids(arr.slice(10, 20)), whole[10:30])
    assert np.array_equal(hash_ids(pa.chunked_array([arr[:50], arr[50:]])), whole)
    ints = hash_ids(pa.array([1, 2, None]))
    assert ints[2] == 0 and ints[0] != ints[1] != 0
    assert len(set(hash_ids(pa.array([f"x{i}" for i in range(200_000)])).tolist())) == 200_000


def test_id_index_compaction_and_discard() -> None:
    idx = IdIndex()
    for k in range(5):
        idx.add(hash_ids(pa.array([f"{k}-{i}" for i in range(30_000)])))
    assert len(idx) == 150_000
    gone = hash_ids(pa.array(["0-1", "4-2"]))
    idx.discard(gone)
    assert not idx.seen(gone).any()
    assert idx.seen(hash_ids(pa.array(["0-2"]))).all()


async def test_idempotency_keys_replay_conflict_and_expiry() -> None:
    keys = IdempotencyKeys(ttl_ms=1000)
    assert await keys.begin("t", "s", "k", "d1", now_ms=0) is None
    waiter = asyncio.ensure_future(keys.begin("t", "s", "k", "d1", now_ms=1))
    await asyncio.sleep(0)
    with pytest.raises(Conflict):
        await keys.begin("t", "s", "k", "other", now_ms=1)
    keys.finish("t", "s", IdemRecord("k", "d1", b"answer", 0), "k")
    assert await waiter == b"answer"
    assert await keys.begin("t", "s", "k", "d1", now_ms=10) == b"answer"
    assert keys.expire(now_ms=5000) == 1
    assert await keys.begin("t", "s", "k", "d1", now_ms=5000) is None


def test_token_bucket() -> None:
    b = TokenBucket(rate=100, burst=100)
    assert b.take("k", 100, now_s=0) == 0
    assert b.take("k", 50, now_s=0) == pytest.approx(0.5)
    assert b.take("k", 50, now_s=0.5) == 0
    assert b.take("other", 10, now_s=0.5) == 0


def test_token_bucket_lets_a_request_larger_than_the_burst_through_when_full() -> None:
    b = TokenBucket(rate=100, burst=100)
    assert b.take("k", 500, now_s=0) == 0
    assert b.take("k", 1, now_s=1) > 0  # in debt: 500 - 100 - 100 refilled
    assert b.take("k", 1, now_s=5) == 0


def test_inflight_budget_refuses_beyond_the_limit_and_releases() -> None:
    from headwater.errors import Overloaded
    from headwater.ingest.service import InflightBudget

    budget = InflightBudget(100)
    with budget.hold(60):
        with pytest.raises(Overloaded) as exc, budget.hold(50):
            pass
        assert exc.value.retry_after_s > 0
        with budget.hold(40):
            assert budget.bytes == 100
    assert budget.bytes == 0
    with budget.hold(
        500
    ):  # one request alone may use more than the budget (the body cap bounds it)
        pass
