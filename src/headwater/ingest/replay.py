"""Replay of quarantined rows (after a schema fix): each row is replayed at most once.

Only rows in state ``quarantined`` are taken. Replays of one stream take turns, and each
starts once the store has applied every earlier entry of the stream and of its
quarantine (so it sees the states earlier replays left). What a replay decides is
durable in the log before it answers, and the store applies it from there exactly once
(``headwater.ingest.quarantine`` explains how). So replaying a selection twice stores
nothing new, a row that fails again is updated in place, and a row without an event id
is stored once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pyarrow as pa

from headwater.errors import BadRequest, HeadwaterError, Overloaded
from headwater.ingest.batch import DecodeLimits, RowError, ValidatedBatch, decode_and_validate
from headwater.ingest.plan import arrow_schema_of
from headwater.ingest.quarantine import QUARANTINED, ReplayMarker, replay_meta, update_batch
from headwater.ingest.service import IngestService
from headwater.ingest.streams import StreamState, quarantine_table_of
from headwater.log.ports import AppendResult, Log
from headwater.model.time import Clock
from headwater.store.ports import ResultStore, is_truncated

MAX_OFFSETS = 10_000
MAX_ROWS = 100_000  # rows one replay takes; the answer says when more are left
GROUP_ROWS = 1_000  # rows decoded and appended together

CaughtUp = Callable[[str, int], Awaitable[bool]]


@dataclass(frozen=True, slots=True)
class Selection:
    """Quarantine rows by log offsets, or every row of a reason code."""

    offsets: list[int] | None = None
    code: str | None = None

    @classmethod
    def parse(cls, data: Any) -> Selection:
        hint = 'send {"offsets": [...]} or {"code": "..."}'
        if not isinstance(data, dict):
            raise BadRequest(hint, code="bad_replay")
        offsets, code = data.get("offsets"), data.get("code")
        if offsets is not None:
            if (
                not isinstance(offsets, list)
                or not offsets
                or not all(
                    isinstance(o, int) and not isinstance(o, bool) and 0 <= o < 1 << 63
                    for o in offsets
                )
            ):
                raise BadRequest(
                    "offsets must be a non-empty list of quarantine offsets (integers from 0)",
                    code="bad_replay",
                )
            if len(offsets) > MAX_OFFSETS:
                raise BadRequest(
                    f"{len(offsets)} offsets is over the {MAX_OFFSETS} one replay takes; split them",
                    code="bad_replay",
                )
            return cls(offsets=sorted(set(offsets)))
        if isinstance(code, str) and code:
            return cls(code=code)
        raise BadRequest(hint, code="bad_replay")

    def where(self) -> str:
        if self.offsets is not None:
            return f"_offset IN ({', '.join(str(int(o)) for o in self.offsets)})"
        assert self.code is not None
        return "code = '" + self.code.replace("'", "''") + "'"


class QuarantineReplay:
    def __init__(
        self,
        log: Log,
        store: ResultStore,
        ingest: IngestService,
        clock: Clock,
        limits: DecodeLimits,
        caught_up: CaughtUp,
    ) -> None:
        self._log, self._store, self._ingest = log, store, ingest
        self._clock, self._limits, self._caught_up = clock, limits, caught_up
        self._turns: dict[tuple[str, str], asyncio.Lock] = {}

    async def replay(self, st: StreamState, selection: Selection) -> dict[str, Any]:
        """Replay the selected rows still in quarantine; the answer counts what became of them."""
        turn = self._turns.setdefault((st.tenant, st.schema.name), asyncio.Lock())
        async with turn:
            await self._settled(st)
            rows, more = await asyncio.to_thread(self._select, st, selection)
            results = [await self._replay_group(st, fmt, g) for fmt, g in _groups(rows)]
        taken = {r["_offset"] for r in rows}
        skipped = [o for o in selection.offsets or [] if o not in taken]
        return {
            "replayed": len(rows),
            "accepted": sum(r["accepted"] for r in results),
            "rejected": sum(r["rejected"] for r in results),
            "duplicates": sum(r["duplicates"] for r in results),
            "skipped": skipped,  # asked for, but not (or no longer) in state quarantined
            "more": more,
            "results": results,
        }

    async def _settled(self, st: StreamState) -> None:
        for topic in (st.quarantine_topic, st.quarantine_updates_topic, st.topic):
            if not await self._caught_up(topic, self._log.end_offset(topic)):
                raise Overloaded(
                    f"the store has not applied the latest entries of {topic!r} yet; retry shortly",
                    retry_after_s=1.0,
                )

    def _select(self, st: StreamState, selection: Selection) -> tuple[list[dict[str, Any]], bool]:
        table = quarantine_table_of(st.schema.name)
        found = self._store.sql(
            st.tenant,
            f"SELECT _offset, raw, format, replay_attempts FROM {table}"
            f" WHERE state = '{QUARANTINED}' AND {selection.where()} ORDER BY _offset",
            max_rows=MAX_ROWS,
            timeout_s=600,
        )
        return found.to_pylist(), is_truncated(found)

    async def _replay_group(
        self, st: StreamState, fmt: str, group: list[dict[str, Any]]
    ) -> dict[str, Any]:
        now = self._clock.now_ms()
        batch = self._validate(st, fmt, group, now)
        valid, reserved, keep = self._ingest.dedup(st, batch, now)
        offsets = [int(r["_offset"]) for r in group]
        attempts = [int(r["replay_attempts"] or 0) + 1 for r in group]
        valid_rows = batch.valid_rows.to_numpy(zero_copy_only=False).astype(np.int64)
        kept = valid_rows if keep is None else valid_rows[keep]
        dups = [] if keep is None else valid_rows[~keep].tolist()
        stored: Awaitable[AppendResult] | None = None
        appends: list[Awaitable[AppendResult]] = []
        if valid.num_rows:
            marker = ReplayMarker([offsets[i] for i in kept], [attempts[i] for i in kept], now)
            stored = self._log.append(st.topic, valid, replay_meta(marker))
            appends.append(stored)
        changed: list[tuple[int, tuple[str | None, str, str] | None]]
        changed = [(e.row, (e.field, e.code, e.message)) for e in batch.errors]
        changed += [(i, None) for i in dups]
        if changed:
            update = update_batch(
                [offsets[i] for i, _ in changed], [e for _, e in changed],
                [attempts[i] for i, _ in changed], st.schema.version, now,
            )  # fmt: skip
            appends.append(self._log.append(st.quarantine_updates_topic, update))
        try:
            done = await asyncio.gather(*appends)
        except BaseException:
            if reserved is not None:
                reserved.release()  # a later replay of these rows is then no duplicate
            raise
        if reserved is not None:
            reserved.settle(done[0].offset + done[0].count if stored is not None else 0)
        self._ingest.count(st, [], valid.num_rows, len(dups), sum(len(r["raw"]) for r in group))
        at = done[0].offset if stored is not None else 0
        return {
            "offsets": offsets,
            "accepted": int(valid.num_rows),
            "rejected": len(batch.errors),
            "duplicates": len(dups),
            "stored": [{"offset": offsets[i], "stored_offset": at + j} for j, i in enumerate(kept)],
            "errors": [
                {"offset": offsets[e.row], "field": e.field, "code": e.code, "message": e.message}
                for e in batch.errors[: self._limits.max_errors]
            ],
        }

    def _validate(
        self, st: StreamState, fmt: str, group: list[dict[str, Any]], now: int
    ) -> ValidatedBatch:
        """The group decoded as one body; row by row when that does not give one row each."""
        try:
            batch = decode_and_validate(*_body(fmt, group), None, st.schema, self._limits, now)
            if batch.total_rows == len(group):
                return batch
        except HeadwaterError:
            pass  # one of the rows spoils the body: each is answered on its own
        valid: list[pa.Table] = []
        rows: list[int] = []
        errors: list[RowError] = []
        for i, r in enumerate(group):
            try:
                one = decode_and_validate(*_body(fmt, [r]), None, st.schema, self._limits, now)
            except HeadwaterError as exc:
                errors.append(RowError(i, None, exc.code, exc.message, r["raw"]))
                continue
            if one.total_rows != 1:
                message = f"the row's text holds {one.total_rows} rows, not one"
                errors.append(RowError(i, None, "malformed_row", message, r["raw"]))
                continue
            valid.append(one.valid)
            rows += [i] * one.valid.num_rows
            errors += [replace(e, row=i) for e in one.errors]
        table = pa.concat_tables(valid) if valid else arrow_schema_of(st.schema).empty_table()
        return ValidatedBatch(table, pa.array(rows, pa.int64()), errors, len(group))


def _groups(rows: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Rows that can share one body (JSON-ish rows, CSV rows by header), a bounded number."""
    groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for r in rows:
        fmt = "csv" if r["format"] == "csv" else "json"
        header = r["raw"].split("\n", 1)[0] if fmt == "csv" else ""
        groups.setdefault((fmt, header), []).append(r)
    for (fmt, _), group in groups.items():
        for i in range(0, len(group), GROUP_ROWS):
            yield fmt, group[i : i + GROUP_ROWS]


def _body(fmt: str, group: list[dict[str, Any]]) -> tuple[bytes, str]:
    if fmt == "csv":
        header = group[0]["raw"].split("\n", 1)[0]
        lines = [r["raw"].split("\n", 1)[1] if "\n" in r["raw"] else "" for r in group]
        return (header + "\n" + "\n".join(lines)).encode(), "text/csv"
    # One line per row: a row taken from a pretty-printed array may span lines.
    lines = [r["raw"].replace("\r", " ").replace("\n", " ") for r in group]
    return "\n".join(lines).encode(), "application/x-ndjson"
