"""The poll source's pure parts: its config, how an answer turns the cursor, Retry-After."""

import email.utils

import pytest

from headwater.connectors.sources.poll import (
    Cursor,
    PollConfig,
    next_url,
    retry_after_s,
    turn_page,
)
from headwater.errors import BadRequest

BASE = "http://api.test/events"


@pytest.mark.parametrize(
    ("config", "says"),
    [
        ({}, "config.url"),
        ({"url": "ftp://x"}, "config.url"),
        ({"url": BASE, "interval": 0}, "config.interval"),
        ({"url": BASE, "interval": "soon"}, "config.interval"),
        ({"url": BASE, "method": "DELETE"}, "config.method"),
        ({"url": BASE, "headers": {"X": 1}}, "config.headers"),
        ({"url": BASE, "since_field": "ts"}, "since_param"),
        ({"url": BASE, "next_param": "cursor"}, "config.next"),
        ({"url": BASE, "items": 3}, "config.items"),
        ({"url": BASE, "mapping": {"a": 1}}, "config.mapping"),
        ({"url": BASE, "urll": BASE}, "unknown poll config keys ['urll']"),
    ],
)
def test_a_bad_config_is_refused_saying_what_to_fix(config: dict, says: str) -> None:
    with pytest.raises(BadRequest) as exc:
        PollConfig.parse(config)
    assert says in exc.value.message and exc.value.code == "bad_source_config"


def test_intervals_read_as_seconds() -> None:
    assert PollConfig.parse({"url": BASE, "interval": "5m"}).interval_s == 300
    assert PollConfig.parse({"url": BASE, "interval": "250ms"}).interval_s == 0.25
    assert PollConfig.parse({"url": BASE}).interval_s == 60


def test_the_next_url_in_the_answer_is_followed_then_the_last_page_is_asked_again() -> None:
    cfg = PollConfig.parse({"url": BASE, "items": "data", "next": "links.next"})
    first = turn_page(cfg, Cursor(), BASE, {"data": [1, 2], "links": {"next": "?page=2"}}, "e1",
                      None)  # fmt: skip
    assert first.rows == [1, 2] and first.more
    assert first.cursor == Cursor(f"{BASE}?page=2")
    last = turn_page(cfg, first.cursor, f"{BASE}?page=2", {"data": [3]}, '"e2"', None)
    assert last.rows == [3] and not last.more
    assert last.cursor == Cursor(f"{BASE}?page=2", 1, '"e2"')  # asked again, row 3 skipped
    grown = turn_page(cfg, last.cursor, f"{BASE}?page=2", {"data": [3, 4, 5]}, '"e3"', None)
    assert grown.rows == [4, 5] and grown.cursor.skip == 3
    assert Cursor.decode(grown.cursor.encode()) == grown.cursor


def test_a_token_cursor_goes_into_the_query_and_a_link_header_is_followed() -> None:
    cfg = PollConfig.parse({"url": BASE, "params": {"limit": 2}, "items": "items",
                            "next": "meta.cursor", "next_param": "cursor"})  # fmt: skip
    assert next_url(cfg, BASE, {"meta": {"cursor": "abc"}}, None) == f"{BASE}?limit=2&cursor=abc"
    assert next_url(cfg, BASE, {"meta": {"cursor": None}}, None) is None
    linked = PollConfig.parse({"url": BASE})
    assert next_url(linked, f"{BASE}?p=1", [], "/events?p=2") == "http://api.test/events?p=2"
    page = turn_page(linked, Cursor(), BASE, [{"a": 1}], None, "/events?p=2")
    assert page.more and page.cursor.url == "http://api.test/events?p=2"


def test_since_takes_the_last_rows_field_and_keeps_the_etag_only_for_the_same_request() -> None:
    cfg = PollConfig.parse({"url": BASE, "items": "rows", "since_field": "ts",
                            "since_param": "after", "mapping": {"id": "id"}})  # fmt: skip
    page = turn_page(cfg, Cursor(), BASE, {"rows": [{"id": 1, "ts": 10}, {"id": 2, "ts": 12}]},
                     '"x"', None)  # fmt: skip
    assert page.rows == [{"id": 1}, {"id": 2}]
    assert page.cursor == Cursor(None, 0, None, 12) and not page.more
    quiet = turn_page(cfg, page.cursor, f"{BASE}?after=12", {"rows": []}, '"y"', None)
    assert quiet.cursor == Cursor(None, 0, '"y"', 12)


def test_an_answer_without_the_list_is_an_error_naming_the_path() -> None:
    cfg = PollConfig.parse({"url": BASE, "items": "data.results"})
    with pytest.raises(ValueError, match=r"data\.results"):
        turn_page(cfg, Cursor(), BASE, {"error": "nope"}, None, None)


def test_retry_after_reads_seconds_and_http_dates() -> None:
    assert retry_after_s("7", 0) == 7
    date = email.utils.formatdate(1_000_030, usegmt=True)
    assert retry_after_s(date, 1_000_000) == 30
    assert retry_after_s(email.utils.formatdate(10, usegmt=True), 1_000_000) == 0
    assert retry_after_s("soon", 0) is None and retry_after_s(None, 0) is None


def test_a_since_of_zero_is_a_value_kept_in_the_position() -> None:
    cfg = PollConfig.parse({"url": BASE, "since_field": "id", "since_param": "after"})
    page = turn_page(cfg, Cursor(), BASE, [{"id": 0}], None, None)
    assert page.cursor.since == 0
    assert page.cursor.encode() == '{"since":0}'
    assert Cursor.decode(page.cursor.encode()) == Cursor(since=0)
    assert Cursor(skip=2).encode() == '{"skip":2}' and Cursor().encode() == "{}"
