"""Pipelines written in Python: ``headwater.Pipeline(...)`` builds the SQL a person would.

Each step returns a new builder; ``sql`` is the ``CREATE PIPELINE`` statement, and
``plan()`` plans it with the same planner as SQL sent over HTTP, so a pipeline built
here is the pipeline that SQL makes (same plan, same checks, same errors).

>>> from headwater.engine.builder import Pipeline, avg, count, max_
>>> m = (Pipeline("device_minute").source("readings").tumble("ts", "1 minute")
...      .group_by("device_id").agg(n=count(), avg_temp=avg("temperature")))
>>> print(m.sql)
CREATE PIPELINE device_minute AS SELECT device_id, window_start, window_end, count(*) AS n, avg(temperature) AS avg_temp FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, window_end
>>> from headwater.engine import plan_pipeline
>>> m.plan() == plan_pipeline(m.sql)
True
>>> hot = (Pipeline("hot").source("readings").where("temperature > 30")
...        .select("device_id", "ts", temp_f="temperature * 1.8 + 32"))
>>> print(hot.sql)
CREATE PIPELINE hot AS SELECT device_id, ts, temperature * 1.8 + 32 AS temp_f FROM readings WHERE temperature > 30
>>> peaks = (Pipeline("peaks").source("readings").hop("ts", "1 minute", "5 minutes")
...          .group_by("site").agg(hi=max_("temperature")).having("max(temperature) > 40")
...          .options(emit="changes"))
>>> print(peaks.sql)  # doctest: +NORMALIZE_WHITESPACE
CREATE PIPELINE peaks AS SELECT site, window_start, window_end, max(temperature) AS hi
FROM HOP(readings, ts, INTERVAL '1 minute', INTERVAL '5 minutes') GROUP BY site,
window_start, window_end HAVING max(temperature) > 40 WITH (emit = 'changes')
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from headwater.engine.plan import Plan
from headwater.engine.sql.planner import plan_pipeline


@dataclass(frozen=True, slots=True)
class Agg:
    """An aggregate call: ``func(args)`` in SQL."""

    func: str
    args: tuple[str, ...] = ()

    @property
    def sql(self) -> str:
        return f"{self.func}({', '.join(self.args) or '*'})"


def count(column: str | None = None) -> Agg:
    """``count(*)``, or ``count(column)`` (its non-NULL values)."""
    return Agg("count", (column,) if column else ())


def count_distinct(column: str) -> Agg:
    return Agg("count", (f"DISTINCT {column}",))


def avg(column: str) -> Agg:
    return Agg("avg", (column,))


def sum_(column: str) -> Agg:
    return Agg("sum", (column,))


def min_(column: str) -> Agg:
    return Agg("min", (column,))


def max_(column: str) -> Agg:
    return Agg("max", (column,))


def stddev(column: str) -> Agg:
    return Agg("stddev_samp", (column,))


def quantile(column: str, q: float) -> Agg:
    return Agg("approx_quantile", (column, repr(q)))


@dataclass(frozen=True, slots=True)
class Pipeline:
    """A pipeline under construction; ``sql`` / ``plan()`` once it has a source."""

    name: str
    stream: str | None = None
    window: str | None = None  # the FROM clause's table function, when windowed
    filter: str | None = None
    keys: tuple[str, ...] = ()
    aggregates: tuple[tuple[str, Agg], ...] = ()
    columns: tuple[str, ...] = ()
    having_: str | None = None
    with_: tuple[tuple[str, str], ...] = field(default_factory=tuple)

    def source(self, stream: str) -> Pipeline:
        return replace(self, stream=stream)

    def where(self, condition: str) -> Pipeline:
        """Keep the rows ``condition`` (SQL over the stream's columns) holds for."""
        both = condition if self.filter is None else f"({self.filter}) AND ({condition})"
        return replace(self, filter=both)

    def tumble(self, time_column: str, size: str) -> Pipeline:
        """Fixed windows of ``size`` (``'1 minute'``) on ``time_column``."""
        return replace(self, window=f"TUMBLE({{s}}, {time_column}, INTERVAL '{size}')")

    def hop(self, time_column: str, slide: str, size: str) -> Pipeline:
        """Windows of ``size`` starting every ``slide``."""
        return replace(
            self, window=f"HOP({{s}}, {time_column}, INTERVAL '{slide}', INTERVAL '{size}')"
        )

    def session(self, time_column: str, gap: str) -> Pipeline:
        """Windows per key that close after ``gap`` without rows."""
        return replace(self, window=f"SESSION({{s}}, {time_column}, INTERVAL '{gap}')")

    def group_by(self, *keys: str) -> Pipeline:
        return replace(self, keys=self.keys + keys)

    def agg(self, **aggregates: Agg) -> Pipeline:
        """Result columns by name: ``agg(n=count(), hi=max_("temperature"))``."""
        return replace(self, aggregates=self.aggregates + tuple(aggregates.items()))

    def select(self, *columns: str, **expressions: str) -> Pipeline:
        """Result columns of a pipeline without aggregates: names, or name=SQL expression."""
        named = tuple(f"{sql} AS {name}" for name, sql in expressions.items())
        return replace(self, columns=self.columns + columns + named)

    def having(self, condition: str) -> Pipeline:
        return replace(self, having_=condition)

    def options(self, **options: Any) -> Pipeline:
        """``WITH (...)`` options: ``emit="changes"``, ``watermark_delay="5 seconds"``..."""
        return replace(self, with_=self.with_ + tuple((k, str(v)) for k, v in options.items()))

    @property
    def sql(self) -> str:
        if self.stream is None:
            raise ValueError(f"pipeline {self.name} has no source: call .source('stream')")
        source = self.window.format(s=self.stream) if self.window else self.stream
        window_cols = ("window_start", "window_end") if self.window else ()
        grouped = bool(self.aggregates or self.keys)
        items = list(self.columns)
        if grouped:
            items = [*self.keys, *window_cols, *items]
            items += [f"{agg.sql} AS {name}" for name, agg in self.aggregates]
        sql = f"CREATE PIPELINE {self.name} AS SELECT {', '.join(items) or '*'} FROM {source}"
        if self.filter:
            sql += f" WHERE {self.filter}"
        if grouped:
            sql += f" GROUP BY {', '.join([*self.keys, *window_cols])}"
        if self.having_:
            sql += f" HAVING {self.having_}"
        if self.with_:
            sql += " WITH (" + ", ".join(f"{k} = '{v}'" for k, v in self.with_) + ")"
        return sql

    def plan(self) -> Plan:
        """The plan the SQL makes (``UnsupportedSQL`` and friends as for SQL)."""
        return plan_pipeline(self.sql)
