"""A real Prometheus scrapes a real ``headwater serve``; the deploy/prometheus files pass promtool.

Needs the ``prometheus`` and ``promtool`` binaries (Debian package ``prometheus``;
``scripts/install-test-deps.sh`` installs it).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from serverproc import ADMIN_KEY, READINGS, TRUST, Server, free_port

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "headwater.json"


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is not installed; run scripts/install-test-deps.sh (Debian package prometheus)"
        )
    return path


def promtool(*args: str, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, f"promtool {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


# --- the shipped files --------------------------------------------------------------------


def test_prometheus_config_and_rules_are_valid(tmp_path: Path) -> None:
    for name in ("prometheus.yml", "alerts.yml", "alerts.test.yml"):
        shutil.copy(DEPLOY / "prometheus" / name, tmp_path / name)
    (tmp_path / "headwater.key").write_text(ADMIN_KEY)  # the credentials_file the config names
    out = promtool("check", "config", "--lint=all", "prometheus.yml", cwd=tmp_path)
    assert "1 rule files found" in out
    promtool("check", "rules", "--lint=all", "alerts.yml", cwd=tmp_path)
    promtool("test", "rules", "alerts.test.yml", cwd=tmp_path)
    # the compose variant names paths inside the container: check its syntax only
    promtool("check", "config", "--syntax-only", str(DEPLOY / "docker" / "prometheus.yml"))


# alerts that compare one series with a constant need no case of their own
PLAIN_THRESHOLDS = {
    "HeadwaterHttpErrors",
    "HeadwaterPushback",
    "HeadwaterFsyncSlow",
    "HeadwaterStoreLagHigh",
    "HeadwaterPipelineEventTimeLagHigh",
    "HeadwaterPipelineErrorRows",
}


def test_every_alert_has_a_unit_test() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    cases = (DEPLOY / "prometheus" / "alerts.test.yml").read_text()
    alerts = set(re.findall(r"^\s+- alert: (\w+)", rules, re.M))
    untested = alerts - set(re.findall(r"alertname: (\w+)", cases)) - PLAIN_THRESHOLDS
    assert not untested, f"alerts without a case in alerts.test.yml: {sorted(untested)}"


# --- a live scrape ------------------------------------------------------------------------


class Prometheus:
    def __init__(self, workdir: Path, target: str, key: str) -> None:
        self.dir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        # one client for every poll (a new one costs ~20 ms of CPU in TLS setup)
        self.http = httpx.Client(base_url=self.url, verify=TRUST)
        (workdir / "headwater.key").write_text(key)
        shutil.copy(DEPLOY / "prometheus" / "alerts.yml", workdir / "alerts.yml")
        (workdir / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}\n"
            "rule_files: [alerts.yml]\n"
            "scrape_configs:\n"
            "  - job_name: headwater\n"
            "    authorization: {type: Bearer, credentials_file: headwater.key}\n"
            f"    static_configs: [{{targets: ['{target}']}}]\n"
        )

    def start(self, timeout_s: float = 30.0) -> Prometheus:
        self.log = open(self.dir / "prometheus.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [binary("prometheus"), f"--config.file={self.dir / 'prometheus.yml'}",
             f"--storage.tsdb.path={self.dir / 'tsdb'}", f"--web.listen-address=127.0.0.1:{self.port}",
             "--log.level=warn"],
            stdout=self.log, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"prometheus exited: {self.logs()}")
            try:
                if self.http.get("/-/ready", timeout=1.0).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"prometheus did not become ready: {self.logs()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.log.close()
        self.http.close()

    def logs(self) -> str:
        return (self.dir / "prometheus.log").read_text(errors="replace")[-3000:]

    def api(self, path: str, **params: str) -> Any:
        r = self.http.get("/api/v1/" + path, params=params, timeout=10.0)
        body = r.json()
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.api("query", query=expr)["result"]
        return result

    def value(self, expr: str) -> float | None:
        result = self.query(expr)
        return float(result[0]["value"][1]) if result else None

    def wait_for(
        self, expr: str, ok: Callable[[float | None], bool], timeout_s: float = 30.0
    ) -> float | None:
        deadline = time.monotonic() + timeout_s
        while True:
            got = self.value(expr)
            if ok(got):
                return got
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{expr} = {got} after {timeout_s}s; prometheus log: {self.logs()}"
                )
            time.sleep(0.25)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Prometheus]]:
    server = Server(tmp_path_factory.mktemp("hw") / "data").start()
    prom = Prometheus(tmp_path_factory.mktemp("prom"), f"127.0.0.1:{server.port}", ADMIN_KEY)
    try:
        prom.start()
        yield server, prom
    finally:
        prom.stop()
        server.stop()


def events(start: int, n: int, bad: int = 0) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = [
        {"device_id": f"d{i % 5}", "ts": f"2026-11-21T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
         "temperature": 20.0 + i % 10, "status": "ok", "event_id": f"e{i}"}
        for i in range(start, start + n)
    ]  # fmt: skip
    for row in rows[:bad]:
        row["temperature"] = 999.0
    return rows


def test_ingested_rows_show_up_in_prometheus(stack: tuple[Server, Prometheus]) -> None:
    server, prom = stack
    prom.wait_for('up{job="headwater"}', lambda v: v == 1.0)
    accepted = (
        'headwater_ingest_rows_total{job="headwater", stream="prom_readings", outcome="accepted"}'
    )
    with server.client() as c:
        assert c.post("/v1/streams", json={**READINGS, "name": "prom_readings"}).status_code == 201
        r = c.post("/v1/streams/prom_readings/events", json=events(0, 10, bad=1))
        assert r.json()["accepted"] == 9, r.text
        prom.wait_for(accepted, lambda v: v == 9.0)
        for batch in range(1, 4):
            assert (
                c.post("/v1/streams/prom_readings/events", json=events(batch * 100, 50)).status_code
                == 200
            )
            prom.wait_for(accepted, lambda v, b=batch: v == 9.0 + 50 * b)  # type: ignore[misc]
    rejected = 'headwater_ingest_rows_total{stream="prom_readings", outcome="rejected"}'
    assert prom.value(rejected) == 1.0
    assert (
        prom.value('headwater_quarantine_rows_total{stream="prom_readings", code="above_max"}')
        == 1.0
    )
    prom.wait_for(
        'increase(headwater_ingest_rows_total{stream="prom_readings"}[1m])', lambda v: (v or 0) > 0
    )
    assert (prom.value("sum(headwater_ingest_decode_seconds_count)") or 0) >= 4
    assert (prom.value("sum(headwater_log_fsync_seconds_count)") or 0) >= 1
    assert (
        prom.value('sum(headwater_http_requests_total{route="/v1/streams/{name}/events"})') or 0
    ) >= 4
    assert (prom.value("headwater_process_resident_memory_bytes") or 0) > 10_000_000
    prom.wait_for(
        'headwater_log_consumer_lag_rows{topic="default.prom_readings"}', lambda v: v == 0.0
    )


def test_alert_rules_evaluate_against_live_series(stack: tuple[Server, Prometheus]) -> None:
    _, prom = stack
    deadline = time.monotonic() + 30
    while True:
        rules = [r for g in prom.api("rules")["groups"] for r in g["rules"]]
        if rules and all(
            r.get("lastEvaluation", "").startswith("2") and r["health"] != "unknown" for r in rules
        ):
            break
        assert time.monotonic() < deadline, f"rules not evaluated: {rules}"
        time.sleep(0.25)
    broken = {r["name"]: r.get("lastError") for r in rules if r["health"] != "ok"}
    assert not broken, broken
    firing = {
        a["labels"]["alertname"] for a in prom.api("alerts")["alerts"] if a["state"] == "firing"
    }
    assert "HeadwaterDown" not in firing and "HeadwaterTargetMissing" not in firing


def grafana_to_promql(expr: str) -> str:
    expr = re.sub(r"^label_values\((.*),\s*\w+\)$", r"\1", expr.strip())
    expr = expr.replace("$__rate_interval", "1m")
    return re.sub(r"\$\{?\w+\}?", ".*", expr)


def test_dashboard_queries_run_on_prometheus(stack: tuple[Server, Prometheus]) -> None:
    _, prom = stack
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    exprs += [v["query"]["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    for expr in exprs:
        prom.query(grafana_to_promql(expr))  # asserts Prometheus accepted it
    by_outcome = next(
        t["expr"]
        for p in dashboard["panels"]
        if p["title"] == "Rows by stream and outcome"
        for t in p["targets"]
    )
    prom.wait_for(f"count({grafana_to_promql(by_outcome)})", lambda v: (v or 0) >= 1)


def test_pipeline_series_show_up_in_prometheus(stack: tuple[Server, Prometheus]) -> None:
    server, prom = stack
    with server.client() as c:
        assert c.post("/v1/streams", json={**READINGS, "name": "prom_pipe_in"}).status_code == 201
        sql = (
            "CREATE PIPELINE prom_per_device AS SELECT device_id, window_start, window_end, count(*) AS n "
            "FROM TUMBLE(prom_pipe_in, ts, INTERVAL '1 minute') GROUP BY device_id, window_start, window_end "
            "WITH (emit = 'changes')"
        )
        r = c.post("/v1/pipelines", json={"sql": sql})
        assert r.status_code in (200, 201), r.text
        assert c.post("/v1/streams/prom_pipe_in/events", json=events(0, 40)).status_code == 200
    labels = '{pipeline="prom_per_device"}'
    prom.wait_for(f"headwater_pipeline_rows_in_total{labels}", lambda v: v == 40.0)
    prom.wait_for(f"headwater_pipeline_rows_out_total{labels}", lambda v: (v or 0) > 0)
    prom.wait_for(f"headwater_pipeline_log_lag_rows{labels}", lambda v: v == 0.0)
    watermark = prom.value(f"headwater_pipeline_watermark_timestamp_seconds{labels}")
    assert watermark is not None and 1.7e9 < watermark < 1.9e9  # 2026, in seconds
    assert prom.value(f"headwater_pipeline_watermark_ms{labels}") is None  # deprecated, off


def live_metrics(server: Server) -> str:
    with server.client() as c:
        r = c.get("/metrics")
        assert r.status_code == 200
        return r.text


def check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [binary("promtool"), "check", "metrics"], input=text, capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip


def test_promtool_finds_no_problem_in_live_metrics(stack: tuple[Server, Prometheus]) -> None:
    server, _ = stack
    with server.client() as c:
        assert c.post("/v1/streams", json={**READINGS, "name": "lint_in"}).status_code == 201
        sql = (
            "CREATE PIPELINE lint_per_device AS SELECT device_id, window_start, window_end, "
            "count(*) AS n FROM TUMBLE(lint_in, ts, INTERVAL '1 minute') "
            "GROUP BY device_id, window_start, window_end WITH (emit = 'changes')"
        )
        assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
        assert c.post("/v1/streams/lint_in/events", json=events(0, 40)).status_code == 200
    deadline = time.monotonic() + 30
    while 'headwater_pipeline_watermark_timestamp_seconds{pipeline="lint_per_device"' not in (
        text := live_metrics(server).replace('tenant="default",', "")
    ):
        assert time.monotonic() < deadline, "no watermark series for lint_per_device"
        time.sleep(0.1)
    done = check_metrics(live_metrics(server))
    assert (done.returncode, done.stdout + done.stderr) == (0, ""), done.stdout + done.stderr
    assert "headwater_pipeline_watermark_ms" not in text


def test_the_deprecated_watermark_name_is_served_on_request(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", HEADWATER_METRICS_DEPRECATED_NAMES="true").start()
    try:
        with server.client() as c:
            assert c.post("/v1/streams", json=READINGS).status_code == 201
            sql = (
                "CREATE PIPELINE per_device AS SELECT device_id, window_start, window_end, "
                "count(*) AS n FROM TUMBLE(readings, ts, INTERVAL '1 minute') "
                "GROUP BY device_id, window_start, window_end WITH (emit = 'changes')"
            )
            assert c.post("/v1/pipelines", json={"sql": sql}).status_code == 201
            assert c.post("/v1/streams/readings/events", json=events(0, 40)).status_code == 200
        pattern = r'headwater_pipeline_watermark_{}\{{[^}}]*pipeline="per_device"[^}}]*\}} (\S+)'
        deadline = time.monotonic() + 30
        while not re.search(pattern.format("ms"), text := live_metrics(server)):
            assert time.monotonic() < deadline, "no deprecated watermark series"
            time.sleep(0.1)
        old = float(re.findall(pattern.format("ms"), text)[0])
        new = float(re.findall(pattern.format("timestamp_seconds"), text)[0])
        assert old == new * 1000
        done = check_metrics(text)  # the one problem promtool finds is the deprecated name
        problems = lines_of(done.stdout + done.stderr)
        assert problems == [
            "headwater_pipeline_watermark_ms metric names should not contain abbreviated units"
        ]
    finally:
        server.stop()


def lines_of(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]
