"""A small JSON API on a free port for ``poll`` source tests, served from a thread.

Paths (``after`` and ``limit`` select rows of ``events`` by index):

- ``/feed?after=N&limit=L``: ``{"data": {"items": [...]}, "next": "/feed?after=M&limit=L"}``,
  ``next`` null on the last page; ``ETag`` per answer, ``304`` to a matching
  ``If-None-Match``;
- ``/linked?after=N&limit=L``: a bare JSON list, the next page in a ``Link`` header;
- ``/since?since=S&limit=L``: the rows whose ``seq`` is above ``S`` (no paging: the
  next poll asks again with the last ``seq``).

``throttle(n, retry_after, status)`` answers the next ``n`` requests ``429`` (or
``status``) with that ``Retry-After``; every request is recorded in ``requests``.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson


@dataclass(frozen=True)
class Hit:
    at: float  # time.monotonic()
    path: str  # with the query
    status: int
    if_none_match: str | None


class Feed:
    def __init__(self) -> None:
        self.events: list[Any] = []
        self.requests: list[Hit] = []
        self._throttles: list[tuple[int, str]] = []
        self._lock = threading.Lock()
        feed = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feed._serve(self)

            def do_POST(self) -> None:
                feed._serve(self)

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def add(self, rows: list[Any]) -> None:
        with self._lock:
            self.events.extend(rows)

    def throttle(self, n: int, retry_after: str, status: int = 429) -> None:
        with self._lock:
            self._throttles.extend([(status, retry_after)] * n)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _serve(self, h: BaseHTTPRequestHandler) -> None:
        url = urlsplit(h.path)
        q = {k: v[0] for k, v in parse_qs(url.query).items()}
        inm = h.headers.get("If-None-Match")
        status, headers, body = self._answer(url.path, q, inm)
        with self._lock:
            self.requests.append(Hit(time.monotonic(), h.path, status, inm))
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        h.wfile.write(body)

    def _answer(self, path: str, q: dict[str, str], inm: str | None) -> tuple[int, dict, bytes]:
        with self._lock:
            if self._throttles:
                status, wait = self._throttles.pop(0)
                return status, {"Retry-After": wait}, b'{"error": "slow down"}'
            events = list(self.events)
        limit = int(q.get("limit", 50))
        if path == "/since":
            since = int(q.get("since", -1))
            rows = [e for e in events if isinstance(e, dict) and e.get("seq", -1) > since]
            return 200, {}, orjson.dumps({"items": rows[:limit]})
        after = int(q.get("after", 0))
        rows = events[after : after + limit]
        end = after + len(rows)
        more = end < len(events)
        if path == "/feed":
            etag = f'"{after}-{len(rows)}"'
            if inm == etag:
                return 304, {"ETag": etag}, b""
            nxt = f"/feed?after={end}&limit={limit}" if more else None
            return 200, {"ETag": etag}, orjson.dumps({"data": {"items": rows}, "next": nxt})
        if path == "/linked":
            link = {"Link": f'</linked?after={end}&limit={limit}>; rel="next"'} if more else {}
            return 200, link, orjson.dumps(rows)
        return 404, {}, b'{"error": "no such path"}'
