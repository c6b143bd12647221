"""The client commands (send, sql, status, tail) as subprocesses against a real server."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import fastavro
import httpx
import orjson

from serverproc import ADMIN_KEY, READINGS, Server

_seq = itertools.count()

NO_ID = {**READINGS, "id": None}  # rows count once only through the Idempotency-Key


def hw(
    url: str,
    *args: str,
    key: str = ADMIN_KEY,
    stdin: str | None = None,
    key_var: str = "HEADWATER_KEY",
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
    env.update({"HEADWATER_URL": url, key_var: key})
    return subprocess.run(
        [sys.executable, "-m", "headwater.cli.main", *args],
        env=env, input=stdin, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def make_stream(c: httpx.Client, spec: dict[str, Any] = READINGS) -> str:
    name = f"cli_{next(_seq)}"
    r = c.post("/v1/streams", json={**spec, "name": name})
    assert r.status_code == 201, r.text
    return name


def ev(i: int, **over: object) -> dict[str, object]:
    return {"device_id": f"d{i % 3}", "ts": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
            "temperature": float(i % 100), "status": "ok", "event_id": f"e{i}", **over}  # fmt: skip


def count(c: httpx.Client, name: str) -> int:
    n: int = c.get(f"/v1/streams/{name}/events/count").json()["count"]
    return n


def summary(proc: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    out: dict[str, Any] = orjson.loads(proc.stdout)
    # 0: every row stored; 3: some rejected (and kept in quarantine)
    assert proc.returncode == (3 if out["rejected"] else 0), proc.stderr
    return out


def test_send_ndjson_counts_rows_and_a_rerun_stores_nothing_twice(
    server: Server, tmp_path: Path
) -> None:
    rows = [ev(i, temperature=999) if i in (3, 700, 1100) else ev(i) for i in range(1200)]
    f = tmp_path / "events.ndjson"
    f.write_bytes(b"\n".join(orjson.dumps(r) for r in rows) + b"\n")
    with server.client() as c:
        name = make_stream(c, NO_ID)
        first = summary(hw(server.url, "send", name, str(f), "--batch-size", "500", "--json"))
        assert (
            first["accepted"],
            first["rejected"],
            first["batches"],
            first["failed_batches"],
        ) == (1197, 3, 3, 0)
        assert [(e["batch"], e["row"], e["line"], e["code"]) for e in first["errors"]] == [
            (0, 3, 4, "above_max"), (1, 200, 701, "above_max"), (2, 100, 1101, "above_max")]  # fmt: skip
        assert count(c, name) == 1197
        again = summary(hw(server.url, "send", name, str(f), "--batch-size", "500", "--json"))
        assert again["replayed_batches"] == 3 and again["accepted"] == 1197
        assert count(c, name) == 1197


def test_an_interrupted_send_resumes_without_double_counting(
    server: Server, tmp_path: Path
) -> None:
    lines = [orjson.dumps(ev(i)).decode() for i in range(900)]
    f = tmp_path / "events.jsonl"
    f.write_text("\n".join(lines))
    with server.client() as c:
        name = make_stream(c, NO_ID)
        part = "\n".join(lines[:600])  # what got through before the interruption: two batches
        got = summary(
            hw(
                server.url,
                "send",
                name,
                "-",
                "--format",
                "ndjson",
                "--batch-size",
                "300",
                "--json",
                stdin=part,
            )
        )
        assert got["accepted"] == 600 and count(c, name) == 600
        rest = summary(hw(server.url, "send", name, str(f), "--batch-size", "300", "--json"))
        assert (rest["batches"], rest["replayed_batches"], rest["accepted"]) == (3, 2, 900)
        assert count(c, name) == 900
        # compressed this time: other bytes, the same rows, still stored once
        zipped = hw(server.url, "send", name, str(f), "--batch-size", "300", "--json", "--gzip")
        assert summary(zipped)["sent_before_batches"] == 3
        assert count(c, name) == 900


def test_send_csv_shows_row_errors(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "events.csv"
    body = [
        f"d{i % 3},2026-11-21T11:00:{i % 60:02d}Z,{i % 90},{'boom' if i == 7 else 'ok'},c{i}"
        for i in range(300)
    ]
    body[250] = '"multi\nline",2026-11-21T11:00:00Z,500,ok,c250'
    f.write_text("device_id,ts,temperature,status,event_id\n" + "\n".join(body) + "\n")
    with server.client() as c:
        name = make_stream(c)
        proc = hw(
            server.url, "send", name, str(f), "--batch-size", "100", "--gzip", "--show-errors", "5"
        )
        assert proc.returncode == 3, proc.stderr  # rows were rejected
        assert "not_in_enum" in proc.stdout and "above_max" in proc.stdout
        assert "2 rows were rejected" in proc.stderr and "quarantine" in proc.stderr
        assert count(c, name) == 298
        quarantined = c.get(f"/v1/streams/{name}/quarantine").json()["rows"]
        assert sorted(q["code"] for q in quarantined) == ["above_max", "not_in_enum"]


def test_send_avro_reencodes_batches(server: Server, tmp_path: Path) -> None:
    schema = {"type": "record", "name": "R", "fields": [
        {"name": "device_id", "type": "string"}, {"name": "ts", "type": "string"},
        {"name": "temperature", "type": ["null", "double"]}, {"name": "event_id", "type": "string"}]}  # fmt: skip
    f = tmp_path / "events.avro"
    with f.open("wb") as fh:
        records = [{"device_id": f"a{i}", "ts": "2026-11-21T12:00:00Z", "temperature": float(i), "event_id": f"a{i}"}
                   for i in range(250)]  # fmt: skip
        fastavro.writer(fh, schema, records, codec="deflate")
    with server.client() as c:
        name = make_stream(c)
        got = summary(hw(server.url, "send", name, str(f), "--batch-size", "100", "--json"))
        # temperature above the maximum of 150 is rejected
        assert (got["accepted"], got["rejected"], got["batches"]) == (151, 99, 3)
        assert (
            summary(hw(server.url, "send", name, str(f), "--batch-size", "100", "--json"))[
                "replayed_batches"
            ]
            == 3
        )
        stored = c.get(f"/v1/streams/{name}/events", params={"limit": 1000}).json()["rows"]
        assert sorted(r["temperature"] for r in stored) == [float(i) for i in range(151)]


def test_send_failures_exit_nonzero_with_advice(server: Server, tmp_path: Path) -> None:
    f = tmp_path / "one.ndjson"
    f.write_bytes(orjson.dumps(ev(1)))
    proc = hw(server.url, "send", "no_such_stream", str(f))
    assert proc.returncode == 1 and "unknown_stream" in proc.stderr
    with server.client() as c:
        name = make_stream(c)
    proc = hw(server.url, "send", name, str(f), key="wrong")
    assert proc.returncode == 1 and "HEADWATER_KEY" in proc.stderr
    f.write_text("not json at all\n" + orjson.dumps(ev(2)).decode())
    proc = hw(server.url, "send", name, str(f), "--show-errors", "1")
    assert proc.returncode == 3 and "1 rows were rejected" in proc.stderr


def test_send_json_array_sends_each_object_and_exits_nonzero_on_rejections(
    server: Server, tmp_path: Path
) -> None:
    f = tmp_path / "data.json"
    f.write_bytes(orjson.dumps([ev(i) for i in range(5)], option=orjson.OPT_INDENT_2))
    with server.client() as c:
        name = make_stream(c)
        proc = hw(server.url, "send", name, str(f))
        assert proc.returncode == 0, proc.stderr
        assert count(c, name) == 5
        one = tmp_path / "one.json"
        one.write_bytes(orjson.dumps(ev(10, temperature=999), option=orjson.OPT_INDENT_2))
        proc = hw(server.url, "send", name, str(one), "--json")
        assert proc.returncode == 3, proc.stderr
        assert orjson.loads(proc.stdout)["rejected"] == 1  # the summary is still printed
        mixed = tmp_path / "mixed.json"
        mixed.write_bytes(orjson.dumps([ev(20), ev(21, temperature=999), ev(22)]))
        got = summary(hw(server.url, "send", name, str(mixed), "--json"))
        assert (got["accepted"], got["rejected"]) == (2, 1)
        assert count(c, name) == 7
        scalar = tmp_path / "n.json"
        scalar.write_text("42")
        proc = hw(server.url, "send", name, str(scalar))
        assert proc.returncode == 1 and "an object or an array of objects" in proc.stderr


def test_sql_prints_rows_and_server_errors(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(1), ev(2, device_id="zeta")])
    proc = hw(server.url, "sql", f"SELECT device_id, temperature FROM {name} ORDER BY device_id")
    assert proc.returncode == 0, proc.stderr
    assert "device_id" in proc.stdout and "zeta" in proc.stdout and "2 rows" in proc.stderr
    sql = f"SELECT device_id FROM {name} ORDER BY 1"
    proc = hw(server.url, "sql", sql, "--format", "json", key_var="HEADWATER_BOOTSTRAP_KEY")
    assert orjson.loads(proc.stdout) == [{"device_id": "d1"}, {"device_id": "zeta"}]
    proc = hw(server.url, "sql", f"SELECT nope FROM {name}")
    assert proc.returncode == 1 and "query_error" in proc.stderr and "nope" in proc.stderr


def test_sql_prints_a_page_and_says_how_many_rows_it_left_out(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(i) for i in range(250)])
    query = f"SELECT * FROM {name} ORDER BY event_id"
    proc = hw(server.url, "sql", query, "--format", "ndjson")
    assert proc.returncode == 0, proc.stderr
    rows = [orjson.loads(line) for line in proc.stdout.splitlines()]
    assert len(rows) == 100 and "150 more rows not shown (250 in all)" in proc.stderr
    # internal columns only when named
    assert not any(k.startswith("_") for k in rows[0])
    proc = hw(server.url, "sql", query, "--format", "ndjson", "--limit", "0")
    assert len(proc.stdout.splitlines()) == 250 and "not shown" not in proc.stderr
    proc = hw(server.url, "sql", query, "--limit", "5")
    assert "5 rows" in proc.stderr and "245 more rows not shown" in proc.stderr
    assert "internal columns not shown: _offset" in proc.stderr
    named = f"SELECT *, _offset FROM {name} LIMIT 1"
    proc = hw(server.url, "sql", named, "--format", "json")
    assert "_offset" in orjson.loads(proc.stdout)[0] and "_id_hash" not in proc.stdout


def test_status_lists_streams_and_says_when_the_server_is_down(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(1), ev(2)])
    proc = hw(server.url, "status")
    assert proc.returncode == 0, proc.stderr
    assert "● ready" in proc.stdout
    row = next(line for line in proc.stdout.splitlines() if f" {name} " in line)
    assert row.split("│")[2:6] == [" 1       ", " 5      ", " 2              ", " 2             "]
    with server.client() as c:  # a source that cannot reach its broker shows why
        spec = {"name": f"src_{name}", "kind": "mqtt", "stream": name,
                "config": {"url": "mqtt://127.0.0.1:9", "topics": ["t"]}}  # fmt: skip
        assert c.post("/v1/sources", json=spec).status_code == 201
        deadline = time.monotonic() + 30
        while c.get(f"/v1/sources/src_{name}").json()["status"] != "backing_off":
            assert time.monotonic() < deadline
            time.sleep(0.05)
    proc = hw(server.url, "status")
    row = next(line for line in proc.stdout.splitlines() if f"src_{name}" in line)
    assert "mqtt" in row and "backing_off" in row, proc.stdout
    proc = hw("http://127.0.0.1:9", "status")
    assert (
        proc.returncode == 1 and "cannot reach" in proc.stderr and "headwater serve" in proc.stderr
    )


def test_tail_prints_rows_ingested_after_it_starts(server: Server) -> None:
    with server.client() as c:
        name = make_stream(c)
        c.post(f"/v1/streams/{name}/events", json=[ev(1, device_id="before")])
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        env.update(HEADWATER_URL=server.url, HEADWATER_KEY=ADMIN_KEY)
        proc = subprocess.Popen(
            [sys.executable, "-m", "headwater.cli.main", "tail", name, "-n", "0", "--format", "json",
             "--interval", "0.1", "--max-rows", "3", "--timeout", "20"],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            assert proc.stderr is not None
            assert "following" in proc.stderr.readline()
            c.post(
                f"/v1/streams/{name}/events",
                json=[ev(2, device_id="late", ts="2020-01-01T00:00:00Z")],
            )
            c.post(f"/v1/streams/{name}/events", json=[ev(3, device_id="x"), ev(4, device_id="y")])
            out, _ = proc.communicate(timeout=20)
        finally:
            proc.kill()
    assert proc.returncode == 0
    shown = [orjson.loads(line)["device_id"] for line in out.splitlines()]
    assert shown == ["late", "x", "y"]  # in arrival order, a row older in event time included


def test_send_honours_429(tmp_path: Path) -> None:
    srv = Server(
        tmp_path / "data",
        HEADWATER_RATE_LIMIT_ROWS_PER_S="2000",
        HEADWATER_RATE_LIMIT_BURST_ROWS="2000",
    )
    srv.start()
    try:
        f = tmp_path / "many.ndjson"
        f.write_bytes(b"\n".join(orjson.dumps(ev(i)) for i in range(10_000)))
        with srv.client() as c:
            name = make_stream(c)
            t0 = time.monotonic()
            got = summary(hw(srv.url, "send", name, str(f), "--batch-size", "1000", "--json"))
            assert got["accepted"] == 10_000 and got["failed_batches"] == 0
            assert time.monotonic() - t0 >= 3.0  # 8,000 rows past the burst at 2,000 rows/s
            assert count(c, name) == 10_000
    finally:
        srv.stop()


def test_sending_the_same_rows_under_a_new_prefix_counts_duplicates(
    server: Server, tmp_path: Path
) -> None:
    f = tmp_path / "events.ndjson"
    f.write_bytes(b"\n".join(orjson.dumps(ev(i)) for i in range(20)))
    with server.client() as c:
        name = make_stream(c)
        assert summary(hw(server.url, "send", name, str(f), "--json"))["accepted"] == 20
        again = summary(
            hw(server.url, "send", name, str(f), "--json", "--idempotency-prefix", "again")
        )
        assert (again["accepted"], again["duplicates"]) == (0, 20)
        assert count(c, name) == 20
