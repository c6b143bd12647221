"""Names of a tenant's objects and the store tables each one occupies.

A stream ``s`` occupies the tables ``s`` and ``quarantine__s``; a pipeline ``p`` the
tables ``p``, ``p_late`` and ``p_errors``; a reference table ``r`` the table ``r``; a
sink ``k`` its dead-letter table ``k_dlq``. No two objects of a tenant may ever share
a table, so a new object is refused when any table it needs is one another object
occupies — compared as SQL compares names (ASCII case ignored). Names starting with
``_`` (the store's own) or ``quarantine__`` are reserved for the system.

>>> tables_of("pipeline", "minute")
['minute', 'minute_late', 'minute_errors']
>>> check_free("stream", "minute_late", {"minute", "minute_late", "minute_errors"})
Traceback (most recent call last):
...
headwater.errors.Conflict: stream 'minute_late' needs the table 'minute_late', which another stream, pipeline or table of this tenant already uses; choose another name
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Literal

from headwater.errors import BadRequest, Conflict

Kind = Literal["stream", "pipeline", "reference", "sink"]

QUARANTINE_PREFIX = "quarantine__"
RESERVED_PREFIXES = ("_", QUARANTINE_PREFIX)
LATE_SUFFIX = "_late"
ERRORS_SUFFIX = "_errors"
DLQ_SUFFIX = "_dlq"


def tables_of(kind: Kind, name: str) -> list[str]:
    """The store tables an object named ``name`` of ``kind`` occupies."""
    if kind == "stream":
        return [name, QUARANTINE_PREFIX + name]
    if kind == "pipeline":
        return [name, name + LATE_SUFFIX, name + ERRORS_SUFFIX]
    if kind == "sink":
        return [name + DLQ_SUFFIX]
    return [name]


def check_reserved(kind: Kind, name: str) -> None:
    """Refuse a name the system keeps for its own tables."""
    if name.lower().startswith(RESERVED_PREFIXES):
        raise BadRequest(
            f"{_label(kind)} name {name!r} is reserved: names starting with "
            f"{' or '.join(repr(p) for p in RESERVED_PREFIXES)} are the system's; choose another",
            code="reserved_name",
        )


def check_free(kind: Kind, name: str, taken: Iterable[str]) -> None:
    """Refuse ``name`` if it is reserved or a table it needs is already in ``taken``."""
    check_reserved(kind, name)
    used = {t.lower() for t in taken}
    for table in tables_of(kind, name):
        if table.lower() in used:
            raise Conflict(
                f"{_label(kind)} {name!r} needs the table {table!r}, which another stream, "
                "pipeline or table of this tenant already uses; choose another name",
                code="name_taken",
            )


def _label(kind: Kind) -> str:
    return "reference table" if kind == "reference" else kind
