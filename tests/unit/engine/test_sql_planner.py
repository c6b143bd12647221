import re

import pyarrow as pa
import pytest

from headwater.engine import Pipeline, plan_pipeline
from headwater.engine.plan import WindowSpec
from headwater.errors import BadRequest, QueryError, UnsupportedSQL

DESIGN_EXAMPLE = """CREATE PIPELINE device_minute AS
SELECT device_id, window_start, window_end,
       count(*) AS n, avg(temperature) AS avg_temp, max(temperature) AS max_temp,
       approx_quantile(temperature, 0.99) AS p99_temp
FROM TUMBLE(readings, ts, INTERVAL '1 minute')      -- also HOP(..., slide, size), SESSION(..., gap)
WHERE status <> 'error'
GROUP BY device_id, window_start, window_end
WITH (watermark_delay = '5 seconds', allowed_lateness = '1 minute', emit = 'final');  -- or 'changes'
"""

READINGS = pa.schema(
    [
        ("device_id", pa.string()),
        ("ts", pa.timestamp("ms", tz="UTC")),
        ("temperature", pa.float64()),
        ("status", pa.string()),
        ("event_id", pa.string()),
    ]
)


def test_design_example_verbatim() -> None:
    plan = plan_pipeline(DESIGN_EXAMPLE)
    assert plan.name == "device_minute"
    assert plan.source == "readings"
    assert plan.kind == "window"
    assert plan.window == WindowSpec("tumble", "ts", size_ms=60_000, slide_ms=60_000)
    assert plan.filter == "status <> 'error'"
    assert [k.expr for k in plan.keys] == ["device_id"]
    assert [a.func for a in plan.aggregates] == ["count_star", "avg", "max", "approx_quantile"]
    assert plan.aggregates[3].param == 0.99
    assert [c.name for c in plan.projection] == [
        "device_id",
        "window_start",
        "window_end",
        "n",
        "avg_temp",
        "max_temp",
        "p99_temp",
    ]
    assert plan.options.watermark_delay_ms == 5_000
    assert plan.options.allowed_lateness_ms == 60_000
    assert plan.options.emit == "final"
    assert plan.options.start == "earliest"
    assert plan.output_key == ("device_id", "window_start")


def test_output_schema_from_input_schema() -> None:
    schema = plan_pipeline(DESIGN_EXAMPLE).output_schema(READINGS)
    assert schema == pa.schema(
        [
            ("device_id", pa.string()),
            ("window_start", pa.timestamp("ms", tz="UTC")),
            ("window_end", pa.timestamp("ms", tz="UTC")),
            ("n", pa.int64()),
            ("avg_temp", pa.float64()),
            ("max_temp", pa.float64()),
            ("p99_temp", pa.float64()),
        ]
    )


def test_sources_hop_session_dedup_join() -> None:
    hop = plan_pipeline(
        "CREATE PIPELINE h AS SELECT window_start, count(*) AS n "
        "FROM HOP(readings, ts, INTERVAL '10 seconds', INTERVAL '1 minute') "
        "GROUP BY window_start, window_end"
    )
    assert hop.window == WindowSpec("hop", "ts", size_ms=60_000, slide_ms=10_000)
    assert hop.output_key == ("window_start",)
    session = plan_pipeline(
        "CREATE PIPELINE s AS SELECT device_id, window_start, window_end, count(*) AS n "
        "FROM session(readings, ts, INTERVAL 30 SECONDS) GROUP BY ALL"
    )
    assert session.kind == "session"
    assert session.window is not None and session.window.gap_ms == 30_000
    nested = plan_pipeline(
        "CREATE PIPELINE d AS SELECT d.site, window_start, count(*) AS n "
        "FROM TUMBLE(DEDUP(readings, event_id, ts, INTERVAL '1 hour'), ts, INTERVAL '1 minute') r "
        "LEFT JOIN devices d ON r.device_id = d.device_id GROUP BY d.site, window_start"
    )
    assert nested.dedup is not None and nested.dedup.horizon_ms == 3_600_000
    assert nested.references == ("devices",)
    assert nested.joins[0].kind == "left"
    assert nested.source_alias == "r"
    stateless = plan_pipeline(
        "CREATE PIPELINE e AS SELECT r.*, d.site FROM readings r JOIN devices d USING (device_id)"
    )
    assert stateless.kind == "stateless"
    assert stateless.joins[0].condition == "USING (device_id)"
    assert stateless.output_key == ()


