"""Replacing a pipeline's SQL while keeping its state, when the state still means the same.

A pipeline's state is shaped by a few parts of its plan: the stream it reads, dedup, the
window, the GROUP BY keys, the aggregates and their arguments, the anomaly histories,
the OVER aggregates, the pattern, the ranking, the models. Two plans whose shapes are
equal can swap: a new output column computed from existing ones, a new or changed
WHERE, a renamed column keep the windows, histories and offsets. Otherwise the
replacement says what state it would drop, and ``WITH (reset_state = true)`` starts the
pipeline over from the stream's start.

>>> from headwater.engine.sql.planner import plan_pipeline
>>> old = plan_pipeline("CREATE PIPELINE m AS SELECT device_id, window_start, count(*) AS n "
...     "FROM TUMBLE(r, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, window_end")
>>> new = plan_pipeline("CREATE PIPELINE m AS SELECT device_id, window_start, count(*) AS n, "
...     "count(*) * 2 AS twice FROM TUMBLE(r, ts, INTERVAL '1 minute') WHERE t > 0 "
...     "GROUP BY device_id, window_start, window_end")
>>> dropped_state(old, new)
[]
>>> wider = plan_pipeline("CREATE PIPELINE m AS SELECT device_id, window_start, count(*) AS n "
...     "FROM TUMBLE(r, ts, INTERVAL '5 minutes') GROUP BY device_id, window_start, window_end")
>>> dropped_state(old, wider)
['the window (TUMBLE 1 minute becomes TUMBLE 5 minutes)']
>>> split_reset("CREATE PIPELINE m AS SELECT 1 FROM r WITH (emit = 'final', reset_state = true)")
("CREATE PIPELINE m AS SELECT 1 FROM r WITH (emit = 'final')", True)
"""

from __future__ import annotations

import re
from typing import Any

from headwater.engine.operators.anomaly import stat_kind
from headwater.engine.plan import Plan, Scoring, WindowSpec
from headwater.engine.sql.text import split_statement, syntax_error
from headwater.engine.state import pack, unpack

RESET = "reset_state"
OR_REPLACE = re.compile(r"^(\s*CREATE)\s+OR\s+REPLACE(\s+PIPELINE\b)", re.IGNORECASE)


def split_or_replace(sql: str) -> tuple[str, bool]:
    """``CREATE OR REPLACE PIPELINE ...`` as ``CREATE PIPELINE ...``, and whether it said so.

    >>> split_or_replace("create or replace pipeline m AS SELECT 1 FROM r")
    ('create pipeline m AS SELECT 1 FROM r', True)
    """
    found = OR_REPLACE.match(sql)
    if found is None:
        return sql, False
    return found.group(1) + found.group(2) + sql[found.end() :], True


def split_reset(sql: str) -> tuple[str, bool]:
    """The SQL without ``reset_state`` in its ``WITH (...)``, and whether it asked for it."""
    statement = split_statement(sql)
    found = [(k, v, at) for k, v, at in statement.options if k == RESET]
    if not found:
        return sql, False
    _, value, at = found[0]
    if value.lower() not in ("true", "false"):
        raise syntax_error(sql, at, "reset_state is true or false")
    tokens = statement.tokens
    i = next(n for n, t in enumerate(tokens) if t.start == at)
    start, end = tokens[i].start, tokens[i + 2].end + 1  # key = value
    after = tokens[i + 3] if i + 3 < len(tokens) else None
    before = tokens[i - 1]
    if after is not None and after.text == ",":
        end = tokens[i + 4].start
    elif before.text == ",":
        start = before.start
    else:  # the only option: the whole WITH (...) goes
        start, end = tokens[i - 2].start, tokens[i + 3].end + 1
    return (sql[:start] + sql[end:]).rstrip(), value.lower() == "true"


def dropped_state(old: Plan, new: Plan) -> list[str]:
    """What of ``old``'s state ``new`` cannot keep (empty: the state carries over)."""
    a, b = shape(old), shape(new)
    return [
        f"{what} ({_show(a[what])} becomes {_show(b[what])})" for what in a if a[what] != b[what]
    ]


def shape(plan: Plan) -> dict[str, Any]:
    """The parts of a plan its state depends on, by what a person would call them."""
    pre = {c.name: c.expr for c in plan.pre}
    top = plan.top_n
    return {
        "the stream read": plan.source,
        "the kind of pipeline": plan.kind,
        "dedup": plan.dedup,
        "the window": plan.window,
        "the GROUP BY keys": tuple(k.expr for k in plan.keys),
        "the aggregates": tuple(
            f"{a.func}({', '.join(pre.get(x, x) for x in a.args)})" for a in plan.aggregates
        ),
        "the aggregate parameters": tuple(a.param for a in plan.aggregates),
        "the result key": plan.output_key,
        "emit": plan.options.emit,
        "the anomaly histories": _histories(plan.scoring),
        "the OVER aggregates": plan.over,
        "the pattern": plan.pattern,
        "the ranking": None if top is None else (top.func, top.partition, top.order),
        "the models": tuple(f"{p.model}({', '.join(p.args)})" for p in plan.predictions),
    }


def _histories(scoring: Scoring | None) -> str | None:
    if scoring is None:
        return None
    stats = ", ".join(sorted({f"{stat_kind(s)} of {s.value}" for s in scoring.scores}))
    return f"{stats} per {', '.join(scoring.partition) or 'stream'} in {scoring.order} order"


def _show(value: Any) -> str:
    if isinstance(value, WindowSpec):
        size = value.size_ms if value.kind != "session" else value.gap_ms
        text = f"{value.kind.upper()} {_duration(size)}"
        if value.kind == "hop":
            text += f" every {_duration(value.slide_ms)}"
        return text
    if value is None or value == ():
        return "none"
    if isinstance(value, tuple) and all(isinstance(v, str) for v in value):
        return ", ".join(value)
    return str(value)


def _duration(ms: int) -> str:
    for unit, size in (("hour", 3_600_000), ("minute", 60_000), ("second", 1000)):
        if ms % size == 0:
            n = ms // size
            return f"{n} {unit}{'s' if n != 1 else ''}"
    return f"{ms} ms"


def carry_state(snapshot: bytes, sql: str) -> bytes:
    """A pipeline snapshot made the state of the pipeline defined by ``sql``."""
    meta, tables = unpack(snapshot)
    return pack({**meta, "sql": sql}, tables)
