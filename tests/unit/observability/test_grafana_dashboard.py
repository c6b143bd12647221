"""The Grafana dashboard only queries series that Headwater exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from prometheus_client.metrics import MetricWrapperBase

from headwater.observability import metrics

DASHBOARD = (
    Path(__file__).resolve().parents[3] / "deploy" / "grafana" / "dashboards" / "headwater.json"
)
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count")}

# PromQL keywords (functions are told apart by the "(" that follows them)
PROMQL_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
}


def headwater_series() -> set[str]:
    """Every series name the module's metrics produce."""
    names = set()
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase):
            names.add(value._name)
            names.update(value._name + s for s in SUFFIXES.get(value._type, ()))
    return names


def exported_series() -> set[str]:
    """What /metrics serves: the module's metrics, the client's default collectors, and ``up``."""
    names = {"up"}
    for family in prometheus_client.REGISTRY.collect():
        names.update(sample.name for sample in family.samples)
        names.add(family.name)
    return names | headwater_series()


def queries(dashboard: dict[str, Any]) -> list[str]:
    found = []
    for panel in dashboard["panels"]:
        found += [t["expr"] for t in panel.get("targets", [])]
        for inner in panel.get("panels", []):
            found += [t["expr"] for t in inner.get("targets", [])]
    for var in dashboard["templating"]["list"]:
        if var["type"] == "query":
            found.append(var["query"]["query"] if isinstance(var["query"], dict) else var["query"])
    return found


def series_in(expr: str) -> set[str]:
    """Metric names of an expression: identifiers outside braces, strings and ``by (...)`` lists."""
    text = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr.strip())  # a Grafana variable query
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)  # drop string literals (label values)
    text = re.sub(r"\{[^}]*\}", "{}", text)  # drop label matchers
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\[[^\]]*\]", "[]", text)  # drop ranges ([5m], [$__rate_interval])
    words = set(re.findall(r"(?<![\w$.])[a-zA-Z_:][\w:]*(?![\w:]*\s*\()", text))
    return {w for w in words if w not in PROMQL_KEYWORDS}


def load() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def test_series_in_parses_promql() -> None:
    expr = 'histogram_quantile(0.99, sum by (le, route) (rate(headwater_http_request_seconds_bucket{instance=~"$instance"}[$__rate_interval])))'
    assert series_in(expr) == {"headwater_http_request_seconds_bucket"}
    assert series_in('min(up{job="headwater"}) or absent(nope_total)') == {"up", "nope_total"}
    assert series_in('label_values(headwater_ingest_rows_total{tenant=~"$tenant"}, stream)') == {
        "headwater_ingest_rows_total"
    }


@pytest.mark.parametrize("expr", queries(load()))
def test_every_query_uses_exported_series(expr: str) -> None:
    unknown = series_in(expr) - exported_series()
    assert not unknown, (
        f"the dashboard queries series Headwater does not export: {sorted(unknown)} in {expr}"
    )
    for name in series_in(expr):
        if name.startswith("headwater_"):
            assert name in headwater_series(), name


def test_the_catalogue_is_on_the_dashboard() -> None:
    used = set().union(*(series_in(e) for e in queries(load())))
    shown = {n for n in headwater_series() if n in used}
    deprecated = {family.name for family in metrics.DEPRECATED.collect()}
    for value in vars(metrics).values():
        if isinstance(value, MetricWrapperBase) and value._name not in deprecated:
            names = {value._name, *(value._name + s for s in SUFFIXES.get(value._type, ()))}
            assert names & shown, (
                f"{value._name} has no panel on deploy/grafana/dashboards/headwater.json; add one"
            )


def test_layout_and_datasource() -> None:
    dashboard = load()
    assert dashboard["uid"] == "headwater"
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel[
                "title"
            ]
            assert panel["targets"], panel["title"]
