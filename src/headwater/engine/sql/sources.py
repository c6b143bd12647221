"""The FROM clause of a pipeline: one stream, maybe windowed or deduplicated, maybe
joined with reference tables.

Accepted forms (``r`` / ``d`` are optional aliases)::

    FROM readings r
    FROM TUMBLE(readings, ts, INTERVAL '1 minute')
    FROM HOP(readings, ts, INTERVAL '10 seconds', INTERVAL '1 minute')   -- slide, size
    FROM SESSION(readings, ts, INTERVAL '30 seconds')                    -- gap
    FROM DEDUP(readings, event_id, ts, INTERVAL '1 hour')                -- id, time, horizon
    FROM TUMBLE(DEDUP(readings, event_id, ts, INTERVAL '1 hour'), ts, INTERVAL '1 minute')
    FROM readings r [LEFT] JOIN devices d ON r.device_id = d.device_id   -- or USING (...)

``DEDUP`` lets the first row of each id through and drops the others that arrive
while the id is remembered (until the watermark passes its event time + horizon).
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlglot import exp

from headwater.engine.plan import DedupSpec, JoinSpec, WindowSpec
from headwater.engine.sql.text import SESSION_ALIAS, node_offset, unsupported
from headwater.model.time import parse_duration_ms

FUNCTIONS = {"TUMBLE": 3, "HOP": 4, SESSION_ALIAS: 3, "DEDUP": 4}
SHAPES = {
    "TUMBLE": "TUMBLE(stream, time_column, INTERVAL size)",
    "HOP": "HOP(stream, time_column, INTERVAL slide, INTERVAL size)",
    SESSION_ALIAS: "SESSION(stream, time_column, INTERVAL gap)",
    "DEDUP": "DEDUP(stream, id_column, time_column, INTERVAL horizon)",
}


# SQL words for the parser's names of what may follow a table or stand in FROM
TABLE_CLAUSES = {
    "sample": "TABLESAMPLE",
    "pivots": "PIVOT / UNPIVOT",
    "version": "FOR SYSTEM_TIME AS OF",
    "system_time": "FOR SYSTEM_TIME",
    "laterals": "LATERAL",
    "joins": "JOIN",
    "ordinality": "WITH ORDINALITY",
    "only": "ONLY",
    "partition": "PARTITION",
    "changes": "CHANGES",
    "rows_from": "ROWS FROM",
    "indexed": "INDEXED BY",
    "hints": "table hints",
}
FROM_ITEMS = {"values": "VALUES", "unnest": "unnest()", "pivot": "PIVOT"}


@dataclass(frozen=True, slots=True)
class Source:
    stream: str
    alias: str
    window: WindowSpec | None
    dedup: DedupSpec | None
    joins: tuple[JoinSpec, ...]


def read_source(select: exp.Select, sql: str, streams: Collection[str]) -> Source:
    from_ = select.args.get("from_")
    if from_ is None:
        raise unsupported("SELECT without FROM", sql, node_offset(select), "read from a stream")
    table = from_.this
    if not isinstance(table, exp.Table):
        item = FROM_ITEMS.get(table.key, "anything but a stream")
        what = "subquery in FROM" if isinstance(table, exp.Subquery) else f"FROM {item}"
        raise unsupported(what, sql, node_offset(table), "read one stream, windowed or not")
    _plain_table(table, sql)
    window: WindowSpec | None = None
    dedup: DedupSpec | None = None
    inner = table.this
    if isinstance(inner, exp.Identifier):
        stream = inner.name
    else:
        stream, window, dedup = _table_function(inner, sql, nested=False)
    joins = tuple(_join(j, stream, sql, streams) for j in select.args.get("joins") or [])
    return Source(stream, table.alias or stream, window, dedup, joins)


def _plain_table(table: exp.Table, sql: str) -> None:
    if table.args.get("db") or table.args.get("catalog"):
        raise unsupported("qualified table name", sql, node_offset(table), "name the stream alone")
    for key, value in table.args.items():
        if value and key not in ("this", "alias"):
            what = TABLE_CLAUSES.get(key, "this table clause")
            raise unsupported(f"{what} on a table", sql, node_offset(table), "drop it")


def _table_function(
    func: exp.Expr, sql: str, nested: bool
) -> tuple[str, WindowSpec | None, DedupSpec | None]:
    name = _name(func)
    if name not in FUNCTIONS or (nested and name != "DEDUP"):
        shown = "SESSION" if name == SESSION_ALIAS else name
        hint = (
            "the stream of a window may be DEDUP(...)"
            if nested
            else "use " + ", ".join(s for s in SHAPES.values())
        )
        raise unsupported(f"table function {shown}", sql, node_offset(func), hint)
    args = list(func.expressions)
    if len(args) != FUNCTIONS[name]:
        raise unsupported(
            f"{name.replace(SESSION_ALIAS, 'SESSION')} with {len(args)} arguments",
            sql,
            node_offset(func),
            f"write {SHAPES[name]}",
        )
    dedup: DedupSpec | None = None
    first = args[0]
    if isinstance(first, exp.Column) and not first.table:
        stream = first.name
    elif isinstance(first, exp.Anonymous | exp.Func) and not nested:
        stream, _, dedup = _table_function(first, sql, nested=True)
    else:
        raise unsupported("this stream argument", sql, node_offset(first), "name a stream")
    if name == "DEDUP":
        spec = DedupSpec(_column(args[1], sql), _column(args[2], sql), _interval(args[3], sql))
        return stream, None, spec
    time_column = _column(args[1], sql)
    if name == "TUMBLE":
        size = _interval(args[2], sql)
        return stream, WindowSpec("tumble", time_column, size_ms=size, slide_ms=size), dedup
    if name == "HOP":
        slide, size = _interval(args[2], sql), _interval(args[3], sql)
        if slide > size:
            raise unsupported(
                "HOP slide longer than its size",
                sql,
                node_offset(args[2]),
                "rows between windows would belong to none; make slide <= size",
            )
        return stream, WindowSpec("hop", time_column, size_ms=size, slide_ms=slide), dedup
    return stream, WindowSpec("session", time_column, gap_ms=_interval(args[2], sql)), dedup


def _name(func: exp.Expr) -> str:
    if isinstance(func, exp.Anonymous):
        return str(func.name).upper()
    return func.sql(dialect="duckdb").split("(", 1)[0].strip().upper()


def _column(arg: exp.Expr, sql: str) -> str:
    if not isinstance(arg, exp.Column) or arg.table:
        raise unsupported("this column argument", sql, node_offset(arg), "name a stream column")
    return str(arg.name)


def _interval(arg: exp.Expr, sql: str) -> int:
    """An ``INTERVAL '1 minute'`` (or a string like '1 minute') as milliseconds."""
    if isinstance(arg, exp.Interval):
        unit = arg.args.get("unit")
        text = f"{arg.this.name} {unit.name.lower() if unit is not None else ''}".strip()
    elif isinstance(arg, exp.Literal) and arg.is_string:
        text = arg.name
    else:
        raise unsupported("this duration", sql, node_offset(arg), "write INTERVAL '1 minute'")
    try:
        ms = parse_duration_ms(text)
    except ValueError as exc:
        hint = f"{exc}; months and years have no fixed length"
        raise unsupported(f"INTERVAL '{text}'", sql, node_offset(arg), hint) from exc
    if ms <= 0:
        raise unsupported(f"INTERVAL '{text}'", sql, node_offset(arg), "make it positive")
    return ms


def _join(join: exp.Join, stream: str, sql: str, streams: Collection[str]) -> JoinSpec:
    at = node_offset(join)
    method, side, kind = (str(join.args.get(k) or "").upper() for k in ("method", "side", "kind"))
    if method or side not in ("", "LEFT") or kind not in ("", "INNER", "OUTER"):
        shown = " ".join(w for w in (method, side, kind) if w) + " JOIN"
        raise unsupported(shown, sql, at, "enrich with [LEFT] JOIN table ON ... or USING (...)")
    table = join.this
    if not isinstance(table, exp.Table) or not isinstance(table.this, exp.Identifier):
        raise unsupported("join of two streams", sql, at, "join a stream with a reference table")
    _plain_table(table, sql)
    name = table.name
    if name == stream or name in streams:
        raise unsupported("join of two streams", sql, at, f"{name!r} is a stream, not a table")
    if join.args.get("on") is not None:
        condition = "ON " + join.args["on"].sql(dialect="duckdb")
    elif join.args.get("using"):
        cols = ", ".join(c.sql(dialect="duckdb") for c in join.args["using"])
        condition = f"USING ({cols})"
    else:
        raise unsupported("join without ON or USING", sql, at, "say how rows match")
    return JoinSpec(name, table.alias or name, "left" if side == "LEFT" else "inner", condition)
