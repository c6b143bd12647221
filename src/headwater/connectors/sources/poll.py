"""REST polling source (kind ``poll``): fetch a JSON API every ``interval``, page by page.

Each page's rows are one chunk, committed with the *cursor* after them (the request to
make next, and what it needs), so a restart after ``kill -9`` asks for exactly the page
after the last durable one: polling with a cursor is exactly-once. The cursor comes from
the answer, in this order:

- ``next``: a dotted path to the next page's URL in the answer (relative URLs are
  resolved against the page's), or to a token that ``next_param`` puts into the query;
- else the ``Link: <...>; rel="next"`` header;
- ``since_field`` + ``since_param``: the last row's ``since_field`` is sent as the
  query parameter ``since_param`` on the next poll (rows in ascending order, strictly
  after ``since``);
- at the end of the pages the last answer is fetched again on the next poll, and the
  rows it already gave are skipped (an append-only list), with ``If-None-Match`` set
  to its ``ETag`` so an unchanged answer costs a ``304``.

A ``429`` or ``503`` with ``Retry-After`` (seconds or an HTTP date) makes the reader wait
that long (the source shows ``backing_off`` with the reason); other failures back off in
the runtime and resume from the committed cursor.

>>> cfg = PollConfig.parse({"url": "http://api.test/events", "items": "data", "next": "next"})
>>> page = turn_page(cfg, Cursor(), "http://api.test/events",
...                  {"data": [{"id": 1}], "next": "/events?after=1"}, None, None)
>>> [page.rows, page.cursor.url, page.more]
[[{'id': 1}], 'http://api.test/events?after=1', True]
"""

from __future__ import annotations

import email.utils
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import httpx
import orjson

from headwater.catalog.sqlite import SourceRecord
from headwater.connectors.sources.ports import Chunk, End, Reader
from headwater.connectors.sources.webhook import map_events
from headwater.errors import BadRequest

PARTITION = "poll"
KEYS = {"url", "interval", "method", "headers", "params", "body", "items", "mapping", "next",
        "next_param", "since_field", "since_param", "since", "timeout", "max_empty_pages"}  # fmt: skip
UNITS = {"s": 1.0, "ms": 0.001, "m": 60.0, "h": 3600.0}
MAX_RETRY_AFTER_S = 3600.0
MIN_WAIT_S = 1.0  # a Retry-After of 0 (or in the past) must not make the source spin


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_source_config")


def seconds(value: Any, name: str) -> float:
    """``30``, ``0.5``, ``"30s"``, ``"250ms"``, ``"5m"`` or ``"1h"`` as seconds.

    >>> seconds("250ms", "interval"), seconds(2, "interval")
    (0.25, 2.0)
    """
    if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
        return float(value)
    if isinstance(value, str):
        for unit in ("ms", "s", "m", "h"):
            number = value.strip().removesuffix(unit)
            if number != value.strip():
                try:
                    if (n := float(number)) > 0:
                        return n * UNITS[unit]
                except ValueError:
                    break
    raise _bad(f'config.{name} must be a positive number of seconds, or like "30s", "5m"')


