"""Stream schemas: typed fields, constraints, cross-field rules, versions.

A schema is configuration: a frozen value that can be compared (``check_evolution``)
and turned into an Arrow schema (``arrow_schema``). Validation lives in ``ingest``.
"""

from __future__ import annotations

import re
from typing import Any, Literal

import msgspec
import pyarrow as pa

from headwater.errors import IncompatibleSchema, InvalidSchema

FieldType = Literal["string", "int", "float", "bool", "timestamp", "json"]
TimeUnit = Literal["iso", "s", "ms", "us"]
Pii = Literal["mask", "hash", "drop"]

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RESERVED_PREFIX = "_"

ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "int": pa.int64(),
    "float": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("ms", tz="UTC"),
    "json": pa.string(),
}

# Widening a type is a compatible change; anything else that changes a type is not.
WIDENINGS = {("int", "float"), ("int", "string"), ("float", "string"), ("bool", "string")}


class Field(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    name: str
    type: FieldType
    required: bool = False
    min: float | None = None
    max: float | None = None
    enum: list[str] | None = None
    regex: str | None = None
    max_length: int | None = None
    unit: TimeUnit = "iso"
    description: str | None = None
    pii: Pii | None = None  # applied at ingest: stored rows and quarantine never hold the value


class Rule(msgspec.Struct, frozen=True, omit_defaults=True, forbid_unknown_fields=True):
    """A cross-field rule: a SQL boolean expression each row must satisfy.

    Rows where the expression is NULL (a field missing) pass; add ``required`` for that.
    """

    expr: str
    code: str = "rule_violated"
    message: str | None = None


class StreamSchema(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    fields: list[Field]
    event_time: str | None = None
    key: list[str] = []
    id: str | None = None
    rules: list[Rule] = []
    allow_missing_event_time: bool = False
    dedup_horizon: str | None = None  # None: ids are remembered for as long as rows are kept
    retention: str | None = None
    subject: str | None = None  # the field naming a data subject, for erasure requests
    description: str | None = None
    version: int = 1

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise KeyError(name)

    @property
    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


def arrow_schema(schema: StreamSchema) -> pa.Schema:
    """The Arrow schema of a stream's validated rows (user fields only)."""
    return pa.schema([pa.field(f.name, ARROW_TYPES[f.type]) for f in schema.fields])


def check_schema(schema: StreamSchema) -> None:
    """Refuse a schema that cannot work, saying which part and why."""
    if not NAME_RE.match(schema.name):
        raise InvalidSchema(
            f"stream name {schema.name!r} is not valid: use letters, digits and '_', "
            "starting with a letter, at most 63 characters"
        )
    if not schema.fields:
        raise InvalidSchema("a stream needs at least one field")
    seen: set[str] = set()
    for f in schema.fields:
        if not NAME_RE.match(f.name) or f.name.startswith(RESERVED_PREFIX):
            raise InvalidSchema(
                f"field name {f.name!r} is not valid: use letters, digits and '_', "
                "not starting with '_' (reserved for system columns)"
            )
        if f.name.lower() in seen:
            raise InvalidSchema(f"field {f.name!r} appears twice")
        seen.add(f.name.lower())
        if (f.min is not None or f.max is not None) and f.type not in ("int", "float"):
            raise InvalidSchema(f"field {f.name!r}: min/max apply to int and float fields")
        if f.min is not None and f.max is not None and f.min > f.max:
            raise InvalidSchema(f"field {f.name!r}: min {f.min} is above max {f.max}")
        if (
            f.enum is not None or f.regex is not None or f.max_length is not None
        ) and f.type != "string":
            raise InvalidSchema(f"field {f.name!r}: enum/regex/max_length apply to string fields")
        if f.regex is not None:
            try:
                re.compile(f.regex)
            except re.error as exc:
                raise InvalidSchema(f"field {f.name!r}: regex does not compile: {exc}") from exc
        if f.unit != "iso" and f.type != "timestamp":
            raise InvalidSchema(f"field {f.name!r}: unit applies to timestamp fields")
        if f.pii in ("mask", "hash") and f.type != "string":
            raise InvalidSchema(
                f"field {f.name!r}: pii {f.pii!r} applies to string fields; use 'drop' for others"
            )
    names = {f.name: f for f in schema.fields}
    if schema.event_time is not None:
        if schema.event_time not in names:
            raise InvalidSchema(f"event_time {schema.event_time!r} is not a field of the stream")
        if names[schema.event_time].type != "timestamp":
            raise InvalidSchema(f"event_time {schema.event_time!r} must be a timestamp field")
    for k in schema.key:
        if k not in names:
            raise InvalidSchema(f"key field {k!r} is not a field of the stream")
    keyed = {"key": schema.key, "id": [schema.id] if schema.id else [], "event_time": [
        schema.event_time] if schema.event_time else []}  # fmt: skip
    for role, fields_ in keyed.items():
        for k in fields_:
            if k in names and names[k].pii in ("mask", "drop"):
                raise InvalidSchema(
                    f"field {k!r} is the stream's {role}, so it cannot be pii {names[k].pii!r} "
                    "(the value is needed); use pii 'hash' to keep it usable but unreadable"
                )
    if schema.subject is not None:
        if schema.subject not in names:
            raise InvalidSchema(f"subject {schema.subject!r} is not a field of the stream")
        if names[schema.subject].type not in ("string", "int"):
            raise InvalidSchema(f"subject field {schema.subject!r} must be a string or int field")
        if names[schema.subject].pii in ("mask", "drop"):
            raise InvalidSchema(
                f"subject field {schema.subject!r} cannot be pii "
                f"{names[schema.subject].pii!r}: erasure finds a subject's rows by its value"
            )
    if schema.id is not None:
        if schema.id not in names:
            raise InvalidSchema(f"id field {schema.id!r} is not a field of the stream")
        if names[schema.id].type not in ("string", "int"):
            raise InvalidSchema(f"id field {schema.id!r} must be a string or int field")
    from headwater.model.time import parse_duration_ms

    for label, value in (("dedup_horizon", schema.dedup_horizon), ("retention", schema.retention)):
        if value is not None:
            try:
                parse_duration_ms(value)
            except ValueError as exc:
                raise InvalidSchema(f"{label}: {exc}") from exc


def check_evolution(old: StreamSchema, new: StreamSchema) -> list[str]:
    """Return the list of changes if ``new`` may replace ``old`` live; raise if not.

    Compatible: new optional fields, widened types, looser or changed constraints,
    new rules. Incompatible: removed fields, narrowed types, newly required fields,
    a different event-time, key or id field.
    """
    problems: list[str] = []
    changes: list[str] = []
    old_fields = {f.name: f for f in old.fields}
    new_fields = {f.name: f for f in new.fields}
    for name, f in old_fields.items():
        if name not in new_fields:
            problems.append(f"field {name!r} was removed (stored rows and pipelines use it)")
            continue
        nf = new_fields[name]
        if nf.type != f.type:
            if (f.type, nf.type) in WIDENINGS:
                changes.append(f"field {name!r} widened from {f.type} to {nf.type}")
            else:
                problems.append(
                    f"field {name!r} changes type {f.type} -> {nf.type}, which is not a widening"
                )
        if nf.required and not f.required:
            problems.append(f"field {name!r} becomes required (earlier rows may lack it)")
        if nf.unit != f.unit and nf.type == "timestamp" and f.type == "timestamp":
            problems.append(f"field {name!r} changes its time unit {f.unit} -> {nf.unit}")
    for name, nf in new_fields.items():
        if name not in old_fields:
            if nf.required:
                problems.append(f"new field {name!r} is required; new fields must be optional")
            else:
                changes.append(f"new optional field {name!r}")
    for attr in ("event_time", "key", "id"):
        if getattr(old, attr) != getattr(new, attr):
            problems.append(f"{attr} changes from {getattr(old, attr)!r} to {getattr(new, attr)!r}")
    if problems:
        raise IncompatibleSchema(
            "schema change refused: "
            + "; ".join(problems)
            + ". Create a new stream for an incompatible shape.",
            problems=problems,
        )
    return changes


def schema_from_dict(data: dict[str, Any]) -> StreamSchema:
    try:
        return msgspec.convert(data, StreamSchema)
    except msgspec.ValidationError as exc:
        raise InvalidSchema(f"stream definition is not valid: {exc}") from exc


def schema_to_dict(schema: StreamSchema) -> dict[str, Any]:
    out: dict[str, Any] = msgspec.to_builtins(schema)
    return out
