"""Ad-hoc query caps on a real server: each reproduction of issue 9 is a 4xx naming its limit.

Two servers: one with small memory and answer caps (and a small per-tenant share of
three query threads), one with a very short deadline for the parse-time case.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from serverproc import READINGS, Server

MEMORY_CAP = 256 * 1024**2
COSTLY = "SELECT count(*) FROM range(1000000000) a, range(1000) b WHERE a.range * b.range = -1"
_names = itertools.count()


@pytest.fixture(scope="module")
def capped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("caps") / "data",
        HEADWATER_QUERY_MEMORY_LIMIT="256MB",
        HEADWATER_QUERY_MAX_ANSWER_BYTES="8MB",
        HEADWATER_QUERY_TIMEOUT_S="8",
        HEADWATER_QUERY_THREADS="3",
        HEADWATER_QUERY_CONCURRENCY_PER_TENANT="2",
    ).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def hasty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("hasty") / "data", HEADWATER_QUERY_TIMEOUT_S="0.2")
    yield srv.start()
    srv.stop()


def query(client: httpx.Client, sql: str) -> httpx.Response:
    return client.post("/v1/query", json={"sql": sql}, timeout=120.0)


def refused(response: httpx.Response) -> str:
    assert 400 <= response.status_code < 500, (response.status_code, response.text[:300])
    code: str = response.json()["error"]["code"]
    return code


def memory_kb(pid: int) -> dict[str, int]:
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0])
    return fields


def new_tenant(server: Server) -> str:
    with server.client() as c:
        made = c.post("/v1/tenants", json={"name": f"other{next(_names)}"})
        assert made.status_code == 201, made.text
        key: str = made.json()["admin_key"]["key"]
        return key


def test_a_list_of_a_hundred_million_is_refused_before_it_is_built(capped: Server) -> None:
    with capped.client() as c:
        r = query(c, "SELECT range(100000000)")
        assert refused(r) == "query_too_large"
        assert "query_max_value_bytes" in r.json()["error"]["message"]
        small = query(c, "SELECT range(3) AS r")  # a small list is still a list
        assert small.status_code == 200 and small.json()["rows"] == [[[0, 1, 2]]]


@pytest.mark.parametrize(
    "sql",
    [
        "SELECT string_agg(repeat('x', 1000), '') FROM range(1000000)",  # a 1 GB answer
        "SELECT len(list(i)) FROM range(200000000) t(i)",
    ],
)
def test_growth_stops_near_the_memory_cap(capped: Server, sql: str) -> None:
    assert capped.proc is not None
    Path(f"/proc/{capped.proc.pid}/clear_refs").write_text("5")  # VmHWM restarts from VmRSS
    before = memory_kb(capped.proc.pid)
    with capped.client() as c:
        r = query(c, sql)
        assert refused(r) == "query_out_of_memory"
        assert "query_memory_limit" in r.json()["error"]["message"]
    peak_kb = memory_kb(capped.proc.pid)["VmHWM"]
    # an aggregate's last copy of its result cannot be interrupted: up to twice the cap
    allowed_kb = before["VmRSS"] + 2 * MEMORY_CAP // 1024
    assert peak_kb <= allowed_kb, f"peak {peak_kb} kB, allowed {allowed_kb} kB"


def test_an_answer_over_the_byte_cap_is_refused(capped: Server) -> None:
    with capped.client() as c:
        r = query(c, "SELECT repeat('x', 1000) AS filler FROM range(100000)")
        assert refused(r) == "answer_too_large"
        assert "query_max_answer_bytes" in r.json()["error"]["message"]


def test_one_huge_value_is_refused_before_it_is_built(capped: Server) -> None:
    with capped.client() as c:
        for sql in ("SELECT repeat('x', 1000000000)", "SELECT lpad('', 1000000000, 'x')"):
            assert refused(query(c, sql)) == "query_too_large"


@pytest.mark.parametrize(
    ("sql", "code"),
    [
        ("SELECT " + "+".join(["1"] * 150_000), "sql_too_long"),
        ("SELECT " + "+".join(["1"] * 2_000), "sql_too_deep"),
        ("SELECT " + "(" * 5_000 + "1" + ")" * 5_000, "sql_too_deep"),
        ("SELECT " + "abs(" * 200 + "1" + ")" * 200, "sql_too_deep"),
        ("SELECT " + " AND ".join(["true"] * 900), "sql_too_deep"),
    ],
)
def test_sql_too_long_or_deep_is_a_4xx_not_a_recursion_error(
    capped: Server, sql: str, code: str
) -> None:
    with capped.client() as c:
        assert refused(query(c, sql)) == code


def test_parsing_counts_against_the_deadline(hasty: Server) -> None:
    # ~80,000 characters, 14,000 tokens: parsing alone takes far longer than 0.2 s
    values = ", ".join(f"'v{i:06d}'" for i in range(7_000))
    with hasty.client() as c:
        r = query(c, f"SELECT 1 WHERE 1 IN ({values})")
        assert refused(r) == "query_timeout"
        assert "query_timeout_s" in r.json()["error"]["message"]


def test_a_runaway_query_is_stopped_at_the_deadline(hasty: Server) -> None:
    with hasty.client() as c:
        assert refused(query(c, COSTLY)) == "query_timeout"
        assert refused(query(c, "SELECT len(list(i)) FROM range(1000000000) t(i)")) in (
            "query_timeout",
            "query_out_of_memory",
        )


def test_a_tenant_over_its_share_gets_429_while_others_are_served(capped: Server) -> None:
    busy_key, other_key = new_tenant(capped), new_tenant(capped)
    with ThreadPoolExecutor(2) as pool, capped.client(busy_key) as busy:
        costly: list[Future[httpx.Response]] = [pool.submit(query, busy, COSTLY) for _ in range(2)]
        deadline = time.monotonic() + 60
        while True:  # the probe is refused once both costly queries hold the tenant's share
            for i, f in enumerate(costly):
                if f.done() and f.result().status_code == 429:  # lost a race with the probe
                    costly[i] = pool.submit(query, busy, COSTLY)
            probe = query(busy, "SELECT 1")
            if probe.status_code == 429:
                break
            assert probe.status_code == 200 and time.monotonic() < deadline, probe.text
        assert probe.json()["error"]["code"] == "too_many_queries"
        assert int(probe.headers["Retry-After"]) >= 1
        with capped.client(other_key) as other:
            answer = query(other, "SELECT 1 AS one")
            health = other.get("/health")
        still_running = [not f.done() for f in costly]
        assert answer.status_code == 200 and answer.json()["rows"] == [[1]]
        assert health.status_code == 200
        assert all(still_running), "the other tenant was served only after the costly queries"
        assert [refused(f.result()) for f in costly] == ["query_timeout", "query_timeout"]
    with capped.client() as c:
        metrics = c.get("/metrics").text
    assert 'headwater_query_limited_requests_total{code="too_many_queries"}' in metrics
    assert 'headwater_query_limited_requests_total{code="query_timeout"}' in metrics


@pytest.mark.parametrize(
    ("expression", "code"),
    [
        ("(" * 300 + "temperature" + ")" * 300, "sql_too_deep"),
        ("+".join(["1"] * 150_000), "sql_too_long"),
    ],
)
def test_pipeline_sql_gets_the_same_text_checks(capped: Server, expression: str, code: str) -> None:
    with capped.client() as c:
        made = c.post("/v1/streams", json={**READINGS, "name": "deep_readings"})
        assert made.status_code in (201, 409), made.text
        sql = f"CREATE PIPELINE deep AS SELECT device_id, {expression} AS x FROM deep_readings"
        assert refused(c.post("/v1/pipelines", json={"sql": sql}, timeout=120.0)) == code


def test_a_stream_rule_too_deep_to_parse_is_a_4xx(capped: Server) -> None:
    rule = {"expr": "(" * 300 + "temperature > 0" + ")" * 300, "code": "deep"}
    with capped.client() as c:
        r = c.post("/v1/streams", json={**READINGS, "name": "deep_rules", "rules": [rule]})
        assert refused(r) == "sql_too_deep"
