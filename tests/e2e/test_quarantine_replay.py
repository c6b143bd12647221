"""Quarantine replay through a real server: each quarantined row is replayed at most once."""

from __future__ import annotations

import itertools
from typing import Any

import httpx

from serverproc import READINGS, Server

_seq = itertools.count()
FIXED = [{**f, "max": 1000} if f["name"] == "temperature" else f for f in READINGS["fields"]]  # type: ignore[attr-defined]


def make_stream(c: httpx.Client) -> str:
    name = f"replay_{next(_seq)}"
    r = c.post("/v1/streams", json={**READINGS, "name": name})
    assert r.status_code == 201, r.text
    return name


def ev(i: int, **over: object) -> dict[str, object]:
    return {"device_id": f"d{i % 3}", "ts": f"2026-11-21T10:00:{i % 60:02d}Z",
            "temperature": 500.0 + i, "status": "ok", "event_id": f"e{i}", **over}  # fmt: skip


def quarantine(c: httpx.Client, name: str, **params: Any) -> list[dict[str, Any]]:
    r = c.get(f"/v1/streams/{name}/quarantine", params={"limit": 1000, **params})
    assert r.status_code == 200, r.text
    rows: list[dict[str, Any]] = r.json()["rows"]
    return rows


def stored(c: httpx.Client, name: str) -> int:
    n: int = c.get(f"/v1/streams/{name}/events/count").json()["count"]
    return n


def replay(c: httpx.Client, name: str, body: dict[str, Any]) -> dict[str, Any]:
    r = c.post(f"/v1/streams/{name}/quarantine/replay", json=body)
    assert r.status_code == 200, r.text
    out: dict[str, Any] = r.json()
    return out


def fix_schema(c: httpx.Client, name: str) -> None:
    r = c.put(f"/v1/streams/{name}", json={**READINGS, "name": name, "fields": FIXED})
    assert r.status_code == 200, r.text


def test_a_failed_replay_updates_rows_in_place_then_a_fix_replays_them_once(
    server: Server,
) -> None:
    with server.client() as c:
        name = make_stream(c)
        assert (
            c.post(f"/v1/streams/{name}/events", json=[ev(i) for i in range(24)]).json()["rejected"]
            == 24
        )
        for attempt in (1, 2):  # refused again: the same 24 rows, with their attempt count
            out = replay(c, name, {"code": "above_max"})
            assert (out["replayed"], out["rejected"], out["accepted"]) == (24, 24, 0)
            rows = quarantine(c, name)
            assert len(rows) == 24
            assert {(r["state"], r["replay_attempts"], r["code"]) for r in rows} == {
                ("quarantined", attempt, "above_max")
            }
            assert all(r["last_attempt_ms"] for r in rows)
            assert c.get(f"/v1/streams/{name}").json()["quarantined"] == 24

        fix_schema(c, name)
        out = replay(c, name, {"code": "above_max"})
        assert (out["replayed"], out["accepted"], out["rejected"]) == (24, 24, 0)
        assert replay(c, name, {"code": "above_max"})["replayed"] == 0  # nothing left to take
        again = replay(c, name, {"offsets": [r["_offset"] for r in rows]})
        assert (again["replayed"], len(again["skipped"])) == (0, 24)
        assert stored(c, name) == 24
        done = quarantine(c, name, state="replayed")
        assert len(done) == 24 and quarantine(c, name, state="quarantined") == []
        assert {r["replay_attempts"] for r in done} == {3}
        offsets = {s["offset"]: s["stored_offset"] for g in out["results"] for s in g["stored"]}
        assert {r["_offset"]: r["replayed_offset"] for r in done} == offsets
        events = c.get(f"/v1/streams/{name}/events", params={"limit": 100}).json()["rows"]
        assert sorted(e["_offset"] for e in events) == sorted(offsets.values())
        bad = c.get(f"/v1/streams/{name}/quarantine", params={"state": "gone"})
        assert bad.status_code == 400 and bad.json()["error"]["code"] == "bad_state"


def test_rows_without_event_ids_are_stored_once(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        body = [ev(i, event_id=None) for i in range(3)] + [
            ev(9, status="boom", temperature=20.0, event_id=None)
        ]
        assert c.post(f"/v1/streams/{name}/events", json=body).json()["rejected"] == 4
        fix_schema(c, name)
        first = replay(c, name, {"code": "above_max"})
        assert (first["replayed"], first["accepted"]) == (3, 3)
        # by code again, by offsets, and every offset at once: nothing more is stored
        assert replay(c, name, {"code": "above_max"})["accepted"] == 0
        everything = [r["_offset"] for r in quarantine(c, name)]
        out = replay(c, name, {"offsets": everything})
        assert (out["replayed"], out["accepted"], out["rejected"]) == (1, 0, 1)  # the enum row
        assert stored(c, name) == 3
        assert sorted(r["state"] for r in quarantine(c, name)) == ["quarantined"] + ["replayed"] * 3


def test_a_duplicate_event_id_is_not_stored_again(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(1)])  # refused: above max
        fix_schema(c, name)
        c.post(f"/v1/streams/{name}/events", json=[ev(1)])  # the same event, now stored
        out = replay(c, name, {"code": "above_max"})
        assert (out["replayed"], out["accepted"], out["duplicates"]) == (1, 0, 1)
        assert [r["state"] for r in quarantine(c, name)] == ["duplicate"]
        assert stored(c, name) == 1


def test_a_kill_after_the_replay_answer_neither_loses_nor_repeats(fresh_server: Server) -> None:
    with fresh_server.client() as c:
        name = make_stream(c)
        body = [ev(i) for i in range(5)] + [ev(i, event_id=None) for i in range(5, 10)]
        c.post(f"/v1/streams/{name}/events", json=body)
        fix_schema(c, name)
        assert replay(c, name, {"code": "above_max"})["accepted"] == 10
    fresh_server.kill()  # before or after the store applied it: either way it is in the log
    fresh_server.start()
    with fresh_server.client() as c:
        assert len(quarantine(c, name, state="replayed")) == 10
        assert replay(c, name, {"code": "above_max"})["replayed"] == 0
        assert stored(c, name) == 10


def test_bad_replay_requests_are_4xx_with_a_code(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        for body in ([], {}, {"offsets": []}, {"offsets": [-1]}, {"offsets": [1 << 70]},
                     {"offsets": ["3"]}, {"code": 5}, {"offsets": list(range(10_001))}):  # fmt: skip
            r = c.post(f"/v1/streams/{name}/quarantine/replay", json=body)
            assert r.status_code == 400 and r.json()["error"]["code"] == "bad_replay", body
