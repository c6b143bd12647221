"""Local stand-ins of the services alerts notify, answering as their documentation says.

- Slack incoming webhook: ``POST`` JSON with ``text``; ``200 ok``, or ``429`` with
  ``Retry-After`` when rate limited.
- PagerDuty Events API v2: ``POST /v2/enqueue``; ``202 {"status": "success", "message":
  "Event processed", "dedup_key": ...}``, ``400`` for an invalid event, ``429`` when
  throttled.
- A Standard Webhooks receiver that checks ``webhook-signature`` before it accepts.
- An SMTP server (aiosmtpd) keeping the messages it receives.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email import message_from_bytes
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import orjson
from aiosmtpd.controller import Controller

from serverproc import free_port

Answer = tuple[int, dict[str, str], bytes]


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = field(default_factory=time.monotonic)

    def json(self) -> Any:
        return orjson.loads(self.body)


@dataclass
class HttpStandIn:
    """An HTTP server on a free port; ``answer`` decides each reply, ``seen`` keeps requests."""

    answer: Callable[[Request, int], Answer]
    seen: list[Request] = field(default_factory=list)
    accepted: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("content-length", 0)))
                req = Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with lock:
                    outer.seen.append(req)
                    status, headers, reply = outer.answer(req, len(outer.seen))
                    if status < 300:
                        outer.accepted.append(req)
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args: Any) -> None:
                pass

        lock = threading.Lock()
        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def slack(throttle_first: int = 0, retry_after: str = "1") -> HttpStandIn:
    def answer(req: Request, n: int) -> Answer:
        if n <= throttle_first:
            return 429, {"Retry-After": retry_after}, b"rate_limited"
        if "text" not in req.json():
            return 400, {}, b"no_text"
        return 200, {"content-type": "text/plain"}, b"ok"

    return HttpStandIn(answer)


def pagerduty(throttle_every: int = 0) -> HttpStandIn:
    def answer(req: Request, n: int) -> Answer:
        if throttle_every and n % throttle_every == 1:
            return (
                429,
                {},
                b'{"status":"throttle event","message":"Requests for this service are arriving too quickly."}',
            )
        ev = req.json()
        ok = (
            req.path == "/v2/enqueue" and isinstance(ev.get("routing_key"), str)
            and ev.get("event_action") in ("trigger", "resolve", "acknowledge")
            and (ev["event_action"] != "trigger" or {"summary", "source", "severity"} <= set(ev.get("payload", {})))
        )  # fmt: skip
        if not ok:
            return 400, {}, b'{"status":"invalid event","message":"Event object is invalid"}'
        reply = {
            "status": "success",
            "message": "Event processed",
            "dedup_key": ev.get("dedup_key"),
        }
        return 202, {"content-type": "application/json"}, orjson.dumps(reply)

    return HttpStandIn(answer)


def signature_ok(secret: str, headers: dict[str, str], body: bytes) -> bool:
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(
        s.startswith("v1,") and hmac.compare_digest(s[3:], expected)
        for s in headers.get("webhook-signature", "").split()
    )


def webhook_receiver(secret: str, fail_first: int = 0, status: int = 503) -> HttpStandIn:
    def answer(req: Request, n: int) -> Answer:
        if not signature_ok(secret, req.headers, req.body):
            return 401, {}, b"bad signature"
        if n <= fail_first:
            return status, {}, b"try later"
        return 204, {}, b""

    return HttpStandIn(answer)


def flaky_webhook(secret: str, fail_rate: float, seed: int = 1) -> HttpStandIn:
    """A signed-webhook receiver failing ``fail_rate`` of requests at random: 503, or 429
    with ``Retry-After: 0``; the rest are accepted."""
    rng = random.Random(seed)

    def answer(req: Request, n: int) -> Answer:
        if not signature_ok(secret, req.headers, req.body):
            return 401, {}, b"bad signature"
        roll = rng.random()
        if roll < fail_rate / 2:
            return 503, {}, b"busy"
        if roll < fail_rate:
            return 429, {"Retry-After": "0"}, b"slow down"
        return 204, {}, b""

    return HttpStandIn(answer)


class Mailbox:
    """aiosmtpd on a free port; ``messages`` holds what it received."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        outer = self

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                outer.messages.append(message_from_bytes(envelope.content))
                return "250 Message accepted for delivery"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)
        self.controller.start()

    def close(self) -> None:
        self.controller.stop()
