"""Idempotency-Key handling: a retried request gets the first answer back.

Answers are recorded in the ``meta`` of the log entries written by the request, so
the record is durable exactly when the rows are. Recent answers are held in memory;
older ones are copied to an ``AnswerFile`` in the background (``ingest/answers.py``)
and looked up there.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec

from headwater.errors import Conflict

if TYPE_CHECKING:
    from headwater.ingest.answers import AnswerFile


class IdemRecord(msgspec.Struct, frozen=True):
    key: str
    body_sha256: str
    answer: bytes
    at_ms: int


def records_of(meta: bytes) -> list[IdemRecord]:
    """The answers a log entry's ``meta`` holds: one (a request alone) or a list (a group)."""
    found = msgspec.msgpack.decode(meta, type=IdemRecord | list[IdemRecord])
    return found if isinstance(found, list) else [found]


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


@dataclass
class _Pending:
    body_sha256: str
    done: asyncio.Future[bytes]


class IdempotencyKeys:
    """Answers by (tenant, stream, key); keys expire after ``ttl_ms``.

    With a ``disk``, an answer leaves memory once it is copied there (``forget_copied``)
    and a lookup that misses memory asks the disk.
    """

    def __init__(self, ttl_ms: int, disk: AnswerFile | None = None) -> None:
        self._ttl_ms = ttl_ms
        self.disk = disk
        self._answers: dict[tuple[str, str, str], IdemRecord] = {}
        self._pending: dict[tuple[str, str, str], _Pending] = {}
        self._lock = threading.Lock()  # the housekeeping thread prunes ``_answers``

    def __len__(self) -> int:
        """Answers held in memory."""
        return len(self._answers)

    def remember(self, tenant: str, stream: str, rec: IdemRecord) -> None:
        with self._lock:
            self._answers[(tenant, stream, rec.key)] = rec

    def forget_copied(self, copied: list[tuple[str, str, IdemRecord]]) -> None:
        """Drop from memory the answers now on disk (unless a newer one replaced them)."""
        with self._lock:
            for tenant, stream, rec in copied:
                k = (tenant, stream, rec.key)
                if self._answers.get(k) == rec:
                    del self._answers[k]

    def _lookup(self, k: tuple[str, str, str]) -> IdemRecord | None:
        rec = self._answers.get(k)
        if rec is None and self.disk is not None:
            rec = self.disk.get(*k)
        return rec

    async def begin(
        self, tenant: str, stream: str, key: str, digest: str, now_ms: int
    ) -> bytes | None:
        """Return the recorded answer for a retry, or None when this request must run.

        Raises Conflict when the key was used with a different body.
        """
        k = (tenant, stream, key)
        rec = self._lookup(k)
        if rec is not None and now_ms - rec.at_ms <= self._ttl_ms:
            if rec.body_sha256 != digest:
                raise Conflict(
                    "this Idempotency-Key was already used with a different body; "
                    "use a new key for a new request",
                    code="idempotency_key_reused",
                )
            return rec.answer
        pending = self._pending.get(k)
        if pending is not None:
            if pending.body_sha256 != digest:
                raise Conflict(
                    "a request with this Idempotency-Key and a different body is in progress",
                    code="idempotency_key_reused",
                )
            return await asyncio.shield(pending.done)
        self._pending[k] = _Pending(digest, asyncio.get_running_loop().create_future())
        return None

    def finish(self, tenant: str, stream: str, rec: IdemRecord | None, key: str) -> None:
        """Record the answer (None: the request failed; a retry will run again)."""
        k = (tenant, stream, key)
        pending = self._pending.pop(k, None)
        if rec is not None:
            with self._lock:
                self._answers[k] = rec
        if pending is not None and not pending.done.done():
            if rec is not None:
                pending.done.set_result(rec.answer)
            else:
                pending.done.set_exception(
                    Conflict(
                        "the first request with this key failed; retry it", code="idempotency_retry"
                    )
                )
                pending.done.exception()  # mark retrieved: nobody may be waiting

    def expire(self, now_ms: int) -> int:
        """Forget answers older than the TTL, in memory and on disk; return how many."""
        with self._lock:
            old = [k for k, r in self._answers.items() if now_ms - r.at_ms > self._ttl_ms]
            for k in old:
                del self._answers[k]
        on_disk = self.disk.expire(now_ms - self._ttl_ms) if self.disk is not None else 0
        return len(old) + on_disk
