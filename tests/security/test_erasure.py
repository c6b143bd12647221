"""Erasing a data subject, and personal-data fields, through a real server."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from serverproc import Server

SIGNUPS = {
    "name": "signups",
    "fields": [
        {"name": "user", "type": "string", "required": True},
        {"name": "ts", "type": "timestamp", "required": True},
        {"name": "email", "type": "string", "pii": "hash"},
        {"name": "card", "type": "string", "pii": "mask"},
        {"name": "plan", "type": "string", "enum": ["free", "pro"]},
        {"name": "amount", "type": "float", "min": 0},
    ],
    "event_time": "ts",
    "subject": "user",
}


def row(user: str, sec: int, **kw: Any) -> dict[str, Any]:
    return {"user": user, "ts": f"2026-12-01T10:00:{sec:02d}Z", "email": f"{user}@example.com",
            "card": "4111111111111111", "plan": "pro", "amount": 10.0, **kw}  # fmt: skip


def wait_for(check: Callable[[], Any], what: str, timeout_s: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        out = check()
        if out:
            return out
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def users(c: httpx.Client, table: str) -> list[str]:
    r = c.post("/v1/query", json={"sql": f"SELECT * FROM {table}"})
    assert r.status_code == 200, r.text
    cols = r.json()["columns"]
    names = [col["name"] if isinstance(col, dict) else col for col in cols]
    at = names.index("user")
    return sorted(str(v[at]) for v in r.json()["rows"])


def quarantined(c: httpx.Client) -> list[str]:
    rows = c.get("/v1/streams/signups/quarantine").json()["rows"]
    return [r["raw"] for r in rows]


def test_erasure_removes_a_subject_everywhere_and_stays_erased(tmp_path: Path) -> None:
    server = Server(tmp_path / "data").start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json=SIGNUPS).status_code == 201
            for sql in (
                "CREATE PIPELINE copy AS SELECT user, ts, plan, amount FROM signups",
                "CREATE PIPELINE per_plan AS SELECT plan, window_start, count(*) AS n "
                "FROM TUMBLE(signups, ts, INTERVAL '1 minute') GROUP BY plan, window_start, window_end "
                "WITH (emit = 'changes')",
            ):
                assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            good = [row("u1", 1), row("u2", 2), row("u1", 3), row("u3", 4)]
            bad = [row("u1", 5, amount=-1), row("u2", 6, plan="gold")]
            r = c.post("/v1/streams/signups/events", json=good + bad)
            assert r.json()["accepted"] == 4 and r.json()["rejected"] == 2
            csv_bad = "user,ts,plan,amount\nu1,2026-12-01T10:00:07Z,pro,-5\n"
            c.post("/v1/streams/signups/events", content=csv_bad,
                   headers={"Content-Type": "text/csv"})  # fmt: skip
            wait_for(lambda: len(users(c, "copy")) == 4, "the copy pipeline")
            assert len(quarantined(c)) == 3

            stored = c.get("/v1/streams/signups/events?limit=10").json()["rows"]
            assert {s["card"] for s in stored} == {"************1111"}  # pii at ingest
            assert all(s["email"].startswith("sha256:") for s in stored)
            assert not any("example.com" in q or "4111111111111111" in q for q in quarantined(c))

            r = c.delete("/v1/streams/signups/subjects/u1")
            assert r.status_code == 200, r.text
            report = r.json()
            assert report["rows_deleted"]["signups"] == 2
            assert report["rows_deleted"]["copy"] == 2
            assert "per_plan" not in report["rows_deleted"]  # it does not carry the field
            assert report["quarantined_rows_deleted"] == 2  # the JSON one and the CSV one
            assert report["log"]["rewritten"] is True
            assert report["log"]["rows_blanked"] == 2
            assert report["log"]["quarantined_rows_blanked"] == 2
            assert users(c, "signups") == ["u2", "u3"] and users(c, "copy") == ["u2", "u3"]
            assert len(quarantined(c)) == 1 and "u2" in quarantined(c)[0]

            # the log's blanked rows: a pipeline reading it from the start skips them
            sql = "CREATE PIPELINE again AS SELECT user, amount FROM signups"
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            wait_for(lambda: users(c, "again") == ["u2", "u3"], "the new pipeline")
            # new data about the subject, after the erasure, is new data
            c.post("/v1/streams/signups/events", json=[row("u1", 30)])
            wait_for(lambda: users(c, "copy") == ["u1", "u2", "u3"], "the new u1 row")
        server.stop()
        server.start()
        with server.client() as c:
            sql = "CREATE PIPELINE after_restart AS SELECT user FROM signups"
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            wait_for(
                lambda: users(c, "after_restart") == ["u1", "u2", "u3"],
                "the pipeline after restart",
            )  # one u1: the row sent after the erasure
    finally:
        server.stop()


def test_erasure_needs_a_subject_field_and_a_value_of_its_type(server: Server) -> None:
    with server.client() as c:
        plain = {"name": "plain", "fields": [{"name": "k", "type": "string"}]}
        assert c.post("/v1/streams", json=plain).status_code == 201
        r = c.delete("/v1/streams/plain/subjects/x")
        assert r.status_code == 400 and r.json()["error"]["code"] == "no_subject_field"
        numbered = {
            "name": "numbered",
            "fields": [{"name": "uid", "type": "int"}],
            "subject": "uid",
        }
        assert c.post("/v1/streams", json=numbered).status_code == 201
        r = c.delete("/v1/streams/numbered/subjects/abc")
        assert r.status_code == 400 and r.json()["error"]["code"] == "bad_subject"
        assert c.delete("/v1/streams/numbered/subjects/42").status_code == 200
        assert c.delete("/v1/streams/nope/subjects/42").status_code == 404


def test_hashed_subjects_are_erased_by_their_clear_value(server: Server) -> None:
    spec = {"name": "logins", "fields": [{"name": "email", "type": "string", "pii": "hash"},
            {"name": "n", "type": "int"}], "subject": "email"}  # fmt: skip
    with server.client() as c:
        assert c.post("/v1/streams", json=spec).status_code == 201
        c.post("/v1/streams/logins/events", json=[{"email": "a@x.io", "n": 1},
               {"email": "b@x.io", "n": 2}])  # fmt: skip
        r = c.delete("/v1/streams/logins/subjects/a@x.io")
        assert r.json()["rows_deleted"]["logins"] == 1
        left = c.get("/v1/streams/logins/events").json()["rows"]
        assert [x["n"] for x in left] == [2]


def test_erasure_leaves_no_trace_of_the_subject_in_the_log_files(tmp_path: Path) -> None:
    """The segment files themselves no longer hold the subject's values, and after a
    restart the store rebuilt from the log and new pipelines see none of their rows."""
    who, other = "zq-erase-me-4242", "keep-me-0001"
    secret_note = "note-of-zq-only"
    spec = {"name": "visits", "fields": [{"name": "who", "type": "string", "required": True},
            {"name": "note", "type": "string"}, {"name": "n", "type": "int", "min": 0},
            {"name": "event_id", "type": "string"}], "subject": "who", "id": "event_id"}  # fmt: skip
    server = Server(tmp_path / "data").start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json=spec).status_code == 201
            sent = [
                {"who": who, "note": secret_note, "n": i, "event_id": f"e{i}"} for i in range(3)
            ]
            sent += [{"who": other, "note": "fine", "n": 9, "event_id": "e9"}]
            sent += [{"who": who, "note": secret_note, "n": -1, "event_id": "bad"}]
            r = c.post("/v1/streams/visits/events", json=sent)
            assert (r.json()["accepted"], r.json()["rejected"]) == (4, 1)
            report = c.delete(f"/v1/streams/visits/subjects/{who}").json()
            assert report["log"]["rows_blanked"] == 3
            assert report["log"]["quarantined_rows_blanked"] == 1
            # a retried event of the subject is still known: not stored a second time
            again = c.post("/v1/streams/visits/events", json=sent[:1]).json()
            assert (again["accepted"], again["duplicates"]) == (0, 1)
            stored = c.get("/v1/streams/visits/events").json()["rows"]
            assert [x["who"] for x in stored] == [other]
        server.stop()
        for segment in (tmp_path / "data" / "log").rglob("*.log"):
            data = segment.read_bytes()
            assert who.encode() not in data and secret_note.encode() not in data, segment
        # the store is rebuilt from the log: the blanked rows stay out
        for path in (tmp_path / "data" / "store").iterdir():
            path.unlink()
        server.start()
        with server.client() as c:
            rebuilt = lambda: c.get("/v1/streams/visits/events").json().get("rows", [])  # noqa: E731
            wait_for(lambda: [x["who"] for x in rebuilt()] == [other], "the rebuilt store")
            sql = "CREATE PIPELINE everyone AS SELECT who, n FROM visits"
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            r = lambda: c.post("/v1/query", json={"sql": "SELECT who, n FROM everyone"})  # noqa: E731
            wait_for(lambda: r().json().get("rows") == [[other, 9]], "the new pipeline")
    finally:
        server.stop()
