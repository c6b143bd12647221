"""The pattern engine against the brute-force reference (``pattern_reference``).

Random patterns over three variables (every quantifier, reluctant forms, alternation,
groups), random conditions (row-local ones that run vectorized in DuckDB, and ones
that read the match so far), every AFTER MATCH SKIP mode, WITHIN or none, over random
rows in two partitions cut into random batches, with a snapshot/restore into a fresh
engine at a random point. Each match is compared by its first and last row, its
length and, per variable, how many rows it took and the sum of their row numbers.
"""

from __future__ import annotations

import itertools
from typing import Any

import pyarrow as pa
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine.patterns import PatternEngine, PatternError, PatternSpec, parse_pattern
from headwater.engine.patterns.syntax import variables
from pattern_reference import Cond, Labels, reference_matches

VARS = ("A", "B", "C")
SCHEMA = pa.schema([("p", pa.int64()), ("t", pa.int64()), ("i", pa.int64()), ("v", pa.int64())])


def _prev(rows: list[dict[str, Any]], i: int) -> Any:
    return rows[i - 1]["v"] if i > 0 else None


def _last(labels: Labels, rows: list[dict[str, Any]], var: str) -> Any:
    mine = [rows[i]["v"] for i, v in labels if v == var]
    return mine[-1] if mine else None


def condition(kind: int, var: str, other: str, k: int) -> tuple[str, Cond]:
    """(SQL for the engine, the same condition in Python for the reference)."""
    if kind == 0:
        return f"{var}.v = {k}", lambda r, i, x, lab: r[i]["v"] == k
    if kind == 1:
        return f"v <> {k}", lambda r, i, x, lab: r[i]["v"] != k
    if kind == 2:
        return (
            f"{var}.v > PREV({var}.v)",
            lambda r, i, x, lab: _prev(r, i) is not None and r[i]["v"] > _prev(r, i),
        )
    if kind == 3:
        return (
            f"{var}.v >= LAST({other}.v)",
            lambda r, i, x, lab: (y := _last(lab, r, other)) is not None and r[i]["v"] >= y,
        )
    if kind == 4:
        return (
            f"COUNT({var}.*) <= {k}",
            lambda r, i, x, lab: sum(1 for _, v in lab if v == var) + 1 <= k,
        )
    return (
        f"v + SUM({var}.v) < {k + 4}",
        lambda r, i, x, lab: (
            r[i]["v"] + sum(r[j]["v"] for j, v in lab if v == var) + r[i]["v"] < k + 4
        ),
    )


def render(node: Any, top: bool = True) -> str:
    kind = node[0]
    if kind == "var":
        return str(node[1])
    if kind == "seq":
        return " ".join(render(n, False) for n in node[1])
    if kind == "alt":
        text = " | ".join(render(n, True) for n in node[1])
        return text if top else f"({text})"
    _, child, quant, greedy = node
    inner = render(child, False)
    if child[0] != "var":
        inner = f"({inner})" if not inner.startswith("(") else inner
    return inner + quant + ("" if greedy else "?")


QUANTS = st.sampled_from(["*", "+", "?", "{2}", "{1,}", "{0,2}", "{1,3}"])
patterns = st.recursive(
    st.tuples(st.just("var"), st.sampled_from(VARS)),
    lambda inner: st.one_of(
        st.tuples(st.just("seq"), st.lists(inner, min_size=2, max_size=3)),
        st.tuples(st.just("alt"), st.lists(inner, min_size=2, max_size=2)),
        st.tuples(st.just("q"), inner, QUANTS, st.booleans()),
    ),
    max_leaves=5,
)
SKIPS = (
    [("past_last_row", None)]
    + [("to_next_row", None)]
    + [(k, v) for k in ("to_first", "to_last") for v in VARS]
)


@st.composite
def rows(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 14))
    out, t = [], 0
    for i in range(n):
        t += draw(st.integers(0, 2))
        out.append({"p": draw(st.integers(0, 1)), "t": t, "i": i, "v": draw(st.integers(0, 3))})
    return out


