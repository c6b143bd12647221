import itertools
import math
from decimal import Decimal

import duckdb
import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from examples import examples
from headwater.engine.aggregates.groups import group_rows, regroup
from headwater.engine.aggregates.int128 import WIDE, Int128, group_sums, read
from headwater.engine.aggregates.kernels import make_kernel
from headwater.engine.aggregates.quantiles import EXACT_LIMIT, RANK_ERROR
from headwater.engine.aggregates.table import Aggregation
from headwater.engine.plan import Aggregate


def test_group_ids_cover_several_columns_and_nulls() -> None:
    g = group_rows([pa.array(["a", "a", None, "a"]), pa.array([1, 2, 1, 1])])
    assert g.ids.tolist() == [0, 1, 2, 0]
    assert g.count == 3 and g.first.tolist() == [0, 1, 2]
    empty = group_rows([pa.array([], pa.string())])
    assert empty.count == 0 and len(empty.first) == 0
    assert group_rows([], num_rows=3).ids.tolist() == [0, 0, 0]


def test_regroup_builds_lists_in_id_order() -> None:
    lists = regroup(np.array([2, 0, 2, 2]), pa.array(["a", "b", "c", "d"]), 4)
    assert lists.to_pylist() == [["b"], [], ["a", "c", "d"], []]


def merged_in_parts(
    func: str, values: pa.Array, keys: list[str], param: float | None = None
) -> list:
    """Aggregate in three uneven parts, merge, finalize: must equal one pass."""
    agg = Aggregation([Aggregate(func, "_agg0", ("_a0",), param)], {"_a0": values.type})
    rows = pa.table({"_k0": keys, "_a0": values})
    by = [pa.field("_k0", pa.string())]
    parts = [agg.partial(rows.slice(a, b - a), by) for a, b in ((0, 1), (1, 4), (4, len(keys)))]
    state = agg.merge(parts, by)
    out = agg.final(state, ["_k0"]).sort_by("_k0")
    return out["_agg0"].to_pylist()


KEYS = ["a", "b", "a", "b", "a", "a", "b"]


@pytest.mark.parametrize(
    ("func", "values", "expected"),
    [
        ("count", pa.array([1.0, None, 2.0, None, None, 3.0, 4.0]), [3, 1]),
        ("sum", pa.array([1, None, 2, None, None, 2**40, 4]), [3 + 2**40, 4]),
        ("sum", pa.array([2**62, 2**63 - 1, 2**62, 1, 1, 2**63 - 1, 1]), [2**64, 2**63 + 1]),
        ("sum", pa.array([-(2**63)] * 7), [-(2**65), -3 * 2**63]),
        ("sum", pa.array([2**64 - 1] * 7, pa.uint64()), [4 * (2**64 - 1), 3 * (2**64 - 1)]),
        ("avg", pa.array([2**62, 1, -(2**62), 2**62, 2, 7, -(2**62)]), [9 / 4, 1 / 3]),
        ("sum", pa.array([None] * 7, pa.float64()), [None, None]),
        ("min", pa.array(["q", "b", "c", None, "a", "z", "e"]), ["a", "b"]),
        ("max", pa.array([1.5, 2.5, -3.0, None, 8.0, None, 1.0]), [8.0, 2.5]),
        ("avg", pa.array([1, 2, 3, 4, 5, 6, 7], pa.int32()), [15 / 4, 13 / 3]),
        ("count_distinct", pa.array(["x", "y", "x", "y", None, "z", "y"]), [2, 1]),
    ],
)
def test_kernels_merge_like_one_pass(func: str, values: pa.Array, expected: list) -> None:
    assert merged_in_parts(func, values, KEYS) == expected


def test_variance_merges_stably() -> None:
    big = 1e9
    values = pa.array([big + x for x in (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)])
    keys = ["a"] * 7
    var = merged_in_parts("var_samp", values, keys)[0]
    assert math.isclose(var, float(np.var([1, 2, 4, 8, 16, 32, 64], ddof=1)), rel_tol=1e-7)
    one = merged_in_parts("stddev_samp", pa.array([1.0] + [None] * 6), keys)
    assert one == [None]
    assert merged_in_parts("stddev_pop", pa.array([1.0] + [None] * 6), keys) == [0.0]


