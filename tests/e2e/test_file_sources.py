"""File uploads and watched-directory sources through a real server, with kill -9."""

from __future__ import annotations

import contextlib
import gzip
import itertools
import os
import random
import threading
import time
from pathlib import Path

import httpx
import orjson
import pyarrow as pa
import pyarrow.parquet as pq

from serverproc import Server

STREAM = {
    "name": "lines",
    "fields": [
        {"name": "file", "type": "string", "required": True},
        {"name": "seq", "type": "int", "required": True, "min": 0},
        {"name": "note", "type": "string"},
    ],
}  # no id field: a row imported twice would show as two rows


def ndjson(name: str, n: int, start: int = 0) -> bytes:
    return b"".join(
        orjson.dumps({"file": name, "seq": i, "note": "x" * 20}) + b"\n" for i in range(start, n)
    )


def counts(c: httpx.Client) -> dict[str, tuple[int, int]]:
    sql = "SELECT file, count(*), count(DISTINCT seq) FROM lines GROUP BY file"
    answer = c.post("/v1/query", json={"sql": sql})
    assert answer.status_code == 200, answer.text
    return {f: (n, d) for f, n, d in answer.json()["rows"]}


def wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_uploads_raw_gzip_multipart_and_parquet(fresh_server: Server, tmp_path: Path) -> None:
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        raw = c.post("/v1/streams/lines/files", content=ndjson("a", 1000),
                     headers={"Content-Type": "application/x-ndjson"})  # fmt: skip
        assert raw.status_code == 200, raw.text
        assert raw.json()["accepted"] == 1000 and raw.json()["state"] == "done"
        body = gzip.compress(b"file,seq,note\n" + b"".join(b"b,%d,y\n" % i for i in range(500))
                             + b"b,-3,bad\n")  # fmt: skip
        gz = c.post("/v1/streams/lines/files", content=body,
                    headers={"Content-Type": "text/csv", "Content-Encoding": "gzip"})  # fmt: skip
        assert (gz.json()["accepted"], gz.json()["rejected"]) == (500, 1), gz.text
        table = pa.table({"file": ["c"] * 3000, "seq": pa.array(range(3000), pa.int32())})
        pq.write_table(table, tmp_path / "c.parquet", row_group_size=1000)
        files = {
            "file": ("c.parquet", (tmp_path / "c.parquet").read_bytes(), "application/octet-stream")
        }
        form = c.post("/v1/streams/lines/files", files=files)
        assert form.status_code == 200, form.text
        assert form.json()["accepted"] == 3000 and form.json()["chunks"] == 3
        job = c.get(f"/v1/streams/lines/files/{form.json()['job']}").json()
        assert job["state"] == "done" and job["accepted"] == 3000
        q = c.get("/v1/streams/lines/quarantine").json()["rows"]
        assert len(q) == 1 and q[0]["request_id"].startswith("source:upload-")
        assert wait_for(
            lambda: counts(c) == {"a": (1000, 1000), "b": (500, 500), "c": (3000, 3000)}
        )
        bad = c.post("/v1/streams/lines/files", content=b"x", headers={"Content-Type": "image/png"})
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_media_type"


def test_directory_source_resumes_after_kill_9_without_loss_or_duplicates(tmp_path: Path) -> None:
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    n = 60_000
    (inbox / "big.ndjson").write_bytes(ndjson("big", n))
    table = pa.table({"file": ["pq"] * n, "seq": pa.array(range(n), pa.int64())})
    pq.write_table(table, inbox / "rows.parquet", row_group_size=500)
    srv = Server(tmp_path / "data", HEADWATER_FILE_SOURCE_ROOT=str(tmp_path)).start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            outside = {"name": "etc", "kind": "file", "stream": "lines", "config": {"path": "/etc"}}
            refused = c.post("/v1/sources", json=outside)
            assert (
                refused.status_code == 400 and refused.json()["error"]["code"] == "path_not_allowed"
            )
            source = {"name": "inbox", "kind": "file", "stream": "lines",
                      "config": {"path": str(inbox), "settle_ms": 0, "chunk_bytes": 16384}}  # fmt: skip
            created = c.post("/v1/sources", json=source)
            assert created.status_code == 201, created.text
            at_kill = wait_for(
                lambda: (v := c.get("/v1/sources/inbox").json())["rows_in"] > 2000 and v
            )
            assert at_kill["partitions_done"] < 2 and at_kill["rows_in"] < 2 * n, at_kill
        srv.kill()  # mid-import: 120,000 rows take hundreds of chunks
        srv.start()
        with srv.client() as c:
            done = wait_for(lambda: counts(c) == {"big": (n, n), "pq": (n, n)}, 120)
            assert done, counts(c)
            view = c.get("/v1/sources/inbox").json()
            assert view["status"] == "running" and view["positions"] == {}
            assert view["partitions_done"] == 2
            (inbox / "late.csv").write_bytes(
                b"file,seq\n" + b"".join(b"late,%d\n" % i for i in range(10))
            )
            assert wait_for(lambda: counts(c).get("late") == (10, 10))
            # Nothing is imported twice, even after another restart.
        srv.stop()
        srv.start()
        with srv.client() as c:
            view = wait_for(
                lambda: (v := c.get("/v1/sources/inbox").json())["status"] == "running" and v
            )
            assert view
            assert counts(c) == {"big": (n, n), "pq": (n, n), "late": (10, 10)}
    finally:
        srv.stop()