def measures(names: set[str]) -> tuple[tuple[str, str], ...]:
    out = [("first_i", "FIRST(i)"), ("last_i", "LAST(i)"), ("n", "COUNT(*)")]
    for v in sorted(names):
        out += [(f"n_{v}", f"COUNT({v}.*)"), (f"s_{v}", f"coalesce(SUM({v}.i), 0)")]
    return tuple(out)


def summarize(
    match: Labels, part_rows: list[dict[str, Any]], p: int, names: set[str]
) -> dict[str, Any]:
    ids = [part_rows[i]["i"] for i, _ in match]
    out: dict[str, Any] = {"p": p, "first_i": ids[0], "last_i": ids[-1], "n": len(ids)}
    for v in sorted({x for _, x in match} | names):
        mine = [part_rows[i]["i"] for i, x in match if x == v]
        out[f"n_{v}"], out[f"s_{v}"] = len(mine), sum(mine)
    return out


def run_engine(spec: PatternSpec, data: list[dict[str, Any]], cuts: list[int], save: int) -> list:
    engine = PatternEngine(spec, SCHEMA)
    table = pa.Table.from_pylist(data, schema=SCHEMA)
    out: list[dict[str, Any]] = []
    bounds = sorted({0, len(data), *[c % (len(data) + 1) for c in cuts]})
    for j, (a, b) in enumerate(itertools.pairwise(bounds)):
        out += engine.push(table.slice(a, b - a)).to_pylist()
        if j == save:
            fresh = PatternEngine(spec, SCHEMA)
            fresh.restore(engine.snapshot())
            engine = fresh
        if b > 0:
            out += engine.expire(data[b - 1]["t"] - 1).to_pylist()
    out += engine.finish().to_pylist()
    return out


@settings(max_examples=examples(120))
@given(
    tree=patterns,
    kinds=st.lists(st.integers(-1, 5), min_size=3, max_size=3),
    ks=st.lists(st.integers(0, 3), min_size=3, max_size=3),
    skip=st.sampled_from(SKIPS),
    within=st.sampled_from([None, 2, 4, 7]),
    data=rows(),
    cuts=st.lists(st.integers(0, 20), max_size=3),
    save=st.integers(0, 3),
)
def test_engine_equals_reference(
    tree: Any,
    kinds: list[int],
    ks: list[int],
    skip: tuple[str, str | None],
    within: int | None,
    data: list[dict[str, Any]],
    cuts: list[int],
    save: int,
) -> None:
    text = render(tree)
    try:
        names = set(variables(parse_pattern(text)))
    except PatternError:
        assume(False)
    define: list[tuple[str, str]] = []
    conds: dict[str, Cond] = {}
    for n, (var, kind, k) in enumerate(zip(VARS, kinds, ks, strict=True)):
        if kind >= 0 and var in names:
            others = sorted(names - {var})
            if kind == 3 and not others:
                kind = 4
            sql, fn = condition(kind, var, others[n % len(others)] if others else var, k)
            define.append((var, sql))
            conds[var] = fn
    kind_, to = skip
    assume(to is None or to in names)
    spec = PatternSpec(
        text,
        tuple(define),
        measures(names),
        partition_by=("p",),
        order_by="t",
        skip=kind_,  # type: ignore[arg-type]
        skip_to=to,
        within_ms=within,
        max_partial_matches=None if within else 10**9,
    )
    got = run_engine(spec, data, cuts, save)
    want = []
    for p in (0, 1):
        part = [r for r in data if r["p"] == p]
        for m in reference_matches(text, part, conds, within=within, skip=kind_, skip_to=to):
            want.append(summarize(m, part, p, names))
    key = lambda r: (r["p"], r["first_i"])  # noqa: E731
    assert sorted(got, key=key) == sorted(want, key=key), text
