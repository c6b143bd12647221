"""docs/sinks.md documents every option of the ``postgres`` kind; its example is valid."""

from __future__ import annotations

import re
from pathlib import Path

import orjson
import pytest

from headwater.errors import BadRequest
from headwater.sinks.config import PostgresConfig, parse_sink

DOC = (Path(__file__).resolve().parents[3] / "docs" / "sinks.md").read_text()


def test_every_option_is_documented() -> None:
    section = DOC.split("## PostgreSQL (`kind: postgres`)")[1].split("\n## ")[0]
    documented = set(re.findall(r"^\| `([a-z_0-9]+)`", section, re.M))
    documented |= {m for row in re.findall(r"^\| (`.*?) \|", section, re.M)
                   for m in re.findall(r"`([a-z_0-9]+)`", row)}  # fmt: skip
    missing = set(PostgresConfig.model_fields) - documented
    assert not missing, f"document these options in docs/sinks.md: {sorted(missing)}"


def test_the_example_is_a_valid_sink() -> None:
    block = re.search(r"<!-- postgres-sink-example -->\s*```json\n(.*?)```", DOC, re.S)
    assert block is not None
    name, kind, source, config = parse_sink(orjson.loads(block.group(1)))
    assert (name, kind, source) == ("latest_readings", "postgres", "readings")
    assert isinstance(config, PostgresConfig) and config.key == ["device_id"]


@pytest.mark.parametrize(
    ("config", "names"),
    [
        ({"dsn": "host=x"}, "key"),
        ({"dsn": "host=x", "key": ["a b"]}, "key"),
        ({"dsn": "host=x", "key": ["id"], "table": "x;drop"}, "table"),
        ({"dsn": "=nonsense", "key": ["id"]}, "dsn"),
        ({"dsn": "host=x", "key": ["id"], "batch_rows": 0}, "batch_rows"),
    ],
)
def test_a_bad_config_is_a_400_naming_the_option(config: dict[str, object], names: str) -> None:
    with pytest.raises(BadRequest) as err:
        parse_sink({"name": "pg", "kind": "postgres", "from": "readings", "config": config})
    assert names in err.value.message
