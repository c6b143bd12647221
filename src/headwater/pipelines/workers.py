"""Pipeline operators in worker processes: how one server uses more than one core.

With ``pipeline_workers = N`` (N > 0) the server starts N worker processes, and each
pipeline's operators (its ``Pipeline``: windows, joins, state) live in one of them. The
runner stays in the server: it reads the log, hands each batch to its ``RemotePipeline``
and commits the results, state and offsets to the store in one transaction as before, so
exactly-once does not depend on where the operators run. What crosses the pipe is Arrow
tables (pickled buffers, about a copy), the snapshot bytes at a checkpoint, and the
reference tables a lookup join reads, sent again only when they change.

A worker that dies (killed, out of memory) is started again; each pipeline it held
raises ``WorkerLost`` at its next call, and its runner restores the last checkpoint and
reads on from the offsets committed with it: nothing is lost or counted twice.

    pool = WorkerPool(2, udf_modules="")
    pool.start()
    engine = RemotePipeline(pool, pipeline, spec, references)
    out = engine.process(batch, now_ms, "readings")   # runs in a worker
    pool.close()
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any, Protocol

import pyarrow as pa
import structlog

from headwater.engine import Pipeline, StepOutput
from headwater.engine.models import Model, OnnxModel
from headwater.engine.plan import Plan
from headwater.errors import HeadwaterError
from headwater.pipelines.processes import (
    Worker,
    WorkerLost,
    receive_message,
    send_message,
    sendable,
)

log = structlog.get_logger("headwater.pipeline")

STATUS_EVERY_S = 0.2  # how stale a remote pipeline's cached status may get


class References(Protocol):
    """What a remote pipeline needs of the server's reference tables."""

    def get(self, name: str) -> pa.Table: ...

    def version(self, name: str) -> int: ...


class ModelFiles(Protocol):
    """What a remote pipeline needs of the server's models: the version a call means (the
    server pins it) and its ONNX bytes."""

    def read(self, name: str, version: int | None) -> tuple[int, bytes]: ...


@dataclass(frozen=True)
class EngineSpec:
    """What a worker needs to build a pipeline."""

    plan: Plan
    schemas: Mapping[str, pa.Schema]


# the server side ----------------------------------------------------------------------


class WorkerPool:
    """``n`` worker processes; a pipeline goes to the one holding the fewest."""

    def __init__(self, n: int, udf_modules: str) -> None:
        self.workers = [Worker(i, [udf_modules]) for i in range(n)]
        self._keys = iter(range(1, 1 << 62))
        self._lock = threading.Lock()

    def start(self) -> None:
        threads = [threading.Thread(target=w.start) for w in self.workers]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if any(w.pid is None for w in self.workers):
            raise HeadwaterError("a pipeline worker did not start; see the log above")

    def close(self) -> None:
        for w in self.workers:
            w.close()

    def pids(self) -> list[int]:
        return [pid for w in self.workers if (pid := w.pid) is not None]

    def leave(self, worker: Worker) -> None:
        with self._lock:
            worker.hosted -= 1

    def place(self) -> tuple[Worker, int]:
        """The least busy worker, and a key for a new pipeline there."""
        with self._lock:
            worker = min(self.workers, key=lambda w: w.hosted)
            worker.hosted += 1
            return worker, next(self._keys)


