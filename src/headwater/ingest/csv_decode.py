"""CSV bodies to typed columns.

The header row names the columns; columns the stream does not know are ignored,
fields with no column are null. Arrow's CSV reader splits the body (quoted cells
may hold commas, quotes and newlines) and reads every cell as text; each column is
then parsed by its field's type with one Arrow cast, cells that do not parse being
found by bisection (``cells.cast_or_null``). Empty cells are null. A row with the
wrong number of cells is a row error (``malformed_csv``); blank lines are skipped.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from headwater.errors import BadRequest
from headwater.ingest.body import as_text, too_many_rows
from headwater.ingest.convert import from_text
from headwater.ingest.model import Decoded, DecodeLimits, Problem
from headwater.model.schema import ARROW_TYPES, StreamSchema

BLOCK_BYTES = 4 << 20


def decode_csv(data: bytes, schema: StreamSchema, limits: DecodeLimits) -> Decoded:
    """Decode a CSV body with a header row."""
    data = as_text(data)
    header = _header(data)
    known = [name for name in schema.field_names if name in header]
    if not known:
        raise malformed_csv(
            f"the header row ({', '.join(header[:8])}) names none of the stream's fields "
            f"({', '.join(schema.field_names)}); start the body with a header row"
        )
    twice = sorted({name for name in known if header.count(name) > 1})
    if twice:
        raise malformed_csv(
            f"the header names {', '.join(twice)} more than once; keep one column each"
        )
    invalid: list[pacsv.InvalidRow] = []
    table = _table(data, header, known, invalid)
    total = table.num_rows + len(invalid)
    if total > limits.max_rows:
        raise too_many_rows(total, limits.max_rows)
    # Invalid rows are numbered among records, the header being record 1.
    skipped = [row.number - 2 for row in invalid]
    problems = [
        Problem(
            row.number - 2,
            "malformed_csv",
            f"the row has {row.actual_columns} cells but the header has {row.expected_columns}; "
            "quote cells that hold commas",
        )
        for row in invalid
    ]
    columns, errors = [], []
    for f in schema.fields:
        if f.name in known:
            column, cell_errors = from_text(table[f.name].combine_chunks(), f, limits.max_depth)
        else:
            column, cell_errors = pa.nulls(table.num_rows, type=ARROW_TYPES[f.type]), []
        columns.append(column)
        errors.append(cell_errors)
    rows = np.delete(np.arange(total, dtype=np.int64), skipped)
    return Decoded(columns, errors, rows, problems, total, _record_text(data))


def malformed_csv(message: str) -> BadRequest:
    return BadRequest(message, code="malformed_csv")


def _header(data: bytes) -> list[str]:
    try:
        first = next(csv.reader(io.StringIO(data.decode(), newline="")), [])
    except csv.Error as exc:
        raise malformed_csv(f"the header row cannot be read ({exc}); check its quoting") from exc
    return [name.strip() for name in first]


def _table(
    data: bytes, header: list[str], known: list[str], invalid: list[pacsv.InvalidRow]
) -> pa.Table:
    def skip(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "skip"

    try:
        return pacsv.read_csv(
            io.BytesIO(data),
            # Names come from the header as read above, so ' ts ' still names ts.
            read_options=pacsv.ReadOptions(
                use_threads=False,
                block_size=max(BLOCK_BYTES, len(data) + 1),
                column_names=header,
                skip_rows=1,
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=True, invalid_row_handler=skip),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in known},
                include_columns=known,
                include_missing_columns=True,
                null_values=[""],
                strings_can_be_null=True,
                quoted_strings_can_be_null=True,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowKeyError, UnicodeError) as exc:
        raise malformed_csv(f"the body cannot be read as CSV ({exc}); check its quoting") from exc


def _record_text(data: bytes) -> Callable[[int], str]:
    """Raw text of data record ``i``, found by re-reading the body only when asked."""
    records: list[list[str]] = []

    def text(i: int) -> str:
        if not records:
            records.append(_records(data.decode()))
        return records[0][i] if i < len(records[0]) else ""

    return text


def _records(text: str) -> list[str]:
    lines = io.StringIO(text, newline="").readlines()
    reader = csv.reader(lines)
    out: list[str] = []
    consumed = 0
    try:
        for record in reader:
            if record:
                out.append("".join(lines[consumed : reader.line_num]).rstrip("\r\n"))
            consumed = reader.line_num
    except csv.Error:
        # Past a cell Python's reader refuses, fall back to physical lines.
        out.extend(line.rstrip("\r\n") for line in lines[consumed:] if line.strip("\r\n"))
    return out[1:]
