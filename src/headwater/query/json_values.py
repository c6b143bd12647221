"""JSON of query answers: the values DuckDB and Arrow hand back, as every answer renders
them (the HTTP API, live feeds)."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

import orjson

JSON_OPTS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC | orjson.OPT_SERIALIZE_NUMPY


def dumps_json(content: Any) -> bytes:
    """The JSON bytes of ``content`` as every answer renders them."""
    return orjson.dumps(content, option=JSON_OPTS, default=json_default)


def json_default(obj: Any) -> Any:
    """JSON for the values DuckDB and Arrow hand back beyond orjson's own types."""
    if isinstance(obj, bytes):
        return obj.decode("utf-8", "replace")
    if isinstance(obj, Decimal):
        if obj != obj.to_integral_value():
            return float(obj)
        # JSON numbers past 64 bits lose digits in most parsers: send those as exact text
        return int(obj) if abs(obj) < 2**63 else str(obj)
    if isinstance(obj, datetime | date | time):
        return obj.isoformat()
    if isinstance(obj, timedelta):
        return obj.total_seconds()
    if isinstance(obj, set | frozenset):
        return list(obj)
    return str(obj)