def test_group_by_alias_ordinal_and_expression_keys() -> None:
    plan = plan_pipeline(
        "CREATE PIPELINE g AS SELECT lower(device_id) AS dev, window_start, "
        "round(avg(temperature) * 2, 1) AS a2, count(*) FILTER (WHERE status = 'ok') AS ok "
        "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY dev, 2 HAVING count(*) > 1"
    )
    assert [k.expr for k in plan.keys] == ["LOWER(device_id)"]
    assert plan.output_key == ("dev", "window_start")
    assert plan.having == "_agg2 > 1"
    assert [a.func for a in plan.aggregates] == ["avg", "count", "count_star"]


def test_options_and_plain_group_by_with_changes() -> None:
    plan = plan_pipeline(
        "CREATE PIPELINE t AS SELECT device_id, sum(temperature) AS total FROM readings "
        "GROUP BY device_id WITH (emit = 'changes', start = 'latest', idle_timeout = '30s')"
    )
    assert plan.kind == "group"
    assert plan.options.start == "latest"
    assert plan.options.idle_timeout_ms == 30_000
    assert plan.output_key == ("device_id",)


UNSUPPORTED = [
    ("SELECT a FROM s ORDER BY a", "ORDER BY", "1:17"),
    ("SELECT a FROM s\nLIMIT 10", "LIMIT", "2:1"),
    ("SELECT DISTINCT a FROM s", "SELECT DISTINCT", "1:8"),
    ("SELECT a, lag(b) OVER (PARTITION BY a) FROM s", "window function (OVER)", "1:11"),
    (
        "SELECT a, sum(b) OVER (PARTITION BY a) FROM s",
        "an OVER aggregate without ORDER BY <event time column>",
        "1:11",
    ),
    ("SELECT a FROM (SELECT a FROM s UNION SELECT a FROM t) x", "this subquery in FROM", None),
    ("SELECT a FROM s WHERE a IN (SELECT b FROM t)", "subquery", None),
    ("SELECT a FROM s UNION SELECT a FROM t", "UNION", "1:17"),
    ("WITH x AS (SELECT 1) SELECT a FROM x", "common table expressions", "1:1"),
    (
        "SELECT a FROM s JOIN TUMBLE(t, ts, INTERVAL '1 minute') w ON s.a = w.a",
        "join of two streams",
        None,
    ),
    ("SELECT a FROM s JOIN s2 ON s.a = s2.a", "join of two streams", None),
    ("SELECT a FROM s RIGHT JOIN t ON s.a = t.a", "RIGHT JOIN", None),
    ("SELECT a FROM s, t", "join without ON or USING", None),
    ("SELECT a FROM read_csv('x.csv')", "table function", "1:15"),
    ("SELECT a, count(*) FROM s GROUP BY a", "GROUP BY without a window", "1:36"),
    (
        "SELECT device_id, window_start, temperature FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY device_id, window_start",
        "column temperature outside GROUP BY",
        "1:33",
    ),
    (
        "SELECT window_start, mode(x) AS m FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY window_start",
        "aggregate function mode()",
        "1:22",
    ),
    (
        "SELECT window_start, first(x) AS m FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY window_start",
        "aggregate function first()",
        None,
    ),
    (
        "SELECT window_start, sum(max(x)) AS m FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY window_start",
        "nested aggregate",
        None,
    ),
    (
        "SELECT device_id, count(*) AS n FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY device_id",
        "GROUP BY without window_start",
        None,
    ),
    (
        "SELECT count(*) AS n FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY device_id, window_start",
        "GROUP BY key device_id missing",
        None,
    ),
    ("SELECT * FROM TUMBLE(s, ts, INTERVAL '1 minute')", "TUMBLE without aggregates", None),
    ("SELECT a FROM TUMBLE(s, ts, INTERVAL '1 month')", "INTERVAL '1 month'", None),
    (
        "SELECT a FROM HOP(s, ts, INTERVAL '2 minutes', INTERVAL '1 minute')",
        "HOP slide longer than its size",
        None,
    ),
    ("SELECT a FROM s WHERE count(*) > 1", "aggregate in WHERE", "1:23"),
    (
        "SELECT window_start, approx_quantile(x, 2) AS q FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY window_start",
        "approx_quantile() quantile",
        None,
    ),
    (
        "SELECT window_start, avg(DISTINCT x) AS q FROM TUMBLE(s, ts, INTERVAL '1 minute') GROUP BY window_start",
        "avg(DISTINCT ...)",
        None,
    ),
    ("SELECT a FROM s GROUP BY ROLLUP(a)", "ROLLUP", None),
]