@dataclass(frozen=True)
class PollConfig:
    url: str
    interval_s: float
    method: str = "GET"
    headers: dict[str, str] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    body: Any = None
    items: str | None = None
    mapping: dict[str, str] | None = None
    next: str | None = None
    next_param: str | None = None
    since_field: str | None = None
    since_param: str | None = None
    since: Any = None
    timeout_s: float = 10.0
    max_empty_pages: int = 10

    @classmethod
    def parse(cls, c: dict[str, Any]) -> PollConfig:
        """The config of a ``poll`` source, or a 400 saying what to fix."""
        unknown = set(c) - KEYS
        if unknown:
            raise _bad(f"unknown poll config keys {sorted(unknown)}; known: {sorted(KEYS)}")
        url = c.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise _bad("config.url must be an http:// or https:// URL")
        method = str(c.get("method", "GET")).upper()
        if method not in ("GET", "POST"):
            raise _bad("config.method must be GET or POST")
        headers, params = c.get("headers", {}), c.get("params", {})
        if not isinstance(headers, dict) or not all(isinstance(v, str) for v in headers.values()):
            raise _bad('config.headers must map header names to strings: {"Accept": "..."}')
        if not isinstance(params, dict) or not all(
            isinstance(v, str | int | float) for v in params.values()
        ):
            raise _bad("config.params must map query parameters to strings or numbers")
        for key in ("items", "next", "next_param", "since_field", "since_param"):
            if c.get(key) is not None and not (isinstance(c[key], str) and c[key]):
                raise _bad(f"config.{key} must be a non-empty string (a dotted path or a name)")
        if bool(c.get("since_field")) != bool(c.get("since_param")):
            raise _bad("config.since_field and config.since_param go together: the last "
                       "row's since_field is sent as the query parameter since_param")  # fmt: skip
        if c.get("next_param") and not c.get("next"):
            raise _bad("config.next_param needs config.next, the path to the token")
        mapping = c.get("mapping")
        if mapping is not None and not (
            isinstance(mapping, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
        ):
            raise _bad('config.mapping must map field names to dotted paths: {"id": "user.id"}')
        empty = c.get("max_empty_pages", 10)
        if not isinstance(empty, int) or isinstance(empty, bool) or empty < 1:
            raise _bad("config.max_empty_pages must be a positive integer")
        return cls(
            url, seconds(c.get("interval", 60), "interval"), method, dict(headers),
            dict(params), c.get("body"), c.get("items"), mapping, c.get("next"),
            c.get("next_param"), c.get("since_field"), c.get("since_param"), c.get("since"),
            seconds(c.get("timeout", 10), "timeout"), empty,
        )  # fmt: skip


@dataclass(frozen=True)
class Cursor:
    """Where a poll source stands: the request to make next and what it needs.

    ``url`` None is the configured request (with ``since`` as its parameter);
    ``skip`` counts the rows of that answer already taken; ``etag`` is that answer's.
    """

    url: str | None = None
    skip: int = 0
    etag: str | None = None
    since: Any = None

    def encode(self) -> str:
        """Compact JSON, leaving out what is unset (a ``since`` of 0 is kept)."""
        kept = {k: v for k, v in asdict(self).items() if v is not None}
        if not self.skip:
            del kept["skip"]
        return orjson.dumps(kept).decode()

    @classmethod
    def decode(cls, position: str | None, since: Any = None) -> Cursor:
        if not position:
            return cls(since=since)
        d = orjson.loads(position)
        return cls(d.get("url"), int(d.get("skip", 0)), d.get("etag"), d.get("since", since))


@dataclass(frozen=True)
class Page:
    """What one answer gives: new rows, the cursor after them, and whether the poll goes
    on at once (another page) or waits for the next interval."""

    rows: list[Any]
    cursor: Cursor
    more: bool


def dig(value: Any, path: str | None) -> Any:
    """The value at a dotted path (``"data.results"``, ``"pages.0.next"``), or None."""
    for part in (path or "").split("."):
        if not part:
            continue
        if isinstance(value, dict):
            value = value.get(part)
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            return None
    return value


def first_url(cfg: PollConfig, cur: Cursor) -> httpx.URL:
    """The configured request's URL, with ``since`` as its parameter once known."""
    params = dict(cfg.params)
    if cfg.since_param and cur.since is not None:
        params[cfg.since_param] = cur.since
    return httpx.URL(cfg.url).copy_merge_params(params)


def next_url(cfg: PollConfig, sent: str, payload: Any, link: str | None) -> str | None:
    """The next page's URL from the answer's ``next`` path, or from its Link header."""
    if cfg.next is None:
        return str(httpx.URL(sent).join(link)) if link else None
    found = dig(payload, cfg.next)
    if found is None or found == "":
        return None
    if cfg.next_param:
        return str(first_url(cfg, Cursor()).copy_set_param(cfg.next_param, str(found)))
    return str(httpx.URL(sent).join(str(found)))


def turn_page(
    cfg: PollConfig, cur: Cursor, sent: str, payload: Any, etag: str | None, link: str | None
) -> Page:
    """The rows and the new cursor of the answer ``payload`` to the request ``sent``
    (a pure function: the reader does the I/O)."""
    found = dig(payload, cfg.items) if cfg.items else payload
    if not isinstance(found, list):
        where = f"at {cfg.items!r}" if cfg.items else "(set config.items to where it is)"
        raise ValueError(f"the answer of {sent} holds no list of rows {where}")
    new = found[cur.skip :]
    since = cur.since
    if cfg.since_field and new and isinstance(new[-1], dict):
        last = dig(new[-1], cfg.since_field)
        since = since if last is None else last
    rows = map_events(new, None, cfg.mapping)
    follow = next_url(cfg, sent, payload, link)
    if follow is not None and follow != sent:
        return Page(rows, Cursor(follow, 0, None, since), True)
    if cfg.since_field:  # the next poll asks for what came after the last row
        again = since == cur.since and cur.url is None
        return Page(rows, Cursor(None, 0, etag if again else None, since), False)
    skip = max(cur.skip, len(found))  # fetch this answer again, skip what it gave
    url = None if sent == str(first_url(cfg, cur)) else sent
    return Page(rows, Cursor(url, skip, etag, since), False)


def retry_after_s(value: str | None, now_s: float) -> float | None:
    """``Retry-After`` as seconds to wait: a number, or an HTTP date.

    >>> retry_after_s("3", 0), retry_after_s("Thu, 01 Jan 1970 00:00:10 GMT", 4.0)
    (3.0, 6.0)
    """
    if not value:
        return None
    try:
        wait = float(value)
    except ValueError:
        try:
            wait = email.utils.parsedate_to_datetime(value).timestamp() - now_s
        except (TypeError, ValueError):
            return None
    return min(MAX_RETRY_AFTER_S, max(0.0, wait))


class PollSource:
    """The ``PullSource`` of a polled API: one partition, its cursor the position."""

    def __init__(self, rec: SourceRecord) -> None:
        self.config = PollConfig.parse(rec.config)

    def partitions(self, committed: object) -> list[str]:
        return [PARTITION]

    def open(self, partition: str, position: str | None) -> Reader:
        return PollReader(self.config, Cursor.decode(position, self.config.since))


class PollError(Exception):
    """The API answered something the source cannot use (the runtime backs off)."""


class PollReader:
    """Fetches pages in the runtime's reader thread; one chunk per page with rows."""

    def __init__(self, cfg: PollConfig, cursor: Cursor) -> None:
        self._cfg = cfg
        self._cursor = cursor
        self._due = 0.0  # monotonic time of the next request
        self._polling, self._poll_start = False, 0.0
        self._empty = 0  # pages in a row without rows, in this poll
        self.waiting: str | None = None  # why the reader waits (Retry-After), for the status
        self._client = httpx.Client(
            timeout=cfg.timeout_s, headers=cfg.headers, follow_redirects=True
        )

    def read(self, timeout_s: float) -> Chunk | End | None:
        now = time.monotonic()
        if now < self._due:
            time.sleep(min(timeout_s, self._due - now))
            return None
        if not self._polling:
            self._polling, self._poll_start = True, now
        page = self._fetch()
        if page is None:
            return None
        self._cursor = page.cursor
        self._empty = 0 if page.rows else self._empty + 1
        if not page.more or self._empty >= self._cfg.max_empty_pages:
            self._polling, self._empty = False, 0
            self._due = self._poll_start + self._cfg.interval_s
        if not page.rows:
            return None
        body = b"".join(orjson.dumps(r) + b"\n" for r in page.rows)
        return Chunk(body, "ndjson", PARTITION, page.cursor.encode())

    def _fetch(self) -> Page | None:
        cfg, cur = self._cfg, self._cursor
        url = cur.url or str(first_url(cfg, cur))
        headers = {"If-None-Match": cur.etag} if cur.etag else {}
        body = cfg.body if cfg.method == "POST" else None
        resp = self._client.request(cfg.method, url, headers=headers, json=body)
        if resp.status_code in (429, 503):
            wait = retry_after_s(resp.headers.get("retry-after"), time.time())
            if wait is None:
                raise PollError(f"{cfg.method} {url} answered {resp.status_code}")
            wait = max(MIN_WAIT_S, wait)
            self.waiting = f"{resp.status_code} from the API: waiting {wait:g} s (Retry-After)"
            self._due = time.monotonic() + wait
            return None
        self.waiting = None
        if resp.status_code == 304:
            return Page([], cur, False)
        if not resp.is_success:
            raise PollError(f"{cfg.method} {url} answered {resp.status_code}: {resp.text[:200]}")
        try:
            payload = orjson.loads(resp.content)
        except orjson.JSONDecodeError as exc:
            raise PollError(f"{cfg.method} {url} answered no JSON: {exc}") from exc
        link = resp.links.get("next", {}).get("url")
        try:
            return turn_page(cfg, cur, url, payload, resp.headers.get("etag"), link)
        except ValueError as exc:
            raise PollError(str(exc)) from exc

    def close(self) -> None:
        self._client.close()
