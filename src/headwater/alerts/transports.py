"""Sending channel messages through the sinks' delivery machinery.

HTTP channels (Slack, PagerDuty, webhook) use ``headwater.sinks.http.HttpDelivery``:
retries of 408, 425, 429, 5xx and network errors with capped exponential backoff and
full jitter, never sooner than ``Retry-After``; other 4xx are final; adaptive
concurrency; one circuit breaker per destination (scheme, host and port). One delivery
per URL, shared by every rule that names it, so Slack's one message a second per
incoming webhook holds across rules. E-mail goes through ``SmtpDelivery``: the same
backoff and breaker around ``smtplib`` (4xx replies and connection failures retry).
"""

from __future__ import annotations

import asyncio
import smtplib
import ssl
import time
from typing import Any, Protocol
from urllib.parse import urlsplit

from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from headwater.alerts.channels import PAGERDUTY_URL
from headwater.alerts.delivery import RetryPolicy
from headwater.sinks.config import HttpConfig
from headwater.sinks.http import HttpDelivery, Outcome, Retryable
from headwater.sinks.policy import Breaker

SLACK_PER_S = 1.0  # Slack: about one message a second per incoming webhook
TIMEOUT_S = 10.0


class Transport(Protocol):
    async def send(self, body: bytes, key: str) -> Outcome:
        """Deliver ``body``: retried until accepted, or a final failure (the outcome says)."""
        ...

    async def close(self) -> None: ...


def _now_ms() -> int:
    return int(time.time() * 1000)


class SmtpDelivery:
    """An RFC 5322 message over SMTP, retried like an HTTP request."""

    def __init__(self, config: dict[str, Any], policy: RetryPolicy, breaker: Breaker) -> None:
        self._c, self._policy, self.breaker = config, policy, breaker

    def _send(self, body: bytes) -> None:
        c = self._c
        to = c["to"] if isinstance(c["to"], list) else [c["to"]]
        with smtplib.SMTP(c["host"], int(c.get("port", 25)), timeout=TIMEOUT_S) as smtp:
            if c.get("starttls"):
                smtp.starttls(context=ssl.create_default_context())
            if c.get("username"):
                smtp.login(c["username"], c.get("password", ""))
            smtp.sendmail(c["from"], to, body)

    async def _attempt(self, body: bytes, out: Outcome) -> None:
        while not self.breaker.admit(time.monotonic()):
            await asyncio.sleep(self.breaker.wait_s(time.monotonic()))
        try:
            await asyncio.to_thread(self._send, body)
        except smtplib.SMTPResponseException as exc:
            self._failed(out)
            text = f"SMTP {exc.smtp_code}: {exc.smtp_error!r}"
            if 400 <= exc.smtp_code < 500:
                self.breaker.on_failure(time.monotonic())
                raise Retryable(exc.smtp_code, text, text, None) from None
            self.breaker.on_success()  # the server answers; the message is the problem
            out.status, out.body, out.error = exc.smtp_code, text, text
            return
        except (OSError, smtplib.SMTPException) as exc:
            self._failed(out)
            self.breaker.on_failure(time.monotonic())
            error = f"{type(exc).__name__}: {exc}"
            raise Retryable(None, "", error, None) from None
        self.breaker.on_success()
        out.ok = True

    def _failed(self, out: Outcome) -> None:
        now = _now_ms()
        out.first_failure_ms = out.first_failure_ms or now
        out.last_failure_ms = now

    async def send(self, body: bytes, key: str) -> Outcome:
        p = self._policy
        out = Outcome(ok=False, attempts=0)
        retrying = AsyncRetrying(
            stop=stop_after_attempt(p.attempts) | stop_after_delay(p.max_retry_s),
            wait=wait_random_exponential(multiplier=p.base_s, max=p.cap_s),
            retry=retry_if_exception_type(Retryable),
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    out.attempts += 1
                    await self._attempt(body, out)
        except Retryable as exc:
            out.status, out.body, out.error = exc.status, exc.body, exc.error
        return out

    async def close(self) -> None:
        return None


def _destination(url: str) -> str:
    u = urlsplit(url)
    return f"{u.scheme}://{u.hostname}:{u.port or (443 if u.scheme == 'https' else 80)}"


class Transports:
    """One transport per channel destination, made on first use; one breaker per host."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self._made: dict[tuple[str, ...], Transport] = {}
        self._breakers: dict[str, Breaker] = {}

    def _breaker(self, destination: str) -> Breaker:
        p = self.policy
        return self._breakers.setdefault(destination, Breaker(p.breaker_failures, p.breaker_open_s))

    def of(self, channel: dict[str, Any]) -> Transport:
        kind = channel["kind"]
        if kind == "email":
            ident: tuple[str, ...] = (kind, str(channel["host"]), str(channel.get("port", 25)),
                                      str(channel.get("username", "")))  # fmt: skip
        else:
            url = channel.get("url", PAGERDUTY_URL) if kind == "pagerduty" else channel["url"]
            ident = (kind, url, str(channel.get("secret", "")))
        made = self._made.get(ident)
        if made is None:
            made = self._made[ident] = self._make(channel)
        return made

    def _make(self, channel: dict[str, Any]) -> Transport:
        p, kind = self.policy, channel["kind"]
        if kind == "email":
            dest = f"smtp://{channel['host']}:{channel.get('port', 25)}"
            return SmtpDelivery(channel, p, self._breaker(dest))
        url = channel.get("url", PAGERDUTY_URL) if kind == "pagerduty" else channel["url"]
        config = HttpConfig(
            url=url, max_concurrency=1 if kind == "slack" else 4,
            rate_limit_per_s=SLACK_PER_S if kind == "slack" else None,
            secret=channel["secret"] if kind == "webhook" else None,
            timeout_s=TIMEOUT_S, max_attempts=p.attempts, max_retry_s=p.max_retry_s,
            backoff_base_s=p.base_s, backoff_max_s=p.cap_s,
            breaker_failures=p.breaker_failures, breaker_open_s=p.breaker_open_s,
        )  # fmt: skip
        return HttpDelivery(config, self._breaker(_destination(url)))

    async def close(self) -> None:
        for t in self._made.values():
            await t.close()
        self._made.clear()
