"""Values the ingest path passes around: limits in, per-row verdicts out.

``DecodeLimits``, ``RowError`` and ``ValidatedBatch`` are the public contract
(re-exported by ``headwater.ingest.batch``). ``Decoded`` is the hand-off between a
decoder and the validator: typed columns plus what went wrong while reading them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import pyarrow as pa

from headwater.model.time import parse_duration_ms, parse_iso_ms
from headwater.settings import Settings

RowIndex = npt.NDArray[np.int64]


@dataclass(frozen=True)
class DecodeLimits:
    """Caps applied to one request body.

    ``max_body_bytes`` bounds the body after gzip inflation as well as before it.
    ``max_errors`` is not applied here (every rejected row is kept for quarantine); it
    is the cap on how many errors an answer lists.
    """

    max_body_bytes: int
    max_rows: int
    max_depth: int
    min_ts_ms: int
    max_future_ms: int
    max_errors: int
    pii_key: bytes = b""  # the secret of pii 'hash' fields (see ``ingest.pii``)
    max_gzip_members: int = 64
    rule_timeout_s: float = 2.0

    @classmethod
    def from_settings(cls, settings: Settings) -> DecodeLimits:
        return cls(
            max_body_bytes=settings.max_body_bytes,
            max_rows=settings.max_rows_per_request,
            max_depth=settings.max_json_depth,
            min_ts_ms=parse_iso_ms(settings.timestamp_min),
            max_future_ms=parse_duration_ms(settings.timestamp_max_future),
            max_errors=settings.max_errors_reported,
            max_gzip_members=settings.max_gzip_members,
            rule_timeout_s=settings.rule_timeout_s,
        )


@dataclass(frozen=True)
class RowError:
    """One rejected row: where, which field, a stable code, a fix-it message, its raw text."""

    row: int
    field: str | None
    code: str
    message: str
    raw: str


@dataclass(frozen=True)
class ValidatedBatch:
    """The outcome of one request body.

    ``valid`` has exactly the stream's fields, typed per ``ARROW_TYPES``, in schema
    order; ``valid_rows[i]`` is the request row index of ``valid`` row ``i``.
    ``errors`` lists every rejected row once, in row order.
    """

    valid: pa.Table
    valid_rows: pa.Array
    errors: list[RowError]
    total_rows: int

    @property
    def accepted(self) -> int:
        return int(self.valid.num_rows)

    @property
    def rejected(self) -> int:
        return len(self.errors)


@dataclass(frozen=True)
class CellError:
    """A value that could not become its field's type; ``pos`` indexes the decoded columns."""

    pos: int
    code: str
    message: str


@dataclass(frozen=True)
class Problem:
    """A row rejected before its fields could be read (malformed, not an object, too deep)."""

    row: int
    code: str
    message: str
    field: str | None = None


@dataclass
class Decoded:
    """What a decoder hands to validation.

    ``columns[k]`` is schema field ``k``, typed per ``ARROW_TYPES``, with one entry per
    decoded row (null where the cell failed, see ``cell_errors[k]``). ``rows[p]`` is
    the request row index of position ``p``. ``problems`` are rows that never made it
    into the columns. ``raw(i)`` gives request row ``i``'s text; it is only called for
    rejected rows, so decoders may compute it lazily.
    """

    columns: list[pa.Array]
    cell_errors: list[list[CellError]]
    rows: RowIndex
    problems: list[Problem]
    total_rows: int
    raw: Callable[[int], str]