class RemotePipeline:
    """A pipeline whose operators run in a worker; the runner's ``Engine`` there.

    ``local`` is the same pipeline built in the server: it answers what does not change
    (plan, schemas, output key) and never holds state. The worker's copy is built at the
    first call; after a worker restart the next call raises ``WorkerLost`` once (the state
    is gone), and the one after builds it again, empty, for ``restore``.
    """

    def __init__(
        self, pool: WorkerPool, local: Pipeline, spec: EngineSpec, references: References,
        models: ModelFiles,
    ) -> None:  # fmt: skip
        self._pool, self._spec, self._refs, self._models = pool, spec, references, models
        self._sent: set[str] = set()  # reference tables the worker asked for
        self._worker: Worker | None = None
        self._key = 0
        self._built = 0  # the worker generation it was built on; 0: not built
        self._status: dict[str, Any] = local.status()
        self._status_at = 0.0

    def process(self, batch: pa.Table, now_ms: int, stream: str | None = None) -> StepOutput:
        out: StepOutput = self._call("process", (batch, now_ms, stream, self._versions()))
        return out

    def on_time(self, now_ms: int) -> StepOutput:
        fresh = time.monotonic() - self._status_at >= STATUS_EVERY_S
        answer: tuple[StepOutput, dict[str, Any] | None]
        answer = self._call("on_time", (now_ms, fresh, self._versions()))
        out, status = answer
        if status is not None:
            self._status, self._status_at = status, time.monotonic()
        return out

    def snapshot(self) -> bytes:
        data: bytes = self._call("snapshot", None)
        return data

    def restore(self, data: bytes) -> None:
        self._call("restore", data)

    def status(self) -> dict[str, Any]:
        """The last status the worker sent (at most ``STATUS_EVERY_S`` old while running);
        never waits for the worker, so an HTTP status answer never queues behind a batch."""
        return self._status

    @property
    def pid(self) -> int | None:
        return self._worker.pid if self._worker is not None else None

    def close(self) -> None:
        """Let the worker forget the pipeline (dropped or replaced)."""
        w, self._worker = self._worker, None
        if w is None:
            return
        if self._built:
            with contextlib.suppress(WorkerLost):
                w.call("drop", self._key, None, self._answer, self._built)
        self._built = 0
        self._pool.leave(w)

    def _call(self, op: str, args: Any) -> Any:
        if self._worker is None:
            self._worker, self._key = self._pool.place()
        w = self._worker
        if not self._built:  # (again, empty, after ``WorkerLost``: ``restore`` follows)
            self._sent = set()  # the build asks for the tables it reads (``_answer``)
            self._built = w.build(self._key, self._spec, self._answer)
        try:
            return w.call(op, self._key, args, self._answer, self._built)
        except WorkerLost:
            self._built = 0
            raise

    def _versions(self) -> dict[str, int]:
        """The version of each reference table the worker holds: an older one is dropped
        there and asked for again."""
        return {name: self._refs.version(name) for name in self._sent}

    def _answer(self, kind: str, value: Any) -> Any:
        if kind == "reference":
            self._sent.add(value)
            return self._refs.version(value), self._refs.get(value)
        if kind == "model":
            return self._models.read(*value)
        raise HeadwaterError(f"a pipeline worker asked for {kind!r}, which the server lacks")


# the worker side ----------------------------------------------------------------------


def serve(conn: Connection, udf_modules: str) -> None:
    """A worker process's loop: build, run and forget pipelines as the server says."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the server stops us by closing the pipe
    try:
        from headwater.engine.udfs import load_modules

        load_modules(udf_modules)
    except Exception as exc:
        send_message(conn, ("failed", f"{type(exc).__name__}: {exc}"))
        return
    send_message(conn, ("ready", None))
    hosted: dict[int, tuple[Pipeline, WorkerReferences]] = {}
    while True:
        try:
            op, key, args = receive_message(conn)
        except (EOFError, OSError):
            return
        try:
            send_message(conn, ("ok", _run(conn, hosted, op, key, args)))
        except Exception as exc:
            send_message(conn, ("err", sendable(exc)))


def _run(
    conn: Connection, hosted: dict[int, tuple[Pipeline, WorkerReferences]], op: str, key: int,
    args: Any,
) -> Any:  # fmt: skip
    if op == "build":
        refs = WorkerReferences(conn)
        spec: EngineSpec = args
        pipeline = Pipeline(spec.plan, dict(spec.schemas), refs, ServerModels(conn))
        hosted[key] = (pipeline, refs)
        return None
    if op == "drop":
        hosted.pop(key, None)
        return None
    pipeline, refs = hosted[key]
    if op == "process":
        batch, now_ms, stream, versions = args
        refs.check(versions)
        return pipeline.process(batch, now_ms, stream)
    if op == "on_time":
        now_ms, want_status, versions = args
        refs.check(versions)
        return pipeline.on_time(now_ms), pipeline.status() if want_status else None
    if op == "snapshot":
        return pipeline.snapshot()
    if op == "restore":
        pipeline.restore(args)
        return None
    raise ValueError(f"unknown pipeline worker call {op!r}")


def _ask(conn: Connection, kind: str, value: Any) -> Any:
    """Ask the server (which is waiting on this worker's answer, so it listens)."""
    send_message(conn, (kind, value))
    answer, got = receive_message(conn)
    if answer == "err":
        raise got
    return got


class WorkerReferences:
    """The engine's ``ReferenceTables`` port in a worker: tables asked of the server once,
    kept until the server says their version changed."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._cache: dict[str, tuple[int, pa.Table]] = {}

    def check(self, versions: Mapping[str, int]) -> None:
        for name, version in versions.items():
            hit = self._cache.get(name)
            if hit is not None and hit[0] != version:
                del self._cache[name]

    def get(self, name: str) -> pa.Table:
        hit = self._cache.get(name)
        if hit is None:
            hit = self._cache[name] = _ask(self._conn, "reference", name)
        return hit[1]


class ServerModels:
    """The engine's ``Models`` port in a worker: the server says which version a call
    means (and pins it) and sends its ONNX bytes."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn

    def get(self, name: str, version: int | None) -> Model:
        version, data = _ask(self._conn, "model", (name, version))
        return OnnxModel.from_bytes(name, version, data)


if __name__ == "__main__":  # a worker process, started by ``Worker._start``
    serve(Connection(int(sys.argv[1])), sys.argv[2])
