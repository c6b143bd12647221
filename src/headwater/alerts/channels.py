"""The channels: Slack incoming webhook, PagerDuty Events v2, signed webhook, SMTP e-mail.

Each sends one notification per call and raises ``DeliveryError`` on failure (see
``delivery`` for retries). HTTP channels share one ``httpx.AsyncClient``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import smtplib
import ssl
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import httpx
import orjson

from headwater.alerts.delivery import Channel, DeliveryError, Notification, Pacer, http_error

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
PD_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}
TIMEOUT_S = 10.0


def _iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat().replace("+00:00", "Z")


def payload(n: Notification) -> dict[str, Any]:
    """The JSON of a webhook notification (also in docs/alerts.md)."""
    return {
        "type": f"alert.{n.kind}", "rule": n.rule, "key": n.key, "status": n.kind,
        "severity": n.severity, "summary": n.summary, "labels": n.labels,
        "values": n.values, "at": _iso(n.at_ms), "since": _iso(n.since_ms),
        "dedup_key": n.dedup_key,
    }  # fmt: skip


async def _post(
    client: httpx.AsyncClient, url: str, body: bytes, headers: dict[str, str]
) -> httpx.Response:
    try:
        r = await client.post(
            url, content=body, headers={"content-type": "application/json", **headers},
            timeout=TIMEOUT_S,
        )  # fmt: skip
    except httpx.HTTPError as exc:
        raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from None
    if r.status_code >= 300:
        raise http_error(r.status_code, r.text, r.headers.get("retry-after"))
    return r


class WebhookChannel:
    """A JSON POST signed with Standard Webhooks (``webhook-id/-timestamp/-signature``)."""

    kind = "webhook"

    def __init__(self, client: httpx.AsyncClient, url: str, secret: str) -> None:
        self._client, self._url = client, url
        self._key = base64.b64decode(secret.removeprefix("whsec_"))

    def sign(self, msg_id: str, timestamp: int, body: bytes) -> str:
        mac = hmac.new(self._key, f"{msg_id}.{timestamp}.".encode() + body, hashlib.sha256)
        return "v1," + base64.b64encode(mac.digest()).decode()

    async def send(self, n: Notification) -> None:
        body = orjson.dumps(payload(n))
        ts = int(datetime.now(UTC).timestamp())
        headers = {"webhook-id": n.id, "webhook-timestamp": str(ts),
                   "webhook-signature": self.sign(n.id, ts, body)}  # fmt: skip
        await _post(self._client, self._url, body, headers)


class SlackChannel:
    """A Slack incoming webhook: ``{"text", "blocks"}``; 429 answers carry Retry-After."""

    kind = "slack"

    def __init__(self, client: httpx.AsyncClient, url: str, pacer: Pacer | None = None) -> None:
        self._client, self._url, self._pacer = client, url, pacer

    async def send(self, n: Notification) -> None:
        if self._pacer is not None:
            await self._pacer.wait(self._url)
        icon = ":red_circle:" if n.kind == "firing" else ":large_green_circle:"
        text = f"{icon} [{n.kind.upper()}] {n.summary}"
        fields = [{"type": "mrkdwn", "text": f"*{k}*: {v}"} for k, v in n.labels.items()]
        blocks: list[dict[str, Any]] = [
            {"type": "section", "text": {"type": "mrkdwn", "text": text}},
            {"type": "context", "elements": [
                {"type": "mrkdwn", "text": f"rule `{n.rule}` · key `{n.key}` · {n.severity}"},
                *fields[:9],
            ]},
        ]  # fmt: skip
        await _post(self._client, self._url, orjson.dumps({"text": text, "blocks": blocks}), {})


class PagerDutyChannel:
    """PagerDuty Events API v2: ``trigger``/``resolve`` deduplicated by ``rule:key``."""

    kind = "pagerduty"

    def __init__(self, client: httpx.AsyncClient, routing_key: str, url: str) -> None:
        self._client, self._key, self._url = client, routing_key, url

    async def send(self, n: Notification) -> None:
        event: dict[str, Any] = {
            "routing_key": self._key,
            "event_action": "trigger" if n.kind == "firing" else "resolve",
            "dedup_key": n.dedup_key,
        }
        if n.kind == "firing":
            event["payload"] = {
                "summary": n.summary[:1024], "source": f"headwater/{n.tenant}/{n.rule}",
                "severity": PD_SEVERITY[n.severity], "timestamp": _iso(n.at_ms),
                "custom_details": {"key": n.key, "labels": n.labels, "values": n.values},
            }  # fmt: skip
        await _post(self._client, self._url, orjson.dumps(event, default=str), {})


class EmailChannel:
    """Plain-text e-mail over SMTP (stdlib ``smtplib`` in a worker thread)."""

    kind = "email"

    def __init__(self, config: dict[str, Any]) -> None:
        self._c = config

    def _message(self, n: Notification) -> EmailMessage:
        msg = EmailMessage()
        msg["Subject"] = f"[{n.kind.upper()}] {n.summary}"[:200]
        msg["From"] = self._c["from"]
        to = self._c["to"]
        msg["To"] = ", ".join(to) if isinstance(to, list) else str(to)
        lines = [n.summary, "", f"rule: {n.rule}", f"key: {n.key}", f"status: {n.kind}",
                 f"severity: {n.severity}", f"since: {_iso(n.since_ms)}"]  # fmt: skip
        lines += [f"{k}: {v}" for k, v in n.values.items()]
        msg.set_content("\n".join(lines))
        return msg

    def _send(self, msg: EmailMessage) -> None:
        c = self._c
        with smtplib.SMTP(c["host"], int(c.get("port", 25)), timeout=TIMEOUT_S) as smtp:
            if c.get("starttls"):
                smtp.starttls(context=ssl.create_default_context())
            if c.get("username"):
                smtp.login(c["username"], c.get("password", ""))
            smtp.send_message(msg)

    async def send(self, n: Notification) -> None:
        try:
            await asyncio.to_thread(self._send, self._message(n))
        except smtplib.SMTPResponseException as exc:
            raise DeliveryError(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}",
                                retryable=400 <= exc.smtp_code < 500) from None  # fmt: skip
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(f"{type(exc).__name__}: {exc}", retryable=True) from None


SLACK_INTERVAL_S = 1.0  # Slack: about one message a second per incoming webhook


def build_channel(
    client: httpx.AsyncClient, c: dict[str, Any], slack_pacer: Pacer | None = None
) -> Channel:
    kind = c["kind"]
    if kind == "webhook":
        return WebhookChannel(client, c["url"], c["secret"])
    if kind == "slack":
        return SlackChannel(client, c["url"], slack_pacer)
    if kind == "pagerduty":
        return PagerDutyChannel(client, c["routing_key"], c.get("url", PAGERDUTY_URL))
    return EmailChannel(c)
