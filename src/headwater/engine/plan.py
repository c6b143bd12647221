"""The frozen plan of a pipeline: what the planner read from the SQL, nothing more.

A plan is configuration (comparable, printable, no I/O). ``Pipeline(plan, ...)``
builds the operators that run it. Internal column names used between stages:

- ``_k{i}``: value of the i-th GROUP BY key (an expression over the input row);
- ``_a{i}``: an aggregate argument (an expression over the input row);
- ``_agg{i}``: the final value of the i-th aggregate;
- ``window_start`` / ``window_end``: the window, ``timestamp[ms, UTC]``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

import pyarrow as pa

from headwater.engine.join_spec import StreamJoin
from headwater.engine.patterns.engine import PatternSpec

WindowKind = Literal["tumble", "hop", "session"]
EmitMode = Literal["final", "changes"]
StartFrom = Literal["earliest", "latest"]
PlanKind = Literal["stateless", "window", "session", "group", "pattern"]
AggFunc = Literal[
    "count_star",
    "count",
    "count_distinct",
    "sum",
    "avg",
    "min",
    "max",
    "var_samp",
    "var_pop",
    "stddev_samp",
    "stddev_pop",
    "approx_count_distinct",
    "approx_quantile",
    "quantile_cont",
    "arg_min",
    "arg_max",
]

WINDOW_START = "window_start"
WINDOW_END = "window_end"
WINDOW_TYPE = pa.timestamp("ms", tz="UTC")


@dataclass(frozen=True, slots=True)
class WindowSpec:
    """Event-time windows, epoch-aligned (a 1-minute window starts on a minute).

    ``size_ms``/``slide_ms`` for tumble (slide == size) and hop; ``gap_ms`` for session.
    """

    kind: WindowKind
    time_column: str
    size_ms: int = 0
    slide_ms: int = 0
    gap_ms: int = 0


@dataclass(frozen=True, slots=True)
class DedupSpec:
    """``DEDUP(stream, id_column, time_column, INTERVAL horizon)``."""

    id_column: str
    time_column: str
    horizon_ms: int


@dataclass(frozen=True, slots=True)
class JoinSpec:
    """An enrichment join of the stream with a reference table."""

    table: str
    alias: str
    kind: Literal["inner", "left"]
    condition: str  # "ON ..." or "USING (...)", DuckDB SQL


@dataclass(frozen=True, slots=True)
class Column:
    """A named expression, DuckDB SQL. ``source`` is set when it is a bare input column."""

    name: str
    expr: str
    source: str | None = None


@dataclass(frozen=True, slots=True)
class Aggregate:
    """One aggregate call. ``args`` name pre-aggregation columns (``_a{i}``)."""

    func: AggFunc
    column: str
    args: tuple[str, ...] = ()
    param: float | None = None
    sql: str = ""
    position: str = ""


ScoreFunc = Literal[
    "zscore", "ewma", "ewma_zscore", "seasonal_zscore", "anomaly_score", "is_anomaly", "cusum"
]
Method = Literal["zscore", "ewma", "cusum"]
Season = Literal["hour_of_day", "day_of_week", "hour_of_week"]


@dataclass(frozen=True, slots=True)
class Score:
    """One anomaly function call, e.g. ``zscore(temperature) OVER (...)``.

    ``value`` is the argument's DuckDB SQL; the result lands in column ``column``.
    """

    func: ScoreFunc
    column: str
    value: str
    method: Method = "zscore"
    alpha: float = 0.1
    warmup: int = 10
    threshold: float = 3.0
    season: Season | None = None
    slack: float = 1.0  # CUSUM: the drift tolerated, in deviations


@dataclass(frozen=True, slots=True)
class Scoring:
    """The anomaly functions of a pipeline: one ``PARTITION BY`` / ``ORDER BY`` for all.

    Rows pass ``filter`` (the WHERE clause) before they are scored; ``qualify`` filters the
    scored rows (``QUALIFY is_anomaly(...) OVER (...)``).
    """

    partition: tuple[str, ...]
    order: str
    scores: tuple[Score, ...]
    filter: str | None = None


@dataclass(frozen=True, slots=True)
class Prediction:
    """One ``predict('model', a, b)`` call: the model's answer lands in column ``column``.

    ``args`` are the value arguments' DuckDB SQL; ``version`` None means the version the
    pipeline was created with; ``output`` None means the model's first output.
    """

    column: str
    model: str
    args: tuple[str, ...]
    version: int | None = None
    output: str | None = None
    proba: bool = False


@dataclass(frozen=True, slots=True)
class TopN:
    """``ROW_NUMBER()`` (or ``RANK()``/``DENSE_RANK()``) over each closed window's result rows.

    ``partition``/``order`` are DuckDB SQL over hidden result columns (``_tn_*``, dropped
    with ``hidden``); ``rank`` names the column that receives the number; ``select`` and
    ``where`` are the statement around the ranking, over a relation named ``alias``.
    ``tie_break``: ties in ``order`` are broken by the other result columns (row_number).
    """

    func: Literal["row_number", "rank", "dense_rank"]
    rank: str
    partition: tuple[str, ...]
    order: tuple[str, ...]
    hidden: tuple[str, ...]
    select: str
    where: str | None
    alias: str
    # ``emit = 'changes'``: the result is keyed by ``key`` (the PARTITION BY columns as the
    # result names them, then the rank); ``group`` (hidden ``_tn_k*``) and the partition
    # identify an aggregate row between batches; partition ``window_at`` is the window
    # column (its end when ``window_end``). See ``headwater.engine.operators.topn_changes``.
    key: tuple[str, ...] = ()
    group: tuple[str, ...] = ()
    window_at: int = 0
    window_end: bool = False


@dataclass(frozen=True, slots=True)
class OverAggregates:
    """Aggregates over each row's preceding rows of its key, in event-time order.

    ``calls``: ``_ov{i}`` = DuckDB SQL of ``agg(x) OVER (PARTITION BY ... ORDER BY time
    ROWS n PRECEDING | RANGE INTERVAL ... PRECEDING)``; rows pass ``filter`` (WHERE) first.
    State keeps the last ``rows`` rows and the rows within ``range_ms`` of each key.
    """

    partition: tuple[str, ...]
    order: str
    calls: tuple[Column, ...]
    rows: int
    range_ms: int
    filter: str | None = None


@dataclass(frozen=True, slots=True)
class Options:
    """The ``WITH (...)`` options of a pipeline, durations in ms."""

    watermark_delay_ms: int = 0
    allowed_lateness_ms: int = 0
    emit: EmitMode = "final"
    start: StartFrom = "earliest"
    idle_timeout_ms: int | None = None


@dataclass(frozen=True, slots=True)
class Plan:
    """A planned pipeline.

    - ``pre``: the pre-aggregation projection (keys ``_k*`` then arguments ``_a*``),
      evaluated over each input batch joined with ``joins`` and filtered by ``filter``;
      for a stateless plan, ``projection`` is evaluated there instead.
    - ``projection``: output columns; for stateful plans, expressions over ``_k*``,
      ``_agg*``, ``window_start`` and ``window_end``; ``having`` filters those rows.
    """

    name: str
    sql: str
    source: str
    source_alias: str
    window: WindowSpec | None = None
    dedup: DedupSpec | None = None
    joins: tuple[JoinSpec, ...] = ()
    filter: str | None = None
    keys: tuple[Column, ...] = ()
    pre: tuple[Column, ...] = ()
    aggregates: tuple[Aggregate, ...] = ()
    projection: tuple[Column, ...] = ()
    having: str | None = None
    grouped: bool = False
    options: Options = field(default_factory=Options)
    scoring: Scoring | None = None  # anomaly functions, computed before ``projection``
    pattern: PatternSpec | None = None  # MATCH_RECOGNIZE; projection/filter apply to matches
    predictions: tuple[Prediction, ...] = ()  # predict(...) calls, computed first
    top_n: TopN | None = None  # ranks each closed window's rows; the result is appended
    over: OverAggregates | None = None  # OVER aggregates, computed before ``projection``
    stream_join: StreamJoin | None = None  # two streams joined; the rest reads joined rows
    inner: Plan | None = None  # a subquery in FROM (or a pipeline): the plan reads its rows

    @property
    def inputs(self) -> tuple[str, ...]:
        """The streams the pipeline reads: its source, or each side of its stream join."""
        if self.inner is not None:
            return self.inner.inputs
        if self.stream_join is None:
            return (self.source,)
        return tuple(dict.fromkeys((self.stream_join.left.stream, self.stream_join.right.stream)))

    @property
    def kind(self) -> PlanKind:
        if self.pattern is not None:
            return "pattern"
        if self.top_n is not None:
            return "window"
        if not self.grouped:
            return "stateless"
        if self.window is None:
            return "group"
        return "session" if self.window.kind == "session" else "window"

    @property
    def references(self) -> tuple[str, ...]:
        """Reference tables this pipeline joins, by name."""
        return tuple(j.table for j in self.joins)

    @property
    def output_key(self) -> tuple[str, ...]:
        """Columns that key the result rows (upserts); empty for stateless plans."""
        if self.top_n is not None:
            return self.top_n.key
        if not self.grouped:
            return ()
        names = {c.source: c.name for c in self.projection if c.source}
        key = [names[k.name] for k in self.keys]
        if self.window is not None:
            key.append(names.get(WINDOW_START) or names[WINDOW_END])
        return tuple(key)

    @property
    def group_by(self) -> tuple[tuple[str, str], ...]:
        """(key expression, output column) of each GROUP BY key, windows aside."""
        names = {c.source: c.name for c in self.projection if c.source}
        return tuple((k.expr, names[k.name]) for k in self.keys)

    @property
    def time_column(self) -> str | None:
        """The event-time column the plan's watermark follows, if any."""
        if self.window is not None:
            return self.window.time_column
        if self.scoring is not None:
            return self.scoring.order
        if self.over is not None:
            return self.over.order
        if self.pattern is not None:
            return self.pattern.order_by
        return self.dedup.time_column if self.dedup is not None else None

    def output_schema(
        self, input_schema: pa.Schema, references: Mapping[str, pa.Schema] | None = None
    ) -> pa.Schema:
        """The Arrow schema of the result rows, given the stream's (and tables') schemas."""
        from headwater.engine.compile import compile_plan

        return compile_plan(self, input_schema, references or {}).output_schema
