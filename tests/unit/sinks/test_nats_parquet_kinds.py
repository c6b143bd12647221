"""The nats and parquet sink kinds: documented options, config checks, atomic files."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headwater.errors import BadRequest
from headwater.sinks.config import parse_sink
from headwater.sinks.nats import NatsSinkConfig
from headwater.sinks.parquet import ParquetConfig, file_name, write_atomically

DOC = (Path(__file__).resolve().parents[3] / "docs" / "sinks.md").read_text()


def section(title: str) -> str:
    found = re.search(rf"^## {re.escape(title)}\n(.*?)^## ", DOC, re.S | re.M)
    assert found is not None, title
    return found.group(1)


@pytest.mark.parametrize(
    ("model", "title"),
    [(NatsSinkConfig, "NATS JetStream (`nats`)"), (ParquetConfig, "Parquet files (`parquet`)")],
)
def test_every_option_is_documented(model: type, title: str) -> None:
    text = section(title)
    missing = [f for f in model.model_fields if f"`{f}`" not in text]
    assert not missing, f"document these options in docs/sinks.md ({title}): {missing}"


def test_a_parquet_path_must_be_inside_the_root(tmp_path: Path) -> None:
    root = tmp_path / "exports"
    spec = {"name": "a", "kind": "parquet", "from": "s"}
    _, _, _, cfg = parse_sink({**spec, "config": {"path": str(root / "x")}}, root)
    assert isinstance(cfg, ParquetConfig) and cfg.max_concurrency == 1
    for path in (str(tmp_path / "other"), str(root / ".." / "other")):
        with pytest.raises(BadRequest) as refused:
            parse_sink({**spec, "config": {"path": path}}, root)
        assert refused.value.code == "path_not_allowed"
    with pytest.raises(BadRequest) as relative:
        parse_sink({**spec, "config": {"path": "x"}}, root)
    assert relative.value.code == "invalid_sink_config"


def test_a_rewritten_file_replaces_the_first(tmp_path: Path) -> None:
    name = file_name("s", 100)
    write_atomically(pa.table({"a": [1, 2]}), tmp_path / "d", name, "zstd")
    write_atomically(pa.table({"a": [1, 2, 3]}), tmp_path / "d", name, "none")
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["s-00000000000000000100.parquet"]
    assert pq.read_table(tmp_path / "d" / name).column("a").to_pylist() == [1, 2, 3]
