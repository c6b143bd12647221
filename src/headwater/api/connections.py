"""Connection limits the HTTP server enforces before a request reaches the application.

uvicorn's httptools protocol bounds neither the header bytes a client may trickle in
(an unfinished header is buffered whole) nor the time a client may take to send its
headers or body, nor how many connections one address may hold. ``guarded_protocol``
returns a subclass of it that does, so that a client that never authenticates costs a
bounded amount of memory, file descriptors and time:

- headers: at most ``max_header_bytes`` and ``max_headers`` (431), within
  ``header_timeout_s`` of the request's first byte or of the connection's opening (408);
- bodies: no pause longer than ``body_timeout_s``, and at ``body_min_rate`` bytes/s or
  more on average once the first ``header_timeout_s`` are over (408); time the server
  itself is behind reading (flow control) does not count;
- connections: ``max_connections`` in all and ``max_connections_per_client`` per
  client address; over either, a new connection gets 503 and is closed.
"""

from __future__ import annotations

import resource
import time
from collections import Counter
from dataclasses import dataclass, replace
from typing import Any

import httptools
import orjson
import structlog
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from headwater.observability import metrics as m
from headwater.settings import Settings

CHECK_EVERY_S = 0.5
log = structlog.get_logger("headwater.http")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    max_header_bytes: int = 64 * 1024
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    body_min_rate: int = 1024
    max_connections: int = 4096
    max_connections_per_client: int = 256

    @classmethod
    def from_settings(cls, s: Settings) -> ConnectionLimits:
        return cls(
            s.max_header_bytes, s.max_headers, s.header_timeout_s, s.body_timeout_s,
            s.body_min_rate_bytes_s, s.max_connections, s.max_connections_per_client,
        )  # fmt: skip


class _HeadersTooLarge(Exception):
    pass


def guarded_protocol(limits: ConnectionLimits) -> type[HttpToolsProtocol]:
    """An httptools protocol class that enforces ``limits`` (one per server)."""
    return type(
        "GuardedHttpToolsProtocol", (GuardedProtocol,), {"limits": limits, "per_client": Counter()}
    )