def test_arg_min_and_arg_max_skip_nulls_and_keep_first_of_ties() -> None:
    agg = Aggregation(
        [
            Aggregate("arg_min", "_agg0", ("_a0", "_a1")),
            Aggregate("arg_max", "_agg1", ("_a0", "_a1")),
        ],
        {"_a0": pa.string(), "_a1": pa.int64()},
    )
    rows = pa.table({"_a0": ["first", None, "tie", "last", "late-tie"], "_a1": [1, 0, 1, 9, 9]})
    state = agg.merge([agg.partial(rows.slice(0, 2), []), agg.partial(rows.slice(2), [])], [])
    assert agg.final(state).to_pylist() == [{"_agg0": "first", "_agg1": "last"}]


def test_hyperloglog_within_documented_error() -> None:
    rng = np.random.default_rng(7)
    for n in (10, 1_000, 100_000):
        hashes = pa.array(rng.integers(0, 2**64, n, dtype=np.uint64))
        keys = ["a"] * n
        kernel = make_kernel("approx_count_distinct", [pa.uint64()])
        groups = group_rows([pa.array(keys)])
        half = n // 2
        parts = [
            kernel.partial([hashes.slice(0, half)], group_rows([pa.array(keys[:half])])),
            kernel.partial([hashes.slice(half)], group_rows([pa.array(keys[half:])])),
        ]
        merged_groups = group_rows([pa.array(["a", "a"])])
        state = kernel.merge([pa.concat_arrays([p[0] for p in parts])], merged_groups)
        estimate = kernel.final(state).to_pylist()[0]
        assert abs(estimate - n) <= max(1, 0.05 * n), (n, estimate)
        assert kernel.final(kernel.partial([hashes], groups)).to_pylist()[0] == estimate


QS = (0.0, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)


def duckdb_quantiles(values: list[float], func: str) -> list[float]:
    con = duckdb.connect()
    calls = ", ".join(f"{func}(x, {q})" for q in QS)
    return list(
        con.execute(f"SELECT {calls} FROM unnest(?::DOUBLE[]) t(x)", [values]).fetchall()[0]
    )


@pytest.mark.parametrize("func", ["approx_quantile", "quantile_cont"])
def test_small_groups_answer_what_duckdb_answers(func: str) -> None:
    """Exact for small groups: DuckDB's approx_quantile keeps every value as its own
    t-digest centroid up to ~100 values, and then interpolates as we do; quantile_cont is
    exact at any size. (DuckDB reads q as a 32-bit float: 0.1 becomes 0.100000001.)"""
    rng = np.random.default_rng(5)
    for n in (1, 2, 3, 4, 5, 7, 10, 33, 64, 100):
        data = rng.normal(20.0, 3.0, n).round(2).tolist()
        for q, want in zip(QS, duckdb_quantiles(data, func), strict=True):
            got = merged_in_parts(func, pa.array(data), ["a"] * n, q)[0]
            assert math.isclose(got, want, rel_tol=1e-7, abs_tol=1e-9), (n, q, got, want)
            assert min(data) <= got <= max(data)


def test_a_single_value_is_its_own_quantile() -> None:
    for func in ("approx_quantile", "quantile_cont"):
        for q in QS:
            assert merged_in_parts(func, pa.array([21.5]), ["a"], q) == [21.5]
    pair = [
        merged_in_parts("approx_quantile", pa.array([1.0, 2.0]), ["a", "a"], q)[0]
        for q in (0.25, 0.5, 0.75)
    ]
    assert pair == [1.0, 1.5, 2.0]
    three = [
        merged_in_parts("approx_quantile", pa.array([3.0, 1.0, 2.0]), ["a"] * 3, q)[0]
        for q in (0.25, 0.5, 0.75)
    ]
    assert three == [1.25, 2.0, 2.75]


def test_quantile_skips_nulls_nan_and_infinities() -> None:
    values = pa.array([None, float("nan"), 4.0, float("inf"), 2.0, float("-inf"), None])
    assert merged_in_parts("approx_quantile", values, KEYS, 0.5) == [3.0, None]
    assert merged_in_parts("approx_quantile", pa.array([None] * 7, pa.float64()), KEYS, 0.5) == [
        None,
        None,
    ]


