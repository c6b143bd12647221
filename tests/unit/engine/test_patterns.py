"""The pattern engine on classic patterns (each with all four AFTER MATCH SKIP modes,
against the brute-force reference), its errors, bounds and state."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pytest

from headwater.engine.patterns import (
    ConditionError,
    PatternEngine,
    PatternError,
    PatternSpec,
    parse_pattern,
)
from pattern_reference import Cond, reference_matches

MINUTE = 60_000
SKIPS = [("past_last_row", None), ("to_next_row", None), ("to_first", "B"), ("to_last", "B")]
TICKS = pa.schema([("sym", pa.string()), ("t", pa.int64()), ("price", pa.int64())])


def run(spec: PatternSpec, schema: pa.Schema, rows: list[dict[str, Any]]) -> list[dict]:
    engine = PatternEngine(spec, schema)
    table = pa.Table.from_pylist(rows, schema=schema)
    half = table.num_rows // 2
    out = engine.push(table.slice(0, half)).to_pylist()
    restored = PatternEngine(spec, schema)
    restored.restore(engine.snapshot())
    out += restored.push(table.slice(half)).to_pylist()
    return out + restored.finish().to_pylist()


def ticks(prices: list[int], sym: str = "X", step: int = 1000) -> list[dict[str, Any]]:
    return [{"sym": sym, "t": i * step, "price": p} for i, p in enumerate(prices)]


def prev_price(rows: list[dict[str, Any]], i: int) -> int | None:
    return rows[i - 1]["price"] if i else None


def rising(rows: list[dict[str, Any]], i: int, var: str, labels: Any) -> bool:
    return i > 0 and rows[i]["price"] > rows[i - 1]["price"]


def falling(rows: list[dict[str, Any]], i: int, var: str, labels: Any) -> bool:
    return i > 0 and rows[i]["price"] < rows[i - 1]["price"]


def expect(
    pattern: str,
    rows: list[dict[str, Any]],
    conds: dict[str, Cond],
    skip: str,
    to: str | None,
    within: int | None,
) -> list[tuple[int, int]]:
    found = reference_matches(pattern, rows, conds, within=within, skip=skip, skip_to=to)
    return [(rows[m[0][0]]["t"], rows[m[-1][0]]["t"]) for m in found]


@pytest.mark.parametrize(("skip", "to"), SKIPS)
def test_rising_run(skip: str, to: str | None) -> None:
    prices = [5, 6, 7, 8, 2, 3, 4, 1, 9, 10, 9, 9, 10, 11, 12, 3]
    spec = PatternSpec(
        "A B+ C",
        (("B", "B.price > PREV(B.price)"), ("C", "C.price < PREV(C.price)")),
        (
            ("start_t", "FIRST(A.t)"),
            ("end_t", "LAST(C.t)"),
            ("top", "LAST(B.price)"),
            ("rises", "COUNT(B.*)"),
        ),
        partition_by=("sym",),
        order_by="t",
        skip=skip,
        skip_to=to,
        within_ms=MINUTE,  # type: ignore[arg-type]
    )
    got = run(spec, TICKS, ticks(prices))
    want = expect("A B+ C", ticks(prices), {"B": rising, "C": falling}, skip, to, MINUTE)
    assert [(r["start_t"], r["end_t"]) for r in got] == want
    if skip == "past_last_row":
        assert [(r["top"], r["rises"]) for r in got] == [(8, 3), (4, 1), (10, 1), (12, 3)]


@pytest.mark.parametrize(("skip", "to"), SKIPS)
def test_v_shape(skip: str, to: str | None) -> None:
    prices = [9, 7, 5, 6, 8, 8, 4, 3, 5, 2, 1, 2, 3, 4]
    spec = PatternSpec(
        "A B+ C+",
        (("B", "B.price < PREV(B.price)"), ("C", "C.price > PREV(C.price)")),
        (("start_t", "FIRST(A.t)"), ("end_t", "LAST(C.t)"), ("bottom", "MIN(B.price)")),
        partition_by=("sym",),
        order_by="t",
        skip=skip,
        skip_to=to,
        within_ms=MINUTE,  # type: ignore[arg-type]
    )
    got = run(spec, TICKS, ticks(prices))
    want = expect("A B+ C+", ticks(prices), {"B": falling, "C": rising}, skip, to, MINUTE)
    assert [(r["start_t"], r["end_t"]) for r in got] == want
    if skip == "past_last_row":
        assert [r["bottom"] for r in got] == [5, 3, 1]


LOGINS = pa.schema([("user", pa.string()), ("t", pa.int64()), ("ok", pa.bool_())])


@pytest.mark.parametrize(("skip", "to"), [*SKIPS[:2], ("to_first", "F"), ("to_last", "F")])
def test_three_failed_logins_then_success_within_five_minutes(skip: str, to: str | None) -> None:
    seconds = [0, 30, 60, 90, 400, 410, 420, 700, 710, 720, 730, 1000]
    oks = [False, False, False, True, False, False, False, False, False, False, True, True]
    rows = [{"user": "u", "t": s * 1000, "ok": o} for s, o in zip(seconds, oks, strict=True)]
    spec = PatternSpec(
        "F{3,} S",
        (("F", "NOT F.ok"), ("S", "S.ok")),
        (("first_fail", "FIRST(F.t)"), ("success", "LAST(S.t)"), ("fails", "COUNT(F.*)")),
        partition_by=("user",),
        order_by="t",
        skip=skip,
        skip_to=to,
        within_ms=5 * MINUTE,  # type: ignore[arg-type]
    )
    got = run(spec, LOGINS, rows)
    conds: dict[str, Cond] = {
        "F": lambda r, i, v, lab: not r[i]["ok"],
        "S": lambda r, i, v, lab: r[i]["ok"],
    }
    want = expect("F{3,} S", rows, conds, skip, to, 5 * MINUTE)
    assert [(r["first_fail"], r["success"]) for r in got] == want
    if skip == "past_last_row":
        # 400..720 fail, but 730 is more than 5 minutes after 400, 410 and 420.
        assert [(r["first_fail"], r["fails"]) for r in got] == [(0, 3), (700_000, 3)]


def test_reluctant_and_greedy_differ() -> None:
    rows = ticks([1, 2, 3, 4, 5])
    measures = (("n", "COUNT(B.*)"),)
    greedy = PatternSpec("A B+ C?", (), measures, ("sym",), "t", within_ms=MINUTE)
    lazy = PatternSpec("A B+? C?", (), measures, ("sym",), "t", within_ms=MINUTE)
    assert [r["n"] for r in run(greedy, TICKS, rows)] == [4]
    assert [r["n"] for r in run(lazy, TICKS, rows)] == [1, 1]


def test_vectorized_and_per_thread_conditions_agree() -> None:
    prices = [3, 1, 4, 1, 5, 9, 2, 6, 5, 3, 5, 8, 9, 7, 9, 3, 2, 3, 8, 4]
    rows = ticks(prices) + ticks(prices[::-1], sym="Y")
    measures = (("s", "FIRST(A.t)"), ("e", "LAST(t)"), ("avg_b", "AVG(B.price)"))
    local = PatternSpec(
        "A B{2,} C", (("B", "B.price >= PREV(price)"),), measures, ("sym",), "t", within_ms=MINUTE
    )
    # COUNT(B.*) >= 1 is always true, but makes the condition read the match so far.
    threaded = PatternSpec(
        "A B{2,} C",
        (("B", "B.price >= PREV(price) AND COUNT(B.*) >= 1"),),
        measures,
        ("sym",),
        "t",
        within_ms=MINUTE,
    )
    assert PatternEngine(local, TICKS).local and not PatternEngine(local, TICKS).python
    assert PatternEngine(threaded, TICKS).python
    got = run(local, TICKS, rows)
    assert got == run(threaded, TICKS, rows)
    assert len(got) >= 3


def test_history_condition_compares_with_the_first_row() -> None:
    spec = PatternSpec(
        "A B* C",
        (("B", "B.price <= FIRST(A.price) + 1"), ("C", "C.price > FIRST(A.price) * 2")),
        (("a", "FIRST(A.price)"), ("c", "LAST(C.price)"), ("bs", "COUNT(B.*)")),
        ("sym",),
        "t",
        within_ms=MINUTE,
    )
    got = run(spec, TICKS, ticks([5, 6, 4, 11, 3, 3, 7]))
    assert got == [{"sym": "X", "a": 5, "c": 11, "bs": 2}, {"sym": "X", "a": 3, "c": 7, "bs": 1}]


def test_within_drops_old_partial_matches_on_the_watermark() -> None:
    spec = PatternSpec(
        "A B",
        (("A", "price = 1"), ("B", "price = 2")),
        (("t", "LAST(B.t)"),),
        ("sym",),
        "t",
        within_ms=10_000,
    )
    engine = PatternEngine(spec, TICKS)
    engine.push(pa.Table.from_pylist(ticks([1]), schema=TICKS))
    assert engine.status()["partial_matches"] == 1
    engine.expire(9_999)
    assert engine.status()["partial_matches"] == 1
    engine.expire(10_000)
    assert engine.status()["partial_matches"] == 0
    assert engine.status()["retained_rows"] == 0


def test_a_key_with_nothing_open_is_forgotten_unless_prev_needs_its_last_rows() -> None:
    rows = [{"sym": f"k{i}", "t": i, "price": 1} for i in range(50)]
    spec = PatternSpec("A B", (("A", "price = 2"),), (), ("sym",), "t", within_ms=MINUTE)
    engine = PatternEngine(spec, TICKS)
    engine.push(pa.Table.from_pylist(rows, schema=TICKS))
    assert engine.status()["partitions"] == 0
    spec = PatternSpec("A B", (("A", "price > PREV(price)"),), (), ("sym",), "t", within_ms=MINUTE)
    engine = PatternEngine(spec, TICKS)
    engine.push(pa.Table.from_pylist(rows, schema=TICKS))
    assert engine.status()["partitions"] == 50 and engine.status()["retained_rows"] == 50


def test_cap_on_partial_matches() -> None:
    spec = PatternSpec(
        "A+ B", (("B", "price = 2"),), (("n", "COUNT(A.*)"),), ("sym",), "t", max_partial_matches=3
    )
    engine = PatternEngine(spec, TICKS)
    engine.push(pa.Table.from_pylist(ticks([1] * 10), schema=TICKS))
    status = engine.status()
    assert status["partial_matches"] <= 3 and status["dropped_partial_matches"] > 0
    out = engine.push(pa.Table.from_pylist([{"sym": "X", "t": 20_000, "price": 2}], schema=TICKS))
    # The oldest partial matches were dropped: the match starts at the last row kept.
    assert out.to_pylist() == [{"sym": "X", "n": 1}]


def test_measures_name_known_variables() -> None:
    spec = PatternSpec("A B", (), (("n", "COUNT(Z.*)"),), ("sym",), "t", within_ms=MINUTE)
    with pytest.raises(ConditionError, match="no pattern variable Z"):
        PatternEngine(spec, TICKS)


def test_without_within_or_cap_is_refused() -> None:
    spec = PatternSpec("A B", (), (), ("sym",), "t")
    with pytest.raises(ConditionError, match="WITHIN"):
        PatternEngine(spec, TICKS)


@pytest.mark.parametrize(
    ("define", "message"),
    [
        ("B.price > NEXT(B.price)", "NEXT"),
        ("Z.price > 1", "no pattern variable Z"),
        ("B.volume > 1", "no column 'volume'"),
        ("B.price > LAST(A.price) AND B.price LIKE 'x%'", "not supported"),
    ],
)
def test_bad_conditions_say_why(define: str, message: str) -> None:
    spec = PatternSpec("A B", (("B", define),), (), ("sym",), "t", within_ms=MINUTE)
    with pytest.raises(ConditionError, match=message):
        PatternEngine(spec, TICKS)


@pytest.mark.parametrize(
    ("pattern", "column", "message"),
    [
        ("A (B C", 3, "missing '\\)'"),
        ("A B{3,1}", 4, "upper bound"),
        ("A B**", 5, "quantifier cannot follow"),
        ("A | ", 5, "expected a variable"),
        ("A*", 1, "no rows"),
        ("A (B?)+", 7, "can match no rows"),
        ("A B{,}", 4, "bad quantifier"),
        ("A # B", 3, "unexpected '#'"),
        ("PERMUTE(A, B)", 1, "PERMUTE"),
    ],
)
def test_pattern_errors_name_problem_and_column(pattern: str, column: int, message: str) -> None:
    with pytest.raises(PatternError, match=message) as info:
        parse_pattern(pattern)
    assert info.value.column == column


def test_quantifier_forms_parse() -> None:
    for text in ("A*? B", "A+? B", "A?? B", "A{2} B", "A{2,} B", "A{2,4}? B", "(A | B C)+ D"):
        parse_pattern(text)