def test_kill_9_loops_over_many_one_chunk_files_import_each_once(tmp_path: Path) -> None:
    """Every chunk is a file's last (``done``): a kill -9 lands often between a file's
    durable last commit and the position file's copy of it. The starts after must still
    know the file is done, also once later files have been committed."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    names = itertools.count()

    def produce(files: int) -> None:
        for _ in range(files):
            name = f"{next(names):05d}.ndjson"
            (tmp_path / name).write_bytes(ndjson(name, 10))
            os.replace(tmp_path / name, inbox / name)  # whole, never half-written

    srv = Server(tmp_path / "data", HEADWATER_FILE_SOURCE_ROOT=str(tmp_path)).start()
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201
            source = {"name": "inbox", "kind": "file", "stream": "lines",
                      "config": {"path": str(inbox), "settle_ms": 0}}  # fmt: skip
            assert c.post("/v1/sources", json=source).status_code == 201
        pick = random.Random(7)
        for _ in range(6):
            produce(100)
            with srv.client() as c:  # mid-import: 100 files are 100 commits
                at = pick.randrange(50, 600)
                assert wait_for(lambda at=at: c.get("/v1/sources/inbox").json()["rows_in"] >= at)
            srv.kill()
            srv.start()
        produce(20)  # commits after the last kill move the position file's progress on
        with srv.client() as c:
            assert wait_for(lambda: len(counts(c)) == 620, 120), len(counts(c))
        srv.stop()
        srv.start()
        with srv.client() as c:
            produce(1)
            got = wait_for(lambda: len(counts(c)) == 621 and counts(c), 120)
            assert got, len(counts(c))
            assert {f: n for f, n in got.items() if n != (10, 10)} == {}
    finally:
        srv.stop()


def test_an_upload_killed_mid_import_is_resumed_at_start(tmp_path: Path) -> None:
    srv = Server(tmp_path / "data", HEADWATER_FILE_CHUNK_BYTES="16384").start()
    n = 100_000
    try:
        with srv.client() as c:
            assert c.post("/v1/streams", json=STREAM).status_code == 201

        def send() -> None:
            with srv.client() as c, contextlib.suppress(httpx.HTTPError):
                c.post("/v1/streams/lines/files", content=ndjson("up", n),
                       headers={"Content-Type": "application/x-ndjson"})  # fmt: skip

        sender = threading.Thread(target=send)
        sender.start()
        with srv.client() as c:
            assert wait_for(lambda: counts(c).get("up", (0, 0))[0] > 3000)
        srv.kill()  # the import is hundreds of chunks long: it was mid-file
        sender.join()
        [meta] = (tmp_path / "data" / "uploads").glob("*.json")
        assert orjson.loads(meta.read_bytes())["state"] == "importing"
        srv.start()
        with srv.client() as c:
            assert wait_for(lambda: counts(c).get("up") == (n, n), 120), counts(c)
            job = orjson.loads(meta.read_bytes())["job"]
            view = c.get(f"/v1/streams/lines/files/{job}").json()
            assert view["state"] == "done", view
            assert not list((tmp_path / "data" / "uploads").glob("*.data"))
    finally:
        srv.stop()


def test_unreadable_uploads_are_4xx_with_a_code(fresh_server: Server) -> None:
    with fresh_server.client() as c:
        assert c.post("/v1/streams", json=STREAM).status_code == 201
        broken = c.post("/v1/streams/lines/files", content=b"PAR1 not really",
                        headers={"Content-Type": "application/vnd.apache.parquet"})  # fmt: skip
        assert broken.status_code == 400, broken.text
        assert broken.json()["error"]["code"] == "import_failed"
        assert broken.json()["error"]["details"]["state"] == "failed"
        form = c.post("/v1/streams/lines/files", content=b"--xx\r\nbroken",
                      headers={"Content-Type": "multipart/form-data; boundary=xx"})  # fmt: skip
        assert form.status_code == 400, form.text
        assert form.json()["error"]["code"] in ("malformed_multipart", "missing_file")
        assert c.post("/v1/streams/nope/files", content=b"{}").status_code == 404
