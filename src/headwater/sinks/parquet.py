"""Parquet files (sink kind ``parquet``): one file per checkpoint, exactly-once per file.

The runner reads up to ``batch_rows`` rows from its cursor (waiting up to
``batch_age_ms`` to fill a file), writes them to a hidden temporary file in
``config.path``, fsyncs it, renames it into place and fsyncs the directory; only then
does it commit the cursor past those rows. One file at a time: a file is named by the
cursor it starts at (``<sink>-<offset, 20 digits>.parquet``), so the only file a crash
can leave uncommitted is the one at the committed cursor, and the replay writes that
name again (overwriting it) instead of adding a second copy. Readers never see a
partial file: a name appears only by the atomic rename, and a file source watching the
directory skips hidden files.

Columns are the rows' own (internal ``_`` columns stay inside), with their Arrow types.
``config.path`` must lie under the server's ``sink_file_root``.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, field_validator

from headwater.errors import BadRequest
from headwater.log.ports import LogEntry
from headwater.sinks.http import Outcome, Slots, Stats
from headwater.sinks.outbox import LocalOutbox
from headwater.sinks.policy import Aimd, Breaker
from headwater.sinks.rows import Request
from headwater.sinks.runner import SinkRunner, Totals


class ParquetConfig(BaseModel):
    """Options of the ``parquet`` kind (see docs/sinks.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    batch_rows: int = Field(100_000, ge=1, le=10_000_000)  # rows per file, at most
    batch_age_ms: int = Field(1000, ge=0, le=3_600_000)  # how long to wait to fill one
    compression: Literal["zstd", "snappy", "gzip", "none"] = "zstd"
    start: Literal["earliest", "latest"] = "earliest"

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not os.path.isabs(v):
            raise ValueError("path must be an absolute directory path")
        return v

    # fixed for this kind: one file at a time
    @property
    def batch_bytes(self) -> int:
        return 1 << 62

    @property
    def max_concurrency(self) -> int:
        return 1

    @property
    def max_pending_rows(self) -> int:
        return self.batch_rows


def check_root(config: ParquetConfig, root: Path | None) -> ParquetConfig:
    """Refuse a directory outside ``root`` (the server's ``sink_file_root``)."""
    if root is None or not Path(config.path).resolve().is_relative_to(root.resolve()):
        raise BadRequest(
            f"config.path must be inside {root} (the server's sink_file_root)",
            code="path_not_allowed", field="path",
        )  # fmt: skip
    return config


def file_name(sink: str, offset: int) -> str:
    """>>> file_name("daily", 1200)
    'daily-00000000000000001200.parquet'
    """
    return f"{sink}-{offset:020d}.parquet"


def write_atomically(table: pa.Table, directory: Path, name: str, compression: str) -> None:
    """Write, fsync, rename into place, fsync the directory: all of the file or none."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as fh:
        pq.write_table(table, fh, compression=None if compression == "none" else compression)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, directory / name)
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def table_of(entries: list[LogEntry], keep: pa.Array | None) -> pa.Table:
    """The entries' rows without internal columns; ``keep`` leaves rows out (erasure)."""
    tables = [pa.Table.from_batches([e.batch]) for e in entries]
    table = pa.concat_tables(tables, promote_options="default")
    table = table.select([n for n in table.column_names if not n.startswith("_")])
    return table.filter(keep) if keep is not None else table


class ParquetFiles:
    """The delivery side of a Parquet sink: its config and the figures the status shows."""

    def __init__(self, config: ParquetConfig) -> None:
        self.config = config
        self.stats = Stats()
        self.breaker = Breaker()
        self.slots = Slots(Aimd(1))
        self.files = 0

    async def deliver(self, req: Request) -> Outcome:
        """Never called: the runner writes whole files (``ParquetRunner``)."""
        return await self.send(req.body, req.key)

    async def send(self, body: bytes, key: str) -> Outcome:
        """Never called: a file sink has no dead letters to replay."""
        return Outcome(ok=False, attempts=0, error="a parquet sink has no dead letters")

    async def close(self) -> None:
        return None


class ParquetRunner(SinkRunner):
    """A ``SinkRunner`` whose delivery is one file per checkpoint, written in sequence."""

    async def _read_once(self, stop: asyncio.Event) -> None:
        files = self.outbox.delivery if isinstance(self.outbox, LocalOutbox) else None
        assert isinstance(files, ParquetFiles)
        cfg = files.config
        entries = await self._gather(cfg.batch_rows, stop)
        if not entries:
            return
        start, end = self.offset, entries[-1].end
        table = await asyncio.to_thread(table_of, entries, self._erased(entries))
        n = table.num_rows
        if n:
            t0 = time.monotonic()
            files.stats.attempts += 1
            try:
                await asyncio.to_thread(write_atomically, table, Path(cfg.path),
                                        file_name(self.name, start), cfg.compression)  # fmt: skip
            except BaseException:  # read again from the cursor on the next try
                files.stats.failed += 1
                raise
            finally:
                files.stats.latency_s += time.monotonic() - t0
            files.files += 1
        async with self._commit_lock:
            c = self.committed
            after = Totals(c.produced + n, c.delivered + n, c.dead)
            await self.write(after, {self.topic: end}, [])
            with self._lock:  # nothing is pending between files
                self.offset = self.read_offset = end
                self.committed = after
                self.totals = Totals(**vars(after))
