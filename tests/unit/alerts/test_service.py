"""Alert rules evaluated over a real DuckDB store and SQLite catalog with a manual clock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.alerts.delivery import RetryPolicy
from headwater.alerts.mutes import Silence
from headwater.alerts.service import Alerts
from headwater.catalog.sqlite import Catalog
from headwater.model.time import ManualClock
from headwater.store.duckdb import DuckDBStore
from headwater.store.ports import TIMESTAMP, ResultWrite

T0 = 1_767_225_600_000
HOOK = [{"kind": "webhook", "url": "http://127.0.0.1:9/x", "secret": "whsec_AAAA"}]
RESULTS = pa.schema([("window_start", TIMESTAMP), ("device_id", pa.string()),
                     ("avg_temp", pa.float64())])  # fmt: skip
STREAM = pa.schema([("_offset", pa.int64()), ("device_id", pa.string()),
                    ("temperature", pa.float64())])  # fmt: skip


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[tuple[Catalog, DuckDBStore, ManualClock]]:
    catalog = Catalog(tmp_path / "catalog.sqlite")
    store = DuckDBStore(tmp_path / "store.duckdb", memory_limit="256MB", threads=1)
    store.ensure_table("default", "device_minute", RESULTS, key=["device_id"])
    store.ensure_table("default", "readings", STREAM)
    yield catalog, store, ManualClock(T0)
    store.close()
    catalog.close()


def upsert(store: DuckDBStore, device: str, avg: float, minute: int) -> None:
    rows = pa.table({"window_start": pa.array([T0 + minute * 60_000], TIMESTAMP),
                     "device_id": [device], "avg_temp": [avg]}, schema=RESULTS)  # fmt: skip
    store.commit("default", ResultWrite("p", {}, upserts={"device_minute": (rows, ["device_id"])}))


def append(store: DuckDBStore, start: int, rows: list[tuple[str, float]]) -> None:
    t = pa.table({"_offset": list(range(start, start + len(rows))),
                  "device_id": [d for d, _ in rows], "temperature": [v for _, v in rows]},
                 schema=STREAM)  # fmt: skip
    store.commit("default", ResultWrite("m", {}, appends={"readings": t}))


def sent(alerts: Alerts) -> list[tuple[str, str, str]]:
    return [(i.n.key, i.n.kind, i.n.summary) for i in alerts.evaluate()]


def make(catalog: Catalog, store: DuckDBStore, clock: ManualClock) -> Alerts:
    return Alerts(catalog, store, clock, RetryPolicy())


def test_result_table_for_repeat_restart_and_resolve(parts) -> None:  # type: ignore[no-untyped-def]
    catalog, store, clock = parts
    a = make(catalog, store, clock)
    rule = {"name": "hot", "from": "device_minute", "key": "device_id",
            "condition": "avg_temp > 40", "for": "30s", "repeat": "1 minute",
            "summary": "${device_id} averages $avg_temp", "channels": HOOK}  # fmt: skip
    a.create("default", rule, {"device_minute"})
    upsert(store, "d1", 45.0, 0)
    upsert(store, "d2", 12.0, 0)
    assert sent(a) == []
    assert {k: t.state.phase for k, t in a.get("default", "hot").keys.items()} == {"d1": "pending"}
    clock.advance(29_999)
    assert sent(a) == []
    clock.advance(1)
    assert sent(a) == [("d1", "firing", "d1 averages 45.0")]
    clock.advance(59_999)
    assert sent(a) == []
    clock.advance(1)
    assert sent(a) == [("d1", "firing", "d1 averages 45.0")]  # the repeat

    again = make(catalog, store, clock)  # a restart: the firing key is remembered
    clock.advance(1000)
    assert sent(again) == []
    assert again.get("default", "hot").keys["d1"].state.firing_ms == T0 + 30_000
    upsert(store, "d1", 39.0, 1)
    assert sent(again) == [("d1", "resolved", "d1 averages 39.0")]
    kinds = [e["kind"] for e in again.events("default", "hot", 10)]
    assert kinds == ["resolved", "repeated", "fired"]


def test_stream_rows_are_read_once_from_the_saved_cursor(parts) -> None:  # type: ignore[no-untyped-def]
    catalog, store, clock = parts
    a = make(catalog, store, clock)
    a.create("default", {"name": "s", "from": "readings", "key": "device_id",
                         "condition": "temperature > 40", "channels": HOOK}, {"readings"})  # fmt: skip
    # within one read, the key's latest row decides: d1 ends cool, d2 ends hot
    append(store, 0, [("d1", 50.0), ("d2", 10.0), ("d1", 20.0), ("d2", 41.0)])
    assert sent(a) == [("d2", "firing", "s: d2")]
    assert a.get("default", "s").cursor == 4
    restarted = make(catalog, store, clock)
    assert restarted.get("default", "s").cursor == 4
    append(store, 4, [("d1", 60.0)])
    assert sent(restarted) == [("d1", "firing", "s: d1")]


def test_snoozes_and_silences_mute_but_states_move(parts) -> None:  # type: ignore[no-untyped-def]
    catalog, store, clock = parts
    a = make(catalog, store, clock)
    a.create("default", {"name": "m", "from": "readings", "key": "device_id",
                         "condition": "temperature > 40", "labels": {"team": "ops"},
                         "channels": HOOK}, {"readings"})  # fmt: skip
    a.snooze("default", "m", T0 + 10_000, "d1")
    a.add_silence("default", Silence("silence_1", T0, T0 + 5_000, {"team": "db"}))
    append(store, 0, [("d1", 50.0), ("d2", 50.0)])
    assert sent(a) == [("d2", "firing", "m: d2")]  # d1 snoozed; the silence matches no label
    clock.advance(10_000)  # the snooze ended and d1 still fires: announced now
    assert sent(a) == [("d1", "firing", "m: d1")]
    a.add_silence("default", Silence("silence_2", T0, T0 + 60_000, {"team": "ops"}))
    append(store, 2, [("d3", 50.0)])
    assert sent(a) == []
    assert make(catalog, store, clock).silences("default")[1].id == "silence_2"


def test_a_rule_whose_table_goes_away_reports_it_and_recovers(parts) -> None:  # type: ignore[no-untyped-def]
    catalog, store, clock = parts
    a = make(catalog, store, clock)
    a.create("default", {"name": "g", "from": "readings", "key": "device_id",
                         "condition": "temperature > 40", "channels": HOOK}, {"readings"})  # fmt: skip
    store.drop_table("default", "readings")
    assert sent(a) == []
    assert "readings" in (a.get("default", "g").error or "")
    store.ensure_table("default", "readings", STREAM)
    append(store, 0, [("d1", 99.0)])
    assert sent(a) == [("d1", "firing", "g: d1")]
    assert a.get("default", "g").error is None


def test_history_is_trimmed_and_a_deleted_rule_leaves_nothing(parts) -> None:  # type: ignore[no-untyped-def]
    catalog, store, clock = parts
    a = Alerts(catalog, store, clock, RetryPolicy(), history_max_events=4)
    a.create("default", {"name": "h", "from": "readings", "key": "device_id",
                         "condition": "temperature > 40", "channels": HOOK}, {"readings"})  # fmt: skip
    for i in range(10):
        clock.advance(1000)
        append(store, i, [("d1", 50.0 if i % 2 == 0 else 10.0)])
        assert len(sent(a)) == 1
    history = a.events("default", "h", 100)
    assert 4 <= len(history) < 10 and history[0]["kind"] == "resolved"
    run = a.get("default", "h")
    a.drop("default", "h")
    catalog.save_alert_progress("default", "h", 99, {"d9": {"x": 1}}, [(T0, {"kind": "fired"})])
    catalog.add_alert_events("default", "h", [(T0, {"kind": "notified"})])
    assert (
        catalog.alert_states("default", "h") == {} and catalog.alert_events("default", "h", 9) == []
    )
    assert run.rule.name == "h" and catalog.alerts() == []
