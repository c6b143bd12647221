"""File sources: a watched directory (kind ``file``) and the readers uploads share.

A file is read in chunks, each committed with the file's position after it: the byte
offset for NDJSON and CSV (cut at line ends; a CSV chunk repeats the header), the next
row group for Parquet; JSON arrays and Avro containers are one chunk. The last chunk's
position is ``done``. A file is a partition named by its identity (path, size, mtime,
inode), so a finished file is never imported twice, a crash mid-file resumes at the
last committed chunk, and a file replaced by a new one (new identity) is imported again.
Files modified within ``settle_ms`` are left for later (they may still be written):
better, write them elsewhere and rename them into the directory.
"""

from __future__ import annotations

import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import DONE, END, Chunk, End, Positions, Reader, Relisting
from headwater.errors import BadRequest

CHUNK_BYTES = 8 << 20
SUFFIXES = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json",
            ".parquet": "parquet", ".avro": "avro"}  # fmt: skip


def format_of_path(path: Path, fmt: str | None = None) -> str:
    """``csv``, ``ndjson``..., with ``+gzip`` for ``.gz`` files; ``fmt`` overrides the suffix."""
    gz = path.suffix == ".gz"
    base = fmt or SUFFIXES.get(Path(path.stem).suffix if gz else path.suffix)
    if base is None:
        raise BadRequest(
            f"cannot tell the format of {path.name}; name it .csv, .ndjson, .json, .parquet "
            "or .avro (optionally .gz), or set config.format",
            code="bad_source_format",
        )
    return base + ("+gzip" if gz else "")


@dataclass(frozen=True)
class DirectoryConfig:
    path: Path
    pattern: str
    fmt: str | None
    settle_ms: int
    chunk_bytes: int

    @classmethod
    def parse(cls, c: dict[str, Any], root: Path | None = None) -> DirectoryConfig:
        """``root``: the directory file sources are confined to (``file_source_root``)."""
        path = c.get("path")
        if not isinstance(path, str) or not os.path.isabs(path):
            raise BadRequest("config.path must be an absolute directory path",
                             code="bad_source_config")  # fmt: skip
        if root is not None and not Path(path).resolve().is_relative_to(root):
            raise BadRequest(
                f"config.path must be inside {root} (the server's file_source_root)",
                code="path_not_allowed",
            )
        fmt = c.get("format")
        if fmt is not None and fmt not in set(SUFFIXES.values()):
            raise BadRequest("config.format: csv, ndjson, json, parquet or avro",
                             code="bad_source_config")  # fmt: skip
        chunk = c.get("chunk_bytes", CHUNK_BYTES)
        if not isinstance(chunk, int) or chunk < 1024:
            raise BadRequest("config.chunk_bytes: an integer of at least 1024",
                             code="bad_source_config")  # fmt: skip
        return cls(Path(path), str(c.get("pattern", "*")), fmt, int(c.get("settle_ms", 1000)),
                   chunk)  # fmt: skip


def identity(path: Path, base: Path) -> str:
    """``relative/path|size|mtime_ns|inode``: a file changed or replaced is another file."""
    s = path.stat()
    return f"{path.relative_to(base)}|{s.st_size}|{s.st_mtime_ns}|{s.st_ino}"


class DirectorySource(Relisting):
    """Every file of ``config.path`` matching ``config.pattern``, each imported once."""

    def __init__(self, rec: SourceRecord, root: Path) -> None:
        self.config = DirectoryConfig.parse(rec.config, root)
        self.root = root

    def partitions(self, committed: Positions) -> list[str]:
        cfg = self.config
        if not cfg.path.is_dir():
            raise FileNotFoundError(f"{cfg.path} is not a directory")
        now_ns = time.time_ns()
        found = []
        for p in cfg.path.glob(cfg.pattern):
            if not p.is_file() or p.name.startswith("."):
                continue
            if not p.resolve().is_relative_to(self.root):
                continue  # a link leading outside the allowed directory
            s = p.stat()
            if now_ns - s.st_mtime_ns < cfg.settle_ms * 1_000_000:
                continue
            ident = identity(p, cfg.path)
            if committed.get(ident, ("", 0))[0] != DONE:
                found.append((s.st_mtime_ns, ident))
        return [ident for _, ident in sorted(found)]

    def open(self, partition: str, position: str | None) -> Reader:
        path = self.config.path / partition.split("|", 1)[0]
        fmt = format_of_path(path, self.config.fmt)
        return FileReader(path, fmt, partition, position, self.config.chunk_bytes)


class FileReader:
    """Chunks of one file from ``position`` on (see the module doc)."""

    def __init__(
        self, path: Path, fmt: str, partition: str, position: str | None,
        chunk_bytes: int = CHUNK_BYTES,
    ) -> None:  # fmt: skip
        self.path, self.fmt, self.partition = path, fmt, partition
        self.chunk_bytes = chunk_bytes
        self.base, _, enc = fmt.partition("+")
        self.position = position or "0"
        self._fh: IO[bytes] | None = None
        self._pq: pq.ParquetFile | None = None
        self._header = b""
        self._left: int | None = None  # the lag: bytes (text) or rows (Parquet) left
        if self.position == DONE:
            return
        if self.base == "parquet":
            self._pq = pq.ParquetFile(path)
            return
        fh: Any = gzip.open(path, "rb") if enc == "gzip" else open(path, "rb")  # noqa: SIM115
        self._fh = fh
        if self.base == "csv":
            self._header = fh.readline()
        offset = max(int(self.position), fh.tell())
        fh.seek(offset)
        self._offset = offset
        self._carry = b""
        self._size = None if enc else path.stat().st_size  # unknown inside gzip

    def read(self, timeout_s: float) -> Chunk | End | None:
        if self.position == DONE:
            return END
        if self._pq is not None:
            return self._row_group()
        assert self._fh is not None
        if self.base in ("json", "avro"):
            data = self._fh.read()
            return self._chunk(data, DONE)
        data = self._carry + self._fh.read(self.chunk_bytes)
        more = self._fh.peek(1) if hasattr(self._fh, "peek") else b""
        if not more:
            if not data.strip():
                return self._chunk(pa.table({}), DONE)
            return self._chunk(self._header + data, DONE)
        cut = data.rfind(b"\n") + 1
        if self._size is not None:
            self._left = max(0, self._size - self._offset - cut)
        if cut == 0:  # a line longer than a chunk: read on
            self._carry = data
            return self.read(timeout_s)
        self._carry = data[cut:]
        self._offset += cut
        return self._chunk(self._header + data[:cut], str(self._offset))

    def _row_group(self) -> Chunk:
        f = self._pq
        assert f is not None
        k = int(self.position)
        if k >= f.num_row_groups:
            return self._chunk(pa.table({}), DONE)
        table = f.read_row_group(k)
        left = sum(f.metadata.row_group(i).num_rows for i in range(k + 1, f.num_row_groups))
        self._left = left  # lag: rows left
        return self._chunk(table, DONE if k + 1 >= f.num_row_groups else str(k + 1))

    def _chunk(self, data: bytes | pa.Table, position: str) -> Chunk:
        self.position = position
        fmt = "arrow" if isinstance(data, pa.Table) else self.fmt.split("+")[0]
        return Chunk(data, fmt, self.partition, position, lag=0 if position == DONE else self._left)

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
