"""Pipeline SQL errors name the token or construct, its line and column, and the fix."""

from __future__ import annotations

import pytest

from headwater.engine.sql.planner import plan_pipeline
from headwater.errors import BadRequest, UnsupportedSQL

HEAD = "CREATE PIPELINE p AS\n"
WINDOWED = "SELECT window_start, count(*) AS n\nFROM {src}\nGROUP BY window_start, window_end"


def refused(body: str) -> BadRequest:
    with pytest.raises(BadRequest) as info:
        plan_pipeline(HEAD + body)
    return info.value


@pytest.mark.parametrize(
    ("body", "position", "says"),
    [
        ("SELCT device_id FROM readings", "line 2, column 17", ["unexpected 'FROM'", "did you mean SELECT (line 2, column 1: SELCT)"]),
        ("SELECT device_id FORM readings", "line 2, column 23", ["unexpected 'readings'", "did you mean FROM (line 2, column 18: FORM)"]),
        ("SELECT count(* FROM readings", "line 2, column 16", ["expected ')' before 'FROM'"]),
        ("SELECT device_id, count(*) AS n FROM readings\nGROUP device_id", "line 3, column 7", ["unexpected 'device_id'", "did you mean GROUP BY?"]),
        ("SELECT 'abc FROM readings", "line 2, column 8", ["the string opened by ' is never closed"]),
    ],
)  # fmt: skip
def test_syntax_errors_name_the_token_and_where(body: str, position: str, says: list[str]) -> None:
    error = refused(body)
    assert error.code == "sql_syntax_error" and not isinstance(error, UnsupportedSQL)
    assert f"SQL syntax error at {position}: " in error.message, error.message
    for words in says:
        assert words in error.message, error.message
    assert error.details["position"] == position


FLINK = [
    (
        "TABLE(TUMBLE(TABLE bid, DESCRIPTOR(ts), INTERVAL '10' SECOND))",
        "TABLE(TUMBLE(...))",
        "write TUMBLE(bid, ts, INTERVAL '10 seconds')",
    ),
    (
        "TABLE(HOP(TABLE bid, DESCRIPTOR(ts), INTERVAL '5' SECOND, INTERVAL '1' MINUTE))",
        "TABLE(HOP(...))",
        "write HOP(bid, ts, INTERVAL '5 seconds', INTERVAL '1 minute')",
    ),
    (
        "TABLE(SESSION(TABLE bid PARTITION BY item, DESCRIPTOR(ts), INTERVAL '30' SECOND))",
        "TABLE(SESSION(...))",
        "write SESSION(bid, ts, INTERVAL '30 seconds') ... GROUP BY item, window_start",
    ),
    (
        "TABLE(CUMULATE(TABLE bid, DESCRIPTOR(ts), INTERVAL '1' MINUTE, INTERVAL '1' HOUR))",
        "TABLE(CUMULATE(...))",
        "use HOP, or emit = 'changes'",
    ),
]


@pytest.mark.parametrize(("source", "construct", "hint"), FLINK)
def test_flink_window_functions_get_the_headwater_form(
    source: str, construct: str, hint: str
) -> None:
    error = refused(WINDOWED.format(src=source))
    assert isinstance(error, UnsupportedSQL) and error.code == "unsupported_sql"
    assert f"Flink window table function {construct} at line 3, column 6" in error.message
    assert hint in error.message, error.message
    assert error.details["position"] == "line 3, column 6"


@pytest.mark.parametrize(
    ("body", "construct", "position", "hint"),
    [
        ("SELECT `device_id` FROM readings", "backtick-quoted name `device_id`", "line 2, column 8", 'double quotes ("device_id")'),
        ("SELECT device_id,\n  PROCTIME() AS seen FROM readings", "PROCTIME() (processing time)", "line 3, column 3", "TUMBLE(readings, ts, INTERVAL '1 minute')"),
        ("SELECT * FROM readings r\nJOIN devices FOR SYSTEM_TIME AS OF r.ts AS d ON r.device_id = d.device_id", "FOR SYSTEM_TIME AS OF (temporal join)", "line 3, column 14", "JOIN devices d ON"),
        ("SELECT * FROM readings WATERMARK FOR ts AS ts - INTERVAL '5' SECOND", "WATERMARK FOR", "line 2, column 24", "watermark_delay = '5 seconds'"),
        ("SELECT SESSION(ts) AS s FROM readings", "SESSION(...) outside FROM", "line 2, column 8", "FROM SESSION(stream, time_column, INTERVAL gap)"),
        ("SELECT device_id FROM readings WHERE TUMBLE(ts, 1) > 0", "TUMBLE(...) outside FROM", "line 2, column 38", "FROM TUMBLE(stream"),
        ("SELECT * FROM readings TABLESAMPLE (10 PERCENT)", "TABLESAMPLE on a table", None, "drop it"),
        ("SELECT * FROM readings PIVOT (count(*) FOR status IN ('ok'))", "PIVOT / UNPIVOT on a table", None, "drop it"),
        ("SELECT * FROM (VALUES (1))", "FROM VALUES", None, "read one stream"),
    ],
)  # fmt: skip
def test_foreign_constructs_are_named_with_the_headwater_form(
    body: str, construct: str, position: str | None, hint: str
) -> None:
    error = refused(body)
    assert isinstance(error, UnsupportedSQL) and error.code == "unsupported_sql"
    assert error.details["construct"] == construct, error.message
    if position is not None:
        assert error.details["position"] == position, error.message
    assert hint in error.message, error.message


@pytest.mark.parametrize(
    "body",
    [
        "SELECT SESSION(ts) FROM readings",
        "SELECT device_id FROM readings WHERE SESSION(ts, 1) > 0",
        "SELECT count(*) FROM readings GROUP BY SESSION(ts, INTERVAL '1 minute') WITH (emit = 'changes')",
        "SELECT window_start, count(*) FROM SESSION(readings, ts) GROUP BY window_start",
        "SELECT window_start FROM TUMBLE(SESSION(readings, ts, INTERVAL '1 minute'), ts, INTERVAL '1 minute')",
        "SELECT SESSION(ts FROM readings",
        "SELECT * FROM readings r JOIN devices FOR SYSTEM_TIME AS OF r.ts AS d ON r.device_id = d.device_id",
        "SELECT * FROM readings TABLESAMPLE (10 PERCENT)",
        "SELECT * FROM readings PIVOT (count(*) FOR status IN ('ok'))",
    ],
)  # fmt: skip
def test_parser_names_never_reach_messages(body: str) -> None:
    message = " " + refused(body).message
    for name in ("SESSWIN", "VERSION", "PIVOTS", " SAMPLE on", "Anonymous"):
        assert name not in message, message
