"""Retention trims the log only below what the store and every pipeline have committed."""

from pathlib import Path

import orjson

from headwater.model.schema import schema_from_dict
from headwater.model.time import ManualClock
from headwater.runtime import build_runtime
from headwater.settings import Settings
from headwater.store.ports import RowQuery


async def test_housekeeping_trims_materialized_aged_segments(tmp_path: Path) -> None:
    clock = ManualClock(1_000_000_000)
    settings = Settings(data_dir=tmp_path, bootstrap_key="k", log_segment_bytes=4096, log_retention="1 minute",
                        idempotency_ttl="1 minute")  # fmt: skip
    p = build_runtime(settings, clock)
    await p.start()
    try:
        st = p.streams.create(
            "default",
            schema_from_dict({"name": "s", "fields": [{"name": "x", "type": "int"}]}),
            0,
            set(),
        )
        for i in range(50):
            body = b"\n".join(orjson.dumps({"x": i * 100 + k}) for k in range(100))
            await p.ingest.ingest(st, body, "application/x-ndjson", None, None, "k", "r")
        assert await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic))
        p.housekeeping.run()
        assert p.log.start_offset(st.topic) == 0  # nothing is a minute old yet
        clock.advance(61_000)
        p.housekeeping.run()
        clock.advance(61_000)
        p.housekeeping.run()
        assert p.log.start_offset(st.topic) > 0
        assert p.log.start_offset(st.topic) <= p.materializer.committed(st.topic)
        rows = (
            p.store.sql("default", "SELECT count(*) AS n FROM s", max_rows=1, timeout_s=5)
            .column("n")[0]
            .as_py()
        )
        assert rows == 5000
    finally:
        await p.stop()


def test_json_answers_keep_every_digit_of_huge_sums() -> None:
    from decimal import Decimal

    import orjson

    from headwater.api.render import json_response

    body = orjson.loads(
        json_response({"a": Decimal(2**64 + 1), "b": Decimal(5), "c": Decimal("1.5")}).body
    )
    assert body == {"a": str(2**64 + 1), "b": 5, "c": 1.5}


async def test_stream_retention_deletes_old_stored_and_quarantined_rows(tmp_path: Path) -> None:
    from headwater.observability import metrics as m

    clock = ManualClock(1_000_000_000)
    p = build_runtime(Settings(data_dir=tmp_path, bootstrap_key="k"), clock)
    await p.start()
    try:
        schema = {"name": "r", "retention": "1 hour",
                  "fields": [{"name": "x", "type": "int", "min": 0}]}  # fmt: skip
        st = p.streams.create("default", schema_from_dict(schema), 0, set())
        body = b'{"x": 1}\n{"x": -1}\n'
        await p.ingest.ingest(st, body, "application/x-ndjson", None, None, "k", "old")
        clock.advance(3_000_000)  # 50 minutes later
        await p.ingest.ingest(st, body, "application/x-ndjson", None, None, "k", "new")
        assert await p.materializer.caught_up(st.topic, p.log.end_offset(st.topic))
        assert await p.materializer.caught_up(
            st.quarantine_topic, p.log.end_offset(st.quarantine_topic)
        )
        before = m.STORE_ROWS_EXPIRED.labels("default", "r")._value.get()
        p.housekeeping.run()

        def count(table: str) -> int:
            return p.store.count_rows(RowQuery("default", table))

        assert (count("r"), count("quarantine__r")) == (2, 2)  # nothing is an hour old yet
        clock.advance(1_000_000)  # the first request is now 66 minutes old
        p.housekeeping.run()
        assert (count("r"), count("quarantine__r")) == (1, 1)
        assert m.STORE_ROWS_EXPIRED.labels("default", "r")._value.get() - before == 2
    finally:
        await p.stop()