@pytest.mark.parametrize("n", [EXACT_LIMIT, EXACT_LIMIT + 1, 20_000])
def test_large_groups_stay_within_the_rank_bound_and_the_range(n: int) -> None:
    rng = np.random.default_rng(n)
    data = rng.lognormal(3.0, 1.5, n)
    ordered = np.sort(data)
    for func in ("approx_quantile", "quantile_cont"):
        for q in QS:
            got = merged_in_parts(func, pa.array(data), ["a"] * n, q)[0]
            assert ordered[0] <= got <= ordered[-1]
            low = np.searchsorted(ordered, got, side="left") / n
            high = np.searchsorted(ordered, got, side="right") / n
            assert low - RANK_ERROR - 1 / n <= q <= high + RANK_ERROR + 1 / n, (func, q)
        assert merged_in_parts(func, pa.array(data), ["a"] * n, 0.0) == [ordered[0]]
        assert merged_in_parts(func, pa.array(data), ["a"] * n, 1.0) == [ordered[-1]]


def test_sketches_merge_with_sketches_and_loose_values() -> None:
    agg = Aggregation([Aggregate("approx_quantile", "_agg0", ("_a0",), 0.5)], {"_a0": pa.float64()})
    by = [pa.field("_k0", pa.string())]
    parts = [
        agg.partial(
            pa.table({"_k0": ["a"] * 600 + ["b"], "_a0": [*np.arange(600.0).tolist(), 7.0]}), by
        ),
        agg.partial(pa.table({"_k0": ["b", "a"], "_a0": [9.0, 600.0]}), by),
        agg.partial(pa.table({"_k0": ["a"] * 700, "_a0": np.arange(601.0, 1301.0)}), by),
    ]
    state = agg.merge([agg.merge(parts[:2], by), parts[2]], by)
    out = dict(zip(*agg.final(state, ["_k0"]).to_pydict().values(), strict=True))
    assert out["b"] == 8.0
    assert abs(out["a"] - 650.0) <= 1301 * RANK_ERROR + 1
    assert state["_s0_0"].to_pylist() == [1301, 2]


def test_quantile_state_saved_as_log_buckets_restores() -> None:
    """Checkpoints written before the exact/KLL state held (bucket, count) lists."""
    agg = Aggregation([Aggregate("approx_quantile", "_agg0", ("_a0",), 0.5)], {"_a0": pa.float64()})
    by = [pa.field("_k0", pa.string())]
    old = pa.table(
        {
            "_k0": ["a", "b"],
            "_s0_0": pa.array([[40_000 + 70, 40_000 + 80], []], pa.list_(pa.int32())),
            "_s0_1": pa.array([[1, 2], []], pa.list_(pa.int64())),
        }
    )
    state = agg.conform(old, agg.schema(by))
    assert state.schema.equals(agg.schema(by))
    a, b = agg.final(state, ["_k0"])["_agg0"].to_pylist()
    assert b is None and abs(a - 1.0201**80 * 2 / 2.0201) < 0.01 * a


def test_type_errors_say_what_to_do() -> None:
    with pytest.raises(TypeError, match="needs a number"):
        make_kernel("avg", [pa.string()])


INT64 = st.integers(-(2**63), 2**63 - 1)
NEAR_EDGES = st.one_of(
    INT64,
    st.sampled_from([2**63 - 1, -(2**63), 2**62, -(2**62)]),
    st.integers(-1000, 1000).map(lambda d: 2**62 + d),
    st.integers(-1000, 1000),
)


