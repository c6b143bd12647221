"""PostgreSQL CDC into a durable stream: the snapshot, then changes, rows/s.

Starts a private PostgreSQL cluster (``initdb``, ``wal_level=logical``) and a fresh
``headwater serve``, fills a table with ``--rows`` rows, creates a ``postgres_cdc``
source (its snapshot is timed until every row is stored), then inserts ``--rows`` more
rows in transactions of ``--txn-rows`` and times the changes until every one is stored.

    python benchmarks/postgres_cdc.py [--rows 200000] [--txn-rows 1000] [--batch-rows 10000]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from pgcluster import PgCluster, wait_for
from serverproc import Server

STREAM = {
    "name": "orders",
    "fields": [
        {"name": "id", "type": "int", "required": True},
        {"name": "customer", "type": "string"},
        {"name": "total", "type": "float"},
        {"name": "placed", "type": "timestamp"},
        {"name": "op", "type": "string"},
        {"name": "lsn", "type": "int"},
    ],
}


def stored(c: httpx.Client) -> int:
    rows = c.post("/v1/query", json={"sql": "SELECT count(*) FROM orders"}).json()["rows"]
    return int(rows[0][0])


def fill(dsn: str, start: int, n: int, txn_rows: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as db:
        for k in range(start, start + n, txn_rows):
            db.execute(
                "INSERT INTO orders SELECT i, 'customer ' || (i %% 1000), i * 0.01, now() "
                "FROM generate_series(%s, %s) i", (k, min(start + n, k + txn_rows) - 1),
            )  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--txn-rows", type=int, default=1000)
    ap.add_argument("--batch-rows", type=int, default=10_000)
    args = ap.parse_args()
    n = args.rows
    cluster = PgCluster().start()
    with tempfile.TemporaryDirectory() as tmp:
        server = Server(Path(tmp) / "data").start()
        try:
            dsn = cluster.create_db("bench")
            with psycopg.connect(dsn, autocommit=True) as db:
                db.execute("CREATE TABLE orders (id bigint PRIMARY KEY, customer text, "
                           "total numeric, placed timestamptz)")  # fmt: skip
            fill(dsn, 0, n, 50_000)
            with server.client() as c:
                c.post("/v1/streams", json=STREAM).raise_for_status()
                t0 = time.monotonic()
                c.post("/v1/sources", json={"name": "shop", "kind": "postgres_cdc",
                       "stream": "orders", "config": {"dsn": dsn, "tables": ["orders"],
                       "batch_rows": args.batch_rows}}).raise_for_status()  # fmt: skip
                wait_for(lambda: stored(c) >= n, 600)
                snap = time.monotonic() - t0
                print(f"snapshot: {n} rows in {snap:.2f} s: {n / snap:,.0f} rows/s")
                t0 = time.monotonic()
                fill(dsn, n, n, args.txn_rows)
                wait_for(lambda: stored(c) >= 2 * n, 600)
                live = time.monotonic() - t0
                print(
                    f"changes: {n} inserts in transactions of {args.txn_rows}, "
                    f"{live:.2f} s from the first insert until all are stored: "
                    f"{n / live:,.0f} rows/s"
                )
        finally:
            server.stop()
            cluster.stop()


if __name__ == "__main__":
    main()
