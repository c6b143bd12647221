"""A private PostgreSQL cluster for tests and benchmarks: ``initdb`` + ``pg_ctl`` on a free
port, ``wal_level=logical`` (the machine's shared server runs ``replica``), trust auth.

PostgreSQL refuses to run as root: as root, the cluster runs as the ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg

from serverproc import free_port


def pg_bin(name: str) -> str:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    if found:
        return found[-1]
    path = shutil.which(name)
    if path is None:
        raise RuntimeError(f"{name} not found: install the postgresql package")
    return path


class PgCluster:
    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="hw-pg-"))
        self.data = self.dir / "data"
        self.port = free_port()
        self._user: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
            self._user = ["runuser", "-u", "postgres", "--"]

    def _run(self, *args: str) -> None:
        subprocess.run([*self._user, *args], check=True, capture_output=True)

    def start(self) -> PgCluster:
        self._run(pg_bin("initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust",
                  "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        return self.up()

    def crash(self) -> None:
        """Stop the server at once, as a crash would (``pg_ctl -m immediate``)."""
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def up(self) -> PgCluster:
        opts = (f"-p {self.port} -k {self.dir} -c listen_addresses=127.0.0.1 "
                "-c wal_level=logical -c max_replication_slots=20 -c max_wal_senders=20 "
                "-c fsync=off -c full_page_writes=off "
                "-c shared_buffers=64MB")  # fmt: skip
        self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-o", opts, "-l",
                  str(self.dir / "log"), "-w", "-t", "60", "start")  # fmt: skip
        return self

    def dsn(self, db: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={db}"

    def create_db(self, name: str) -> str:
        with psycopg.connect(self.dsn(), autocommit=True) as c:
            c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            c.execute(f'CREATE DATABASE "{name}"')
        return self.dsn(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._run(pg_bin("pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)


def wait_for(check, timeout_s: float = 60.0):  # type: ignore[no-untyped-def]
    """Poll ``check`` until it answers something true, or the deadline; return its answer."""
    deadline = time.monotonic() + timeout_s
    while True:
        got = check()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)
