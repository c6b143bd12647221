"""Per-schema objects built once and reused by every request of a stream.

A stream's schema object lives as long as its version is current, so what the
ingest path derives from it (Arrow schemas, typed decoders, compiled checks) is
memoized by the schema object's identity: a dictionary lookup per request instead of
encoding the schema to find its cache entry. The cache holds the schema itself, so
an identity is never reused while its entry is alive. Schemas are frozen values;
code that needs a different schema builds a new one (``msgspec.structs.replace``).

>>> from headwater.model.schema import schema_from_dict
>>> schema = schema_from_dict({"name": "s", "fields": [{"name": "x", "type": "int"}]})
>>> arrow_schema_of(schema) is arrow_schema_of(schema)
True
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pyarrow as pa

from headwater.model.schema import StreamSchema, arrow_schema

T = TypeVar("T")
MAX_SCHEMAS = 256


def per_schema(build: Callable[[StreamSchema], T]) -> Callable[[StreamSchema], T]:
    """Memoize ``build(schema)`` by the identity of ``schema``."""
    cache: dict[int, tuple[StreamSchema, T]] = {}
    lock = threading.Lock()

    def get(schema: StreamSchema) -> T:
        hit = cache.get(id(schema))
        if hit is not None and hit[0] is schema:
            return hit[1]
        value = build(schema)
        with lock:
            if len(cache) >= MAX_SCHEMAS:
                cache.clear()
            cache[id(schema)] = (schema, value)
        return value

    get.__doc__ = build.__doc__
    return get


arrow_schema_of: Callable[[StreamSchema], pa.Schema] = per_schema(arrow_schema)