class GuardedProtocol(HttpToolsProtocol):
    limits: ConnectionLimits
    per_client: Counter[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._address: str | None = None  # set once counted against its client
        self._in_headers = True
        self._header_bytes = 0
        self._started = 0.0  # when the current phase (headers or body) began
        self._last_read = 0.0  # when body bytes last came
        self._body_bytes = 0
        self._in_body = False
        self._timer: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        address = self.client[0] if self.client else ""
        if len(self.connections) > self.limits.max_connections:
            self._refuse_connection("too_many_connections", "the server holds too many connections")
            return
        if self.per_client[address] >= self.limits.max_connections_per_client:
            self._refuse_connection(
                "too_many_client_connections", "this address holds too many connections"
            )
            return
        self.per_client[address] += 1
        self._address = address
        self._started = time.monotonic()
        self._timer = self.loop.call_later(CHECK_EVERY_S, self._check_deadlines)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._address is not None:
            self.per_client[self._address] -= 1
            if self.per_client[self._address] <= 0:
                del self.per_client[self._address]
            self._address = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._in_headers:
            if self._header_bytes == 0:
                self._started = time.monotonic()  # the request's first byte
            room = self.limits.max_header_bytes - self._header_bytes
            if len(data) > room:
                # Feed only what the limit allows: the parser buffers an unfinished header.
                self._header_bytes += room
                if self._feed(data[:room]) and not self.transport.is_closing():
                    if self._in_headers:
                        self._refuse(431, "headers_too_large", "the request headers are too large")
                    else:
                        self.data_received(data[room:])
                return
            self._header_bytes += len(data)
        elif self._in_body:
            self._body_bytes += len(data)
            self._last_read = time.monotonic()
        self._feed(data)

    def _feed(self, data: bytes) -> bool:
        """Parse ``data``; False when the request was refused."""
        self._unset_keepalive_if_required()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError as exc:
            if isinstance(exc.__context__, _HeadersTooLarge):
                self._refuse(431, "too_many_headers", "the request has too many headers")
            else:
                self.logger.warning("Invalid HTTP request received.")
                self.send_400_response("Invalid HTTP request received.")
            return False
        return True

    def on_headers_complete(self) -> None:
        # Counted once complete: ``max_header_bytes`` already bounds what they can hold.
        if len(self.headers) > self.limits.max_headers:
            raise _HeadersTooLarge
        self._in_headers = False
        self._header_bytes = 0
        self._in_body = True
        self._body_bytes = 0
        self._started = self._last_read = time.monotonic()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_body = False
        self._in_headers = True
        self._started = time.monotonic()
        super().on_message_complete()

    def _check_deadlines(self) -> None:
        self._timer = None
        if self.transport.is_closing():
            return
        now = time.monotonic()
        lim = self.limits
        if self._in_headers and (self._header_bytes or self.cycle is None):
            if now - self._started > lim.header_timeout_s:
                self._refuse(408, "header_timeout", "the request headers took too long to arrive")
                return
        elif self._in_body and self.cycle is not None:
            if self.flow.read_paused:  # the application is behind, not the client
                self._started += CHECK_EVERY_S
                self._last_read = now
            elapsed = now - self._started
            idle = now - self._last_read > lim.body_timeout_s
            slow = elapsed > lim.header_timeout_s and self._body_bytes < lim.body_min_rate * elapsed
            if idle or slow:
                self._refuse(408, "body_timeout", "the request body arrived too slowly")
                return
        self._timer = self.loop.call_later(CHECK_EVERY_S, self._check_deadlines)

    def _refuse(self, status: int, code: str, message: str) -> None:
        """Answer ``status`` if no answer was started, and close the connection."""
        m.HTTP_CONNECTIONS_REFUSED.labels(code).inc()
        started = self.cycle is not None and self.cycle.response_started
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the application's sends are dropped from now on
            self.cycle.message_event.set()
        if not started:
            self.transport.write(_answer(status, code, f"{message}; see docs/security.md"))
        self.transport.close()

    def _refuse_connection(self, code: str, message: str) -> None:
        m.HTTP_CONNECTIONS_REFUSED.labels(code).inc()
        self.transport.write(_answer(503, code, f"{message}; retry later"))
        self.transport.close()


PHRASES = {
    408: b"Request Timeout",
    431: b"Request Header Fields Too Large",
    503: b"Service Unavailable",
}


def _answer(status: int, code: str, message: str) -> bytes:
    """A complete HTTP answer with the usual JSON error body, closing the connection."""
    body = orjson.dumps({"error": {"code": code, "message": message}})
    retry = b"retry-after: 1\r\n" if status == 503 else b""
    return b"".join(
        [
            b"HTTP/1.1 %d %s\r\n" % (status, PHRASES[status]),
            b"content-type: application/json\r\n",
            retry,
            b"content-length: %d\r\nconnection: close\r\n\r\n" % len(body),
            body,
        ]
    )


def server_options(s: Settings) -> dict[str, Any]:
    """uvicorn options for the edge: the guarded protocol, and TLS when configured."""
    if (s.tls_cert is None) != (s.tls_key is None):
        raise ValueError("TLS needs both tls_cert and tls_key (--tls-cert and --tls-key)")
    limits = ConnectionLimits.from_settings(s)
    room = _file_descriptor_room(limits.max_connections + FD_RESERVE) - FD_RESERVE
    if room < limits.max_connections:
        log.warning("max_connections_lowered", to=room, setting=limits.max_connections,
                    reason="the process may not open that many files (ulimit -n)")  # fmt: skip
        limits = replace(limits, max_connections=max(16, room))
    options: dict[str, Any] = {"http": guarded_protocol(limits)}
    if s.tls_cert is not None and s.tls_key is not None:
        options["ssl_certfile"] = str(s.tls_cert)
        options["ssl_keyfile"] = str(s.tls_key)
    return options


# Files the server keeps open besides connections: log segments, DuckDB, SQLite, sockets.
FD_RESERVE = 512


def _file_descriptor_room(wanted: int) -> int:
    """Raise the open-files limit towards ``wanted`` (up to the hard limit); return it."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return wanted if soft == resource.RLIM_INFINITY else int(soft)