@pytest.mark.parametrize(("body", "construct", "position"), UNSUPPORTED)
def test_unsupported_constructs_name_and_position(
    body: str, construct: str, position: str | None
) -> None:
    with pytest.raises(UnsupportedSQL) as info:
        plan_pipeline(f"CREATE PIPELINE p AS\n{body}", streams=("s", "s2"))
    message = info.value.message
    assert construct in message
    assert re.search(r"at line \d+, column \d+", message), message
    if position is not None:
        line, column = position.split(":")
        assert f"at line {int(line) + 1}, column {column}" in message, message


def test_mode_rules() -> None:
    window = "FROM {src} GROUP BY device_id, window_start, window_end"
    select = "SELECT device_id, window_start, count(*) AS n "
    session = "SESSION(s, ts, INTERVAL '1 minute')"
    with pytest.raises(UnsupportedSQL, match="SESSION with emit = 'changes'"):
        plan_pipeline(
            f"CREATE PIPELINE p AS {select}{window.format(src=session)} WITH (emit='changes')"
        )
    tumble = "TUMBLE(s, ts, INTERVAL '1 minute')"
    with pytest.raises(UnsupportedSQL, match="HAVING with emit = 'changes'"):
        plan_pipeline(
            f"CREATE PIPELINE p AS {select}{window.format(src=tumble)} HAVING count(*) > 2 "
            "WITH (emit='changes')"
        )


def test_bad_options_and_syntax() -> None:
    with pytest.raises(UnsupportedSQL, match="option 'colour' at line 1"):
        plan_pipeline("CREATE PIPELINE p AS SELECT a FROM s WITH (colour = 'red')")
    with pytest.raises(BadRequest, match="emit is 'final' or 'changes'"):
        plan_pipeline("CREATE PIPELINE p AS SELECT a FROM s WITH (emit = 'sometimes')")
    with pytest.raises(BadRequest, match="watermark_delay"):
        plan_pipeline("CREATE PIPELINE p AS SELECT a FROM s WITH (watermark_delay = 'soon')")
    with pytest.raises(BadRequest, match="CREATE PIPELINE <name> AS SELECT"):
        plan_pipeline("SELECT a FROM s")
    with pytest.raises(BadRequest, match="SQL syntax error at line 2"):
        plan_pipeline("CREATE PIPELINE p AS\nSELECT a FROM WHERE")


def test_schema_time_errors_found_when_built() -> None:
    with pytest.raises(QueryError, match="no column 'missing'"):
        Pipeline.from_sql(
            "CREATE PIPELINE p AS SELECT window_start, count(*) AS n "
            "FROM TUMBLE(readings, missing, INTERVAL '1 minute') GROUP BY window_start",
            READINGS,
        )
    with pytest.raises(QueryError, match="nope"):
        Pipeline.from_sql("CREATE PIPELINE p AS SELECT nope FROM readings", READINGS)
    with pytest.raises(UnsupportedSQL, match="needs a number"):
        Pipeline.from_sql(
            "CREATE PIPELINE p AS SELECT window_start, sum(status) AS s "
            "FROM TUMBLE(readings, ts, INTERVAL '1 minute') GROUP BY window_start",
            READINGS,
        )
    with pytest.raises(UnsupportedSQL, match="aggregate function"):
        Pipeline.from_sql(
            "CREATE PIPELINE p AS SELECT geomean(temperature) FROM readings", READINGS
        )