@settings(max_examples=examples(200), deadline=None)
@given(
    values=st.lists(st.one_of(st.none(), NEAR_EDGES), min_size=1, max_size=60),
    data=st.data(),
)
def test_integer_sums_are_exact_and_equal_duckdb(
    values: list[int | None], data: st.DataObject
) -> None:
    """Integer sums over random cuts and merges equal DuckDB's HUGEINT sums, and avg its DOUBLE."""
    n = len(values)
    keys = data.draw(st.lists(st.sampled_from("abc"), min_size=n, max_size=n))
    cuts = sorted(set(data.draw(st.lists(st.integers(0, n), max_size=4))) | {0, n})
    agg = Aggregation(
        [Aggregate("sum", "_agg0", ("_a0",)), Aggregate("avg", "_agg1", ("_a0",))],
        {"_a0": pa.int64()},
    )
    rows = pa.table({"_k0": keys, "_a0": pa.array(values, pa.int64())})
    by = [pa.field("_k0", pa.string())]
    parts = [agg.partial(rows.slice(a, b - a), by) for a, b in itertools.pairwise(cuts)]
    out = agg.final(agg.merge(parts, by), ["_k0"]).sort_by("_k0")
    con = duckdb.connect()
    con.register("rows", rows)
    want = con.sql("SELECT _k0, sum(_a0), avg(_a0) FROM rows GROUP BY 1 ORDER BY 1").fetchall()
    assert out["_agg0"].type == WIDE
    got = list(
        zip(out["_k0"].to_pylist(), out["_agg0"].to_pylist(), out["_agg1"].to_pylist(), strict=True)
    )
    assert [(k, s) for k, s, _ in got] == [(k, s) for k, s, _ in want]
    for (_, _, g), (_, _, w) in zip(got, want, strict=True):
        assert (g is None) == (w is None)
        if w is not None:
            assert math.isclose(g, w, rel_tol=1e-12, abs_tol=1e-12), (g, w)


def test_wide_sums_read_sliced_and_null_states() -> None:
    state = pa.array([Decimal(2**100), None, Decimal(-(2**70)), Decimal(5)], WIDE)
    values, valid = read(state.slice(1))
    assert valid is not None and valid.tolist() == [False, True, True]
    assert isinstance(values, Int128)
    total, n = group_sums(np.array([0, 0, 0]), state.slice(1), 1)
    assert total.to_arrow(n == 0).to_pylist() == [Decimal(5 - 2**70)] and n.tolist() == [2]
    assert total.to_float().tolist() == [float(5 - 2**70)]


def test_sum_past_decimal38_fails_instead_of_wrapping() -> None:
    state = pa.array([Decimal(10**37 * 6)] * 2, WIDE)
    total, n = group_sums(np.array([0, 0]), state, 1)
    with pytest.raises(OverflowError, match="DECIMAL"):
        total.to_arrow(n == 0)


def test_state_saved_with_int64_sums_restores_as_exact_sums() -> None:
    agg = Aggregation(
        [Aggregate("sum", "_agg0", ("_a0",)), Aggregate("avg", "_agg1", ("_a0",))],
        {"_a0": pa.int64()},
    )
    by = [pa.field("_k0", pa.string())]
    old = pa.table({"_k0": ["a"], "_s0_0": pa.array([2**62], pa.int64()),
                    "_s1_0": [float(2**62)], "_s1_1": pa.array([1], pa.int64())})  # fmt: skip
    state = agg.conform(old, agg.schema(by))
    fresh = agg.partial(pa.table({"_k0": ["a"], "_a0": [2**62]}), by)
    out = agg.final(agg.merge([state, fresh], by), ["_k0"])
    assert out.to_pylist() == [{"_k0": "a", "_agg0": Decimal(2**63), "_agg1": float(2**62)}]


def test_quantile_states_merge_from_slices() -> None:
    """Window panes hand over slices of state tables: offsets must not shift values."""
    agg = Aggregation([Aggregate("quantile_cont", "_agg0", ("_a0",), 0.5)], {"_a0": pa.float64()})
    by = [pa.field("_k0", pa.string())]
    rows = pa.table(
        {"_k0": ["a", "b", "c", "a", "b", "c"], "_a0": [1.0, 10.0, 100.0, 3.0, 30.0, 300.0]}
    )
    state = agg.partial(rows, by)
    merged = agg.merge([state.slice(1, 2), state.slice(0, 1), state.slice(1, 1)], by)
    out = agg.final(merged, ["_k0"]).to_pylist()
    assert sorted((r["_k0"], r["_agg0"]) for r in out) == [("a", 2.0), ("b", 20.0), ("c", 200.0)]
