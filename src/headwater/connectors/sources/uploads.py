"""File uploads (``POST /v1/streams/{name}/files``): spooled to the data dir, then imported
in chunks through ``accept`` like a file source, so a crash mid-import resumes.

An upload is a job: its body is written to ``uploads/<job>.data`` (never held in memory)
and fsynced, then ``<job>.json`` says what to import; the import commits each chunk's
position under the job's name. At start every job still ``importing`` is resumed from its
committed position; a finished (or failed) job's data file is deleted, its counts kept.
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import structlog

from headwater.connectors.sources.files import FileReader
from headwater.connectors.sources.registry import SourceStats
from headwater.connectors.sources.runtime import SourceRuntime
from headwater.errors import NotFound, UnsupportedMediaType
from headwater.ingest.streams import StreamDirectory

log = structlog.get_logger("headwater.uploads")

UPLOAD_TYPES = {
    "text/csv": "csv", "application/csv": "csv", "application/x-ndjson": "ndjson",
    "application/ndjson": "ndjson", "application/jsonl": "ndjson", "application/json": "json",
    "avro/binary": "avro", "application/avro": "avro", "application/vnd.apache.parquet": "parquet",
    "application/x-parquet": "parquet", "application/parquet": "parquet",
}  # fmt: skip
SUFFIX_TYPES = {".csv": "csv", ".ndjson": "ndjson", ".jsonl": "ndjson", ".json": "json",
                ".avro": "avro", ".parquet": "parquet"}  # fmt: skip


def upload_format(content_type: str | None, encoding: str | None, filename: str = "") -> str:
    """The import format of an upload, from its Content-Type (or a part's file name)."""
    media = (content_type or "").split(";")[0].strip().lower()
    fmt = UPLOAD_TYPES.get(media)
    gz = (encoding or "").lower() == "gzip" or filename.endswith(".gz")
    if fmt is None and filename:
        fmt = SUFFIX_TYPES.get(Path(filename.removesuffix(".gz")).suffix.lower())
    if fmt is None:
        raise UnsupportedMediaType(
            f"cannot import {media or 'a body without Content-Type'}; send text/csv, "
            "application/x-ndjson, application/json, avro/binary or application/vnd.apache."
            "parquet (gzip with Content-Encoding), or a multipart part with such a file name"
        )
    return fmt + ("+gzip" if gz and fmt != "parquet" else "")


@dataclass
class Job:
    id: str
    tenant: str
    stream: str
    fmt: str
    state: str  # importing, done, failed
    stats: SourceStats

    def view(self) -> dict[str, Any]:
        s = self.stats
        return {"job": self.id, "stream": self.stream, "format": self.fmt, "state": self.state,
                "accepted": s.rows_in, "rejected": s.rows_rejected, "duplicates": s.duplicates,
                "chunks": s.deliveries, "position": s.position, "error": s.last_error}  # fmt: skip


class Uploads:
    def __init__(
        self, folder: Path, runtime: SourceRuntime, streams: StreamDirectory, chunk_bytes: int
    ) -> None:
        self.folder = folder
        self._chunk_bytes = chunk_bytes
        folder.mkdir(parents=True, exist_ok=True)
        self._runtime = runtime
        self._streams = streams
        self._jobs: dict[str, Job] = {}
        self._tasks: set[asyncio.Task[Job]] = set()

    def new(self, tenant: str, stream: str, fmt: str) -> tuple[Job, Path]:
        job = Job("u" + secrets.token_hex(8), tenant, stream, fmt, "receiving", SourceStats())
        self._jobs[job.id] = job
        return job, self.folder / f"{job.id}.data"

    def get(self, tenant: str, job_id: str) -> Job:
        job = self._jobs.get(job_id)
        if job is None or job.tenant != tenant:
            raise NotFound(f"upload job {job_id!r} does not exist", code="unknown_upload")
        return job

    def received(self, job: Job) -> None:
        """The body is complete and fsynced: from now on a restart resumes the import."""
        job.state = "importing"
        self._write(job)

    async def run(self, job: Job) -> Job:
        st = self._streams.get(job.tenant, job.stream)
        name = f"upload-{job.id}"
        found = await asyncio.to_thread(self._runtime.committed, job.tenant, name, st)
        position = found.get("file", (None, 0))[0]
        data = self.folder / f"{job.id}.data"
        try:
            reader = await asyncio.to_thread(
                FileReader, data, job.fmt, "file", position, self._chunk_bytes
            )
            await self._runtime.import_file(job.tenant, name, st, reader, job.stats)
            job.state = "done"
        except Exception as exc:
            job.state, job.stats.last_error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("upload_failed", job=job.id, error=job.stats.last_error)
        self._write(job)
        data.unlink(missing_ok=True)  # done, or failed for good (a restart does not retry it)
        return job

    async def resume(self) -> None:
        """Start again the imports a crash interrupted (in the background)."""
        for meta in sorted(self.folder.glob("*.json")):
            d = orjson.loads(meta.read_bytes())
            stats = SourceStats(rows_in=d["accepted"], rows_rejected=d["rejected"])
            job = Job(d["job"], d["tenant"], d["stream"], d["format"], d["state"], stats)
            self._jobs[job.id] = job
            if job.state == "importing":
                task = asyncio.create_task(self.run(job), name=f"upload:{job.id}")
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

    def _write(self, job: Job) -> None:
        path = self.folder / f"{job.id}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps({**job.view(), "tenant": job.tenant}))
        os.replace(tmp, path)

    async def stop(self) -> None:
        for t in list(self._tasks):
            t.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
