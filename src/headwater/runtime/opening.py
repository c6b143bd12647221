"""Opening a data dir: the catalog, the store, the answer file and the log, then the
in-memory indexes rebuilt from what they hold.

Each part is opened through ``datadir`` so that a damaged file stops the start with what
is at stake, and the log refuses to start below an offset any consumer committed.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import structlog

from headwater.catalog.sqlite import Catalog
from headwater.datadir import committed_offsets, open_part, open_sqlite_part
from headwater.errors import NotFound
from headwater.ingest.answers import AnswerFile, answer_topics, read_answers
from headwater.ingest.dedup import IdIndex
from headwater.ingest.idempotency import IdempotencyKeys
from headwater.ingest.idspill import replay_tail
from headwater.ingest.streams import StreamDirectory, StreamState
from headwater.log.file import FileLog
from headwater.log.ports import Log, LogCorrupted
from headwater.model.schema import StreamSchema
from headwater.model.time import Clock
from headwater.settings import Settings
from headwater.store.duckdb import DuckDBStore
from headwater.store.duckdb_migrate import migrate_shared_store
from headwater.store.ports import ResultStore

log = structlog.get_logger("headwater")

DEFAULT_TENANT = "default"


def open_catalog(settings: Settings) -> Catalog:
    return open_sqlite_part(
        "catalog", settings.catalog_path, lambda: Catalog(settings.catalog_path)
    )


def open_store(settings: Settings) -> DuckDBStore:
    open_part(
        "store",
        settings.legacy_store_path,
        lambda: migrate_shared_store(
            settings.legacy_store_path,
            settings.store_dir,
            memory_limit=settings.duckdb_memory_limit,
        ),
    )
    return open_part(
        "store",
        settings.store_dir,
        lambda: DuckDBStore(
            settings.store_dir,
            memory_limit=settings.duckdb_memory_limit,
            threads=settings.duckdb_threads,
            tenant_memory_limit=settings.duckdb_tenant_memory_limit,
        ),
    )


def open_answers(settings: Settings) -> AnswerFile:
    return open_sqlite_part(
        "answers", settings.answers_path, lambda: AnswerFile(settings.answers_path)
    )


def open_log(settings: Settings, store: ResultStore, answers: AnswerFile) -> FileLog:
    """The log refuses to start below an offset any consumer committed (see log.recovery)."""
    try:
        return FileLog(
            settings.log_dir,
            segment_bytes=settings.log_segment_bytes,
            fsync=settings.fsync,
            committed=committed_offsets(store, answers),
        )
    except LogCorrupted as exc:
        text = exc.message.replace("<dir>", str(settings.data_dir))
        raise LogCorrupted(text, **exc.details) from None


def pii_key(settings: Settings) -> bytes:
    """The secret of pii 'hash' fields: made once, kept in the data dir (owner-only)."""
    path = settings.data_dir / "pii.key"
    if not path.exists():
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(secrets.token_bytes(32))
            fh.flush()
            os.fsync(fh.fileno())
    key = path.read_bytes()
    if len(key) != 32:
        raise RuntimeError(
            f"{path} is damaged ({len(key)} bytes, not 32): restore it from a backup; "
            "without it, new pii 'hash' values no longer match the stored ones"
        )
    return key


def bootstrap(catalog: Catalog, settings: Settings, clock: Clock) -> str | None:
    """First start: the default tenant and an admin key. Returns the new secret, if any."""
    catalog.ensure_tenant(DEFAULT_TENANT, clock.now_ms())
    if catalog.has_any_key():
        if settings.bootstrap_key and catalog.key_by_secret(settings.bootstrap_key) is None:
            catalog.create_key(
                DEFAULT_TENANT, "admin", clock.now_ms(), "bootstrap", settings.bootstrap_key
            )
        return None
    secret = settings.bootstrap_key or "hw_" + secrets.token_urlsafe(32)
    catalog.create_key(DEFAULT_TENANT, "admin", clock.now_ms(), "bootstrap", secret)
    return secret


def id_indexes(settings: Settings) -> Callable[[str, StreamSchema], IdIndex]:
    """Each id-bearing stream's event-id index: hot in memory, runs and filter on disk."""

    def make(tenant: str, schema: StreamSchema) -> IdIndex:
        if schema.id is None:
            return IdIndex()
        directory = settings.data_dir / "ids" / f"{tenant}.{schema.name}"
        opening = functools.partial(
            IdIndex.on_disk,
            directory,
            settings.id_filter_bytes,
            spill_ids=settings.id_spill_ids,
            hot_max_ids=settings.id_hot_max_ids,
        )
        try:
            return opening()
        except (OSError, ValueError, KeyError, TypeError) as exc:
            # The index is derived data: set it aside and rebuild it from the store and
            # the log (``_recover_ids``), which hold every id it held.
            aside = directory.with_name(f"{directory.name}.damaged-{int(time.time())}")
            directory.rename(aside)
            log.warning("id_index_damaged", directory=str(directory), moved_to=str(aside),
                        error=repr(exc))  # fmt: skip
            return opening()

    return make


def recover(
    streams: StreamDirectory, keys: IdempotencyKeys, log_: Log, store: ResultStore,
    now_ms: int, ttl_ms: int,
) -> None:  # fmt: skip
    """Rebuild in-memory indexes from the answer file and the log tail.

    Only the log's tail is read: entries whose event ids are not yet in the stream's
    on-disk id runs, and entries whose idempotency answers are not yet in the answer file.
    """
    on_disk = keys.disk.progress() if keys.disk is not None else {}
    for st in streams.all():
        if st.schema.id is not None:
            _recover_ids(st, log_, store)
        for topic in answer_topics(st):  # answers not yet copied to the answer file
            found, _ = read_answers(log_, st, topic, on_disk.get(topic, 0))
            for _, _, rec in found:
                if now_ms - rec.at_ms <= ttl_ms:
                    keys.remember(st.tenant, st.schema.name, rec)
    log.info("recovered", streams=len(streams.all()))


def _recover_ids(st: StreamState, log_: Log, store: ResultStore) -> None:
    ids, runs = st.ids, st.ids.runs
    if runs is None:
        return
    if not runs.exists:  # the first start with on-disk ids: take the store's, once
        try:
            stored = store.id_hashes(st.tenant, st.schema.name, None)
        except NotFound:  # the store was lost: it is rebuilt from the log, ids with it
            stored = pa.array([], pa.uint64())
        stored_np = np.unique(stored.to_numpy(zero_copy_only=False).astype(np.uint64))
        materialized = store.consumer_offsets(st.tenant, f"materialize:{st.schema.name}")
        runs.add(stored_np, covered=materialized.get(st.topic, 0))
        if ids.filter is not None:
            ids.filter.add(stored_np)
        log.info("id_index_built", stream=st.schema.name, ids=int(stored_np.size))
    replay_tail(ids, st.topic, log_)
