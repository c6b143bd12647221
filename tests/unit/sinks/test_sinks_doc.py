"""docs/sinks.md documents every option, and its example is a valid sink."""

from __future__ import annotations

import re
from pathlib import Path

import orjson

from headwater.sinks.config import HttpConfig, KafkaSinkConfig, parse_sink

DOC = (Path(__file__).resolve().parents[3] / "docs" / "sinks.md").read_text()


def test_every_option_is_documented() -> None:
    documented = set(re.findall(r"^\| `([a-z_0-9]+)` \|", DOC, re.M))
    missing = set(HttpConfig.model_fields) - documented
    missing |= {f for f in KafkaSinkConfig.model_fields if f not in HttpConfig.model_fields
                and f not in documented}  # fmt: skip
    assert not missing, f"document these sink options in docs/sinks.md: {sorted(missing)}"


def test_the_example_is_a_valid_sink() -> None:
    block = re.search(r"<!-- sink-example -->\s*```json\n(.*?)```", DOC, re.S)
    assert block is not None
    name, kind, source, config = parse_sink(orjson.loads(block.group(1)))
    assert (name, kind, source, config.batch_rows) == ("partner", "http", "hot", 20)
