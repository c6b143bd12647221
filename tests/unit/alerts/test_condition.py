"""Alert conditions: checked against the table at creation, evaluated per key in DuckDB."""

from __future__ import annotations

import pyarrow as pa
import pytest

from headwater.alerts.condition import compile_condition, latest_per_key
from headwater.errors import BadRequest

SCHEMA = pa.schema([("_offset", pa.int64()), ("device", pa.string()),
                    ("temp", pa.float64()), ("is_anomaly", pa.bool_())])  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["temp >", "humidity > 3", "temp + 1", "device", "now() > temp",
     "levenshtein(device, 'x') > 1", "repeat(device, 1000000) = ''", "temp > (SELECT 1)",
     "temp > 1; DROP TABLE x", "(" * 400 + "temp > 1" + ")" * 400, "temp > " + "1+" * 3000 + "1"],
)  # fmt: skip
def test_bad_conditions_are_refused_with_a_400(text: str) -> None:
    with pytest.raises(BadRequest) as err:
        compile_condition(text, "device", "_offset", SCHEMA)
    assert err.value.code == "bad_alert_condition"


def test_unknown_key_is_refused() -> None:
    with pytest.raises(BadRequest) as err:
        compile_condition("temp > 1", "nope", "_offset", SCHEMA)
    assert err.value.code == "bad_alert_key"


def test_latest_row_per_key_decides_and_null_does_not_hold() -> None:
    rows = pa.table({"_offset": [0, 1, 2, 3, 4], "device": ["a", "b", "a", "c", None],
                     "temp": [50.0, 50.0, None, 10.0, 99.0],
                     "is_anomaly": [True, False, True, None, True]}, schema=SCHEMA)  # fmt: skip
    hot = compile_condition("TEMP > 40", "device", "_offset", SCHEMA)
    got = {r["__key"]: r["__holds"] for r in latest_per_key(hot, rows).to_pylist()}
    assert got == {"a": False, "b": True, "c": False}  # a's latest temp is NULL; no NULL key
    odd = compile_condition("is_anomaly", "device", "_offset", SCHEMA)
    got = {r["__key"]: r["__holds"] for r in latest_per_key(odd, rows).to_pylist()}
    assert got == {"a": True, "b": False, "c": False}
