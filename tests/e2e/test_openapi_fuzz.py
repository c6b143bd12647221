"""Schema-driven fuzzing of every route in the OpenAPI document: no answer is a 5xx."""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings

from examples import examples
from serverproc import ADMIN_KEY, READINGS, Server

AUTH = {"Authorization": f"Bearer {ADMIN_KEY}"}


def test_no_route_answers_5xx(server: Server) -> None:
    with server.client() as c:
        c.post("/v1/streams", json=READINGS)
    schema = schemathesis.openapi.from_url(server.url + "/openapi.json")
    checked = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith("/subscribe"):  # a live SSE feed never ends; tested on its own
            continue

        @given(case=op.as_strategy())
        @settings(
            max_examples=examples(20),
            deadline=None,
            suppress_health_check=list(HealthCheck),
            database=None,
        )
        def check(case: schemathesis.Case) -> None:
            r = case.call(base_url=server.url, headers=AUTH, timeout=30)
            assert r.status_code < 500, (
                f"{case.method} {case.formatted_path}: {r.status_code} {r.text[:300]}"
            )
            if r.status_code >= 400:
                err = r.json()["error"]
                assert err["code"] and err["message"]

        check()
        checked.append(f"{op.method.upper()} {op.path}")
    assert len(checked) >= 20, checked
