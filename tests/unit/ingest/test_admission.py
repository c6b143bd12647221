"""Admission answers before anything is written: pushback (503) and rate limits (429)."""

import pytest

from headwater.errors import Overloaded, RateLimited
from headwater.ingest.admission import Admission, TokenBucket
from headwater.ingest.streams import StreamState
from headwater.model.schema import schema_from_dict

SCHEMA = schema_from_dict({"name": "s", "fields": [{"name": "x", "type": "int"}]})


class Quota:
    def __init__(self, rows: int) -> None:
        self.left = rows

    def take_ingest(self, tenant: str, rows: int, nbytes: int, now_s: float) -> None:
        if rows > self.left:
            raise RateLimited(f"tenant {tenant} is out of rows", retry_after_s=2.0)
        self.left -= rows


def test_pushback_follows_the_store_lag_with_the_callers_pause() -> None:
    lag = [0]
    a = Admission(lambda st: lag[0], 100)
    st = StreamState("t", SCHEMA, [SCHEMA])
    a.pushback(st)
    lag[0] = 101
    with pytest.raises(Overloaded) as info:
        a.pushback(st, retry_after_s=0.5)
    assert info.value.retry_after_s == 0.5 and "101 rows behind" in info.value.message
    lag[0] = 100
    a.pushback(st)


def test_quotas_hold_for_everyone_and_the_key_bucket_only_for_keys() -> None:
    quota = Quota(rows=150)
    a = Admission(lambda st: 0, 1, TokenBucket(rate=10, burst=100), quota)
    a.take("t", "key-1", 100, 1000)  # the bucket is full: passes, now empty
    with pytest.raises(RateLimited) as info:
        a.take("t", "key-1", 20, 200)
    assert info.value.retry_after_s > 0 and "rows/s for this key" in info.value.message
    a.take("t", None, 10, 100)  # a source has no key: no bucket
    with pytest.raises(RateLimited) as info:
        a.take("t", None, 100, 100)  # but the tenant's quota holds
    assert info.value.retry_after_s == 2.0
