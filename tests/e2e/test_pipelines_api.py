"""Pipelines through HTTP against a real server: windows, late rows, lifecycle, SSE, enrichment."""

from __future__ import annotations

import itertools
import threading
import time

import httpx
import orjson

from serverproc import ADMIN_KEY, READINGS, Server

_seq = itertools.count()


def stream(c: httpx.Client) -> str:
    name = f"r{next(_seq)}"
    assert c.post("/v1/streams", json={**READINGS, "name": name}).status_code == 201
    return name


def ts(sec: float) -> str:
    m, s = divmod(sec, 60)
    return f"2026-11-21T10:{int(m):02d}:{s:06.3f}Z"


def wait_for(fn, timeout: float = 15.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.1)


def test_tumbling_final_matches_batch_query_and_late_rows(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        sql = (f"CREATE PIPELINE {s}_min AS SELECT device_id, window_start, window_end, count(*) AS n, "
               f"avg(temperature) AS avg_t, max(temperature) AS max_t FROM TUMBLE({s}, ts, INTERVAL '1 minute') "
               f"GROUP BY device_id, window_start, window_end WITH (watermark_delay = '2 seconds')")  # fmt: skip
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code == 201, r.text
        events = [{"device_id": f"d{i % 4}", "ts": ts(i * 0.7), "temperature": float(i % 17), "event_id": f"e{i}"}
                  for i in range(300)]  # fmt: skip  # 0 .. 209 s: windows 10:00, 10:01, 10:02, 10:03
        body = b"\n".join(orjson.dumps(e) for e in events)
        assert (
            c.post(
                f"/v1/streams/{s}/events",
                content=body,
                headers={"Content-Type": "application/x-ndjson"},
            ).json()["accepted"]
            == 300
        )
        # a late row for the first window, after the watermark passed it
        late = c.post(
            f"/v1/streams/{s}/events",
            json={"device_id": "d0", "ts": ts(1), "temperature": 99.0, "event_id": "late1"},
        )
        assert late.json()["accepted"] == 1
        expected = c.post("/v1/query", json={"sql": (
            f"SELECT device_id, window_start, count(*), avg(temperature), max(temperature) FROM "
            f"(SELECT *, time_bucket(INTERVAL '1 minute', ts) AS window_start FROM {s} WHERE event_id <> 'late1') "
            f"WHERE window_start < TIMESTAMPTZ '2026-11-21 10:03:00+00' GROUP BY 1, 2 ORDER BY 1, 2")}).json()["rows"]  # fmt: skip
        assert len(expected) == 12

        def results() -> list[list[object]]:
            rows = c.get(f"/v1/tables/{s}_min/rows", params={"limit": 1000}).json().get("rows", [])
            return [
                [r["device_id"], r["window_start"], r["n"], r["avg_t"], r["max_t"]] for r in rows
            ]

        got = wait_for(lambda: (lambda r: r if len(r) >= 12 else None)(results()))
        got = sorted(got, key=lambda r: (r[0], r[1]))
        assert [g[:3] for g in got] == [e[:3] for e in expected]
        for g, e in zip(got, expected, strict=True):
            assert abs(g[3] - e[3]) < 1e-9 and g[4] == e[4]
        late_rows = wait_for(lambda: c.get(f"/v1/tables/{s}_min_late/rows").json().get("rows"))
        assert [r["event_id"] for r in late_rows] == ["late1"]
        st = c.get(f"/v1/pipelines/{s}_min").json()
        assert st["status"] == "running" and st["metrics"]["late_rows"] == 1
        assert st["watermark"].startswith("2026-11-21T10:03:27.3")
        assert st["metrics"]["rows_in"] == 301


def test_unsupported_sql_names_construct_and_position(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        r = c.post(
            "/v1/pipelines",
            json={"sql": f"CREATE PIPELINE p{s} AS SELECT device_id FROM {s} ORDER BY ts"},
        )
        assert r.status_code == 400
        err = r.json()["error"]
        assert (
            err["code"] == "unsupported_sql"
            and "ORDER BY" in err["message"]
            and "line 1, column 49" in err["message"]
        )
        r = c.post("/v1/pipelines", json={"sql": "CREATE PIPELINE q AS SELECT * FROM nowhere"})
        assert r.status_code == 400


def test_lifecycle_pause_resume_drop(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_f"
        sql = f"CREATE PIPELINE {name} AS SELECT device_id, temperature * 2 AS t2 FROM {s} WHERE temperature > 10"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        c.post(
            f"/v1/streams/{s}/events",
            json=[
                {"device_id": "a", "ts": ts(1), "temperature": t, "event_id": f"x{t}"}
                for t in (5, 15, 25)
            ],
        )
        rows = wait_for(
            lambda: (lambda r: r if len(r) == 2 else None)(
                c.get(f"/v1/tables/{name}/rows").json()["rows"]
            )
        )
        assert sorted(r["t2"] for r in rows) == [30.0, 50.0]
        assert c.post(f"/v1/pipelines/{name}/pause").json()["status"] == "paused"
        c.post(
            f"/v1/streams/{s}/events",
            json={"device_id": "a", "ts": ts(2), "temperature": 35, "event_id": "y"},
        )
        time.sleep(0.5)
        assert len(c.get(f"/v1/tables/{name}/rows").json()["rows"]) == 2
        assert c.post(f"/v1/pipelines/{name}/resume").json()["status"] == "running"
        assert wait_for(lambda: len(c.get(f"/v1/tables/{name}/rows").json()["rows"]) == 3)
        assert name in [p["name"] for p in c.get("/v1/pipelines").json()["pipelines"]]
        assert c.delete(f"/v1/pipelines/{name}", params={"drop_tables": "true"}).status_code == 200
        assert c.get(f"/v1/pipelines/{name}").status_code == 404
        assert c.get(f"/v1/tables/{name}/rows").status_code == 404


def test_sse_subscription_pushes_changes(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_cnt"
        sql = f"CREATE PIPELINE {name} AS SELECT device_id, count(*) AS n FROM {s} GROUP BY device_id WITH (emit = 'changes')"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        got: list[dict[str, object]] = []
        ready = threading.Event()

        def listen() -> None:
            with httpx.stream(
                "GET",
                f"{server.url}/v1/tables/{name}/subscribe",
                params={"key": ADMIN_KEY},
                timeout=20,
            ) as r:
                for line in r.iter_lines():
                    ready.set()
                    if line.startswith("data: "):
                        got.extend(orjson.loads(line[6:])["rows"])
                        if any(x["n"] == 3 for x in got):
                            return

        t = threading.Thread(target=listen, daemon=True)
        t.start()
        assert ready.wait(10)
        for i in range(3):
            c.post(
                f"/v1/streams/{s}/events",
                json={"device_id": "z", "ts": ts(i), "temperature": 1, "event_id": f"s{i}"},
            )
        t.join(15)
        assert any(x["device_id"] == "z" and x["n"] == 3 for x in got), got


def test_enrichment_join_sees_reference_updates(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        ref = f"{s}_devices"
        r = c.post("/v1/tables", json={"name": ref, "fields": [{"name": "device_id", "type": "string", "required": True},
                                                               {"name": "site", "type": "string"}], "key": ["device_id"]})  # fmt: skip
        assert r.status_code == 201, r.text
        assert (
            c.post(f"/v1/tables/{ref}/rows", json=[{"device_id": "a", "site": "north"}]).json()[
                "accepted"
            ]
            == 1
        )
        name = f"{s}_enriched"
        sql = (f"CREATE PIPELINE {name} AS SELECT r.device_id, d.site, r.temperature FROM {s} r "
               f"LEFT JOIN {ref} d ON r.device_id = d.device_id")  # fmt: skip
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201, c.post(
            "/v1/pipelines", json={"sql": sql}
        ).text
        c.post(
            f"/v1/streams/{s}/events",
            json={"device_id": "a", "ts": ts(1), "temperature": 1, "event_id": "j1"},
        )
        assert wait_for(lambda: c.get(f"/v1/tables/{name}/rows").json()["rows"])
        c.post(f"/v1/tables/{ref}/rows", json=[{"device_id": "a", "site": "south"}])
        c.post(
            f"/v1/streams/{s}/events",
            json={"device_id": "a", "ts": ts(2), "temperature": 2, "event_id": "j2"},
        )
        rows = wait_for(
            lambda: (lambda r: r if len(r) == 2 else None)(
                c.get(f"/v1/tables/{name}/rows").json()["rows"]
            )
        )
        assert sorted((r["temperature"], r["site"]) for r in rows) == [
            (1.0, "north"),
            (2.0, "south"),
        ]


def test_idle_stream_closes_windows_and_status_says_why_waiting(server: Server) -> None:
    from datetime import UTC, datetime

    with server.client() as c:
        s = stream(c)
        name = f"{s}_idle"
        sql = (f"CREATE PIPELINE {name} AS SELECT device_id, window_start, count(*) AS n "
               f"FROM TUMBLE({s}, ts, INTERVAL '2 seconds') GROUP BY device_id, window_start, window_end "
               f"WITH (emit = 'final', idle_timeout = '1 second')")  # fmt: skip
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        now = datetime.now(UTC).isoformat()
        c.post(
            f"/v1/streams/{s}/events",
            json=[
                {"device_id": "i", "ts": now, "temperature": 1, "event_id": f"i{k}"}
                for k in range(3)
            ],
        )
        st = wait_for(
            lambda: (lambda j: j if j.get("waiting") else None)(
                c.get(f"/v1/pipelines/{name}").json()
            ),
            5,
        )
        assert "closes when the watermark reaches" in st["waiting"]
        rows = wait_for(lambda: c.get(f"/v1/tables/{name}/rows").json()["rows"], 10)
        assert rows and rows[0]["n"] == 3


def test_a_row_the_sql_fails_on_goes_to_the_error_table(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_cast"
        sql = f"CREATE PIPELINE {name} AS SELECT device_id, CAST(device_id AS INTEGER) AS num FROM {s}"
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        c.post(
            f"/v1/streams/{s}/events",
            json=[{"device_id": d, "ts": ts(1), "event_id": d} for d in ("1", "two", "3")],
        )
        rows = wait_for(
            lambda: (lambda r: r if len(r) == 2 else None)(
                c.get(f"/v1/tables/{name}/rows").json()["rows"]
            )
        )
        assert sorted(r["num"] for r in rows) == [1, 3]
        errors = wait_for(lambda: c.get(f"/v1/tables/{name}_errors/rows").json()["rows"])
        assert [e["device_id"] for e in errors] == ["two"] and "two" in errors[0]["_error"]
        st = c.get(f"/v1/pipelines/{name}").json()
        assert st["status"] == "running" and st["metrics"]["error_rows"] == 1


def test_replace_checks_the_new_sql_first_and_reset_state_starts_over(server: Server) -> None:
    with server.client() as c:
        s = stream(c)
        name = f"{s}_r"
        old = f"CREATE PIPELINE {name} AS SELECT device_id, temperature * 2 AS t2 FROM {s} WHERE temperature > 10"
        assert c.post("/v1/pipelines", json={"sql": old}).status_code == 201
        events = [
            {"device_id": "a", "ts": ts(1), "temperature": t, "event_id": f"x{t}"}
            for t in (5, 15, 25)
        ]
        assert c.post(f"/v1/streams/{s}/events", json=events).json()["accepted"] == 3
        assert wait_for(lambda: len(c.get(f"/v1/tables/{name}/rows").json()["rows"]) == 2)

        bad = f"CREATE PIPELINE {name} AS\nSELECT device_id, count(*) AS n\nFROM {s}\nGROUP BY device_id"
        r = c.put(f"/v1/pipelines/{name}", json={"sql": bad})
        assert r.status_code == 400 and r.json()["error"]["code"] == "unsupported_sql"
        other = c.put(f"/v1/pipelines/{name}", json={"sql": old.replace(name, f"{name}x", 1)})
        assert (
            other.status_code == 400 and other.json()["error"]["code"] == "pipeline_name_mismatch"
        )
        missing = c.put(f"/v1/pipelines/{name}_none", json={"sql": old})
        assert missing.status_code == 404
        assert c.get(f"/v1/pipelines/{name}").json()["sql"] == old  # untouched by the refusals

        new = f"CREATE PIPELINE {name} AS SELECT device_id, temperature + 1 AS t1 FROM {s} WHERE temperature > 20"
        r = c.put(f"/v1/pipelines/{name}", json={"sql": new + " WITH (reset_state = true)"})
        assert r.status_code == 200, r.text
        assert r.json()["sql"] == new and r.json()["status"] == "running"
        rows = wait_for(
            lambda: (lambda rs: rs if len(rs) == 1 else None)(
                c.get(f"/v1/tables/{name}/rows").json()["rows"]
            )
        )
        assert rows[0]["t1"] == 26.0 and "t2" not in rows[0]  # re-read from the start, new table
