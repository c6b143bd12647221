"""Every metric and every setting is documented, and metric names follow the convention.

The catalogue is introspected (the Prometheus objects declared in
``headwater.observability.metrics`` and ``Settings.model_fields``) and compared with the
tables in ``docs/metrics.md`` and ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from headwater.observability import metrics
from headwater.settings import Settings, load_settings

DOCS = Path(__file__).resolve().parents[2] / "docs"

SUBSYSTEMS = {
    "ingest", "quarantine", "log", "store", "query", "http", "pipeline", "engine", "checkpoint",
    "source", "sink", "connector", "alert", "subscription", "catalog", "archive", "backfill",
    "cluster", "process", "demo", "ui",
}  # fmt: skip
UNITS = {
    "seconds",
    "bytes",
    "rows",
    "ms",
    "entries",
    "keys",
    "ratio",
    "info",
    "connections",
    "requests",
    "processes",
}
UNBOUNDED_LABELS = {
    "request_id",
    "event_id",
    "id",
    "key",
    "key_id",
    "device_id",
    "user",
    "path",
    "url",
}


def declared_metrics() -> dict[str, MetricWrapperBase]:
    """Exposed name → metric object (counters are exposed with ``_total``)."""
    found = {}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            name = value._name + ("_total" if value._type == "counter" else "")
            found[name] = value
    return found


def table_rows(doc: str) -> dict[str, list[str]]:
    """First-column name → cells, for every markdown table row whose first cell is `code`."""
    rows = {}
    for line in (DOCS / doc).read_text().splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        rows[cells[0].strip("`")] = cells
    return rows


def test_metrics_are_declared_and_named_once() -> None:
    names = declared_metrics()
    assert "headwater_ingest_rows_total" in names
    assert len(names) == sum(isinstance(v, MetricWrapperBase) for v in vars(metrics).values())


@pytest.mark.parametrize("name", sorted(declared_metrics()))
def test_metric_is_documented(name: str) -> None:
    metric = declared_metrics()[name]
    rows = table_rows("metrics.md")
    assert name in rows, f"{name} is not documented in docs/metrics.md; add a row to its table"
    _, kind, labels, meaning = rows[name]
    assert kind == metric._type, f"docs/metrics.md says {name} is a {kind}, it is a {metric._type}"
    documented = set(re.findall(r"`([a-z_]+)`", labels))
    assert documented == set(metric._labelnames), (
        f"labels of {name}: docs {documented}, code {metric._labelnames}"
    )
    assert meaning, f"{name} has no meaning in docs/metrics.md"


def test_no_documented_metric_is_gone() -> None:
    stale = set(table_rows("metrics.md")) - set(declared_metrics())
    assert not stale, f"docs/metrics.md lists metrics the code no longer declares: {sorted(stale)}"


@pytest.mark.parametrize("name", sorted(declared_metrics()))
def test_metric_name_follows_the_convention(name: str) -> None:
    metric = declared_metrics()[name]
    assert re.fullmatch(r"headwater(_[a-z0-9]+){3,}", name), (
        f"{name}: want headwater_<subsystem>_<what>_<unit>"
    )
    parts = name.split("_")
    assert parts[1] in SUBSYSTEMS, (
        f"{name}: unknown subsystem {parts[1]!r} (known: {sorted(SUBSYSTEMS)})"
    )
    if metric._type == "counter":
        assert name.endswith("_total")
    else:
        assert not name.endswith("_total"), f"{name}: only counters end in _total"
        assert parts[-1] in UNITS, (
            f"{name}: a {metric._type} ends in a unit, one of {sorted(UNITS)}"
        )
    for label in metric._labelnames:
        assert re.fullmatch(r"[a-z][a-z0-9_]*", label), f"{name}: label {label!r} is not snake_case"
        assert label not in UNBOUNDED_LABELS, f"{name}: label {label!r} has unbounded values"
    assert metric._documentation.strip(), f"{name} has no help text"


def toml_literal(value: Any) -> str:
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, (int, float)):
        return f"`{value!r}`"
    return f'`"{value}"`'


@pytest.mark.parametrize("name", sorted(Settings.model_fields))
def test_setting_is_documented(name: str) -> None:
    field = Settings.model_fields[name]
    assert field.description, f"Settings.{name} has no description"
    rows = table_rows("configuration.md")
    assert name in rows, (
        f"setting {name} is not documented in docs/configuration.md; add a row to its table"
    )
    _, env, default, meaning = rows[name]
    assert env == f"`HEADWATER_{name.upper()}`"
    want = toml_literal(field.default)
    assert default == want or default.startswith(want + " "), (
        f"{name}: docs say {default}, the default is {want}"
    )
    assert meaning


def test_no_documented_setting_is_gone() -> None:
    stale = set(table_rows("configuration.md")) - set(Settings.model_fields)
    assert not stale, f"docs/configuration.md lists settings that do not exist: {sorted(stale)}"


def test_the_example_config_file_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    text = (DOCS / "configuration.md").read_text()
    assert "--config" in text and "HEADWATER_CONFIG" in text
    example = re.search(r"```toml\n(.*?)```", text, re.S)
    assert example, "docs/configuration.md has no ```toml example"
    path = tmp_path / "headwater.toml"
    path.write_text(example.group(1))
    for var in [v for v in os.environ if v.startswith("HEADWATER_")]:
        monkeypatch.delenv(var)
    settings = load_settings(path)
    for key, value in tomllib.loads(example.group(1)).items():
        got = getattr(settings, key)
        assert (str(got) if isinstance(got, Path) else got) == value, key


def test_every_stream_definition_field_is_documented() -> None:
    import json

    from headwater.model.schema import Field, Rule, StreamSchema, check_schema, schema_from_dict

    text = (DOCS / "streams.md").read_text()
    documented = set(re.findall(r"^\| `([a-z_]+)`", text, re.M))
    documented |= {m for group in re.findall(r"^\| `fields\[\]\.([a-z_`, ]+)` \|", text, re.M)
                   for m in re.findall(r"[a-z_]+", group)}  # fmt: skip
    for struct in (StreamSchema, Field):
        missing = set(struct.__struct_fields__) - documented - {"version", "rules"} - {"type"}
        assert not missing, f"{struct.__name__} fields missing from docs/streams.md: {missing}"
    assert "rules" in documented and set(Rule.__struct_fields__) <= {"expr", "code", "message"}
    example = json.loads(text.split("```json", 1)[1].split("```", 1)[0])
    check_schema(schema_from_dict(example))  # the example is a valid definition
