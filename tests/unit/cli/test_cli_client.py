"""Retry-After parsing, backoff, and error answers turned into advice."""

from __future__ import annotations

import random

import httpx
import pytest

from headwater.cli.client import MAX_RETRY_AFTER_S, backoff_s, error_of, parse_retry_after


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("3", 3.0), (" 0 ", 0.0), ("1.5", 1.5), ("-4", 0.0), ("100000", MAX_RETRY_AFTER_S),
     ("Wed, 21 Oct 2015 07:28:05 GMT", 5.0), ("Wed, 21 Oct 2015 07:27:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_delay_seconds_and_http_dates(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now_s=1445412480.0) == seconds


@pytest.mark.parametrize("value", [None, "", "soon", "nan", "Wed, 99 Foo"])
def test_retry_after_unusable_values(value: str | None) -> None:
    assert parse_retry_after(value) is None


def test_backoff_grows_with_jitter_and_is_capped() -> None:
    rng = random.Random(7)
    waits = [backoff_s(a, base_s=0.25, cap_s=4.0, rng=rng) for a in range(10)]
    for a, w in enumerate(waits):
        d = min(4.0, 0.25 * 2**a)
        assert d / 2 <= w <= d
    assert backoff_s(1000, cap_s=4.0) <= 4.0


def answer(status: int, body: object) -> httpx.Response:
    return httpx.Response(status, json=body, request=httpx.Request("GET", "http://x/v1/streams"))


def test_missing_key_says_which_variable_to_set() -> None:
    err = error_of(answer(401, {"error": {"code": "missing_key", "message": "missing API key"}}))
    assert err.status == 401 and err.code == "missing_key"
    assert "HEADWATER_KEY" in err.message and "missing API key" in err.message


def test_error_answers_keep_the_server_code_and_message() -> None:
    err = error_of(answer(400, {"error": {"code": "query_error", "message": "Binder Error"}}))
    assert (err.status, err.code, err.message) == (400, "query_error", "Binder Error")
    err = error_of(answer(403, {"error": {"code": "forbidden", "message": "needs admin"}}))
    assert "role" in err.message


def test_non_json_error_answers() -> None:
    resp = httpx.Response(502, text="Bad Gateway", request=httpx.Request("GET", "http://x/"))
    err = error_of(resp)
    assert err.code == "http_502" and err.message == "Bad Gateway"
