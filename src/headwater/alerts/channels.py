"""What each channel sends: Slack incoming webhook, PagerDuty Events v2, signed webhook, e-mail.

Pure: a channel's config and a batch of notifications (one, or a group's) become the
messages to send, each a body and an idempotency key (the ``Idempotency-Key`` and, for
webhooks, the Standard Webhooks ``webhook-id``). Sending them is ``transports``' work.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any

import orjson

from headwater.alerts.delivery import Notification

PAGERDUTY_URL = "https://events.pagerduty.com/v2/enqueue"
PD_SEVERITY = {"critical": "critical", "error": "error", "warning": "warning", "info": "info"}
SLACK_MAX_LINES = 20  # alerts listed in one grouped Slack message (the rest are counted)


@dataclass(frozen=True, slots=True)
class Message:
    body: bytes
    key: str  # the same on every attempt: receivers deduplicate on it
    ids: tuple[str, ...]  # the notifications it carries


@dataclass(frozen=True, slots=True)
class Batch:
    """Notifications sent together: one, or a group's (``group`` is not None)."""

    items: tuple[tuple[str, Notification], ...]  # (outbox id, notification)
    group: str | None = None

    @property
    def key(self) -> str:
        if self.group is None and len(self.items) == 1:
            return self.items[0][1].id
        digest = hashlib.sha256("\n".join(i for i, _ in self.items).encode()).hexdigest()
        return "grp_" + digest[:32]

    @property
    def notes(self) -> list[Notification]:
        return [n for _, n in self.items]

    @property
    def ids(self) -> tuple[str, ...]:
        return tuple(i for i, _ in self.items)


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


def _title(b: Batch) -> str:
    counts = Counter(n.kind for n in b.notes)
    parts = [f"{k.upper()}:{counts[k]}" for k in ("firing", "resolved") if counts[k]]
    group = f" {b.group}" if b.group else ""
    return f"[{', '.join(parts)}] {b.notes[0].rule}{group}"


def webhook(b: Batch) -> list[Message]:
    if b.group is None:
        n = b.notes[0]
        return [Message(orjson.dumps(payload(n)), b.key, b.ids)]
    first = b.notes[0]
    body = {"type": "alert.group", "rule": first.rule, "group": b.group, "title": _title(b),
            "alerts": [payload(n) for n in b.notes]}  # fmt: skip
    return [Message(orjson.dumps(body), b.key, b.ids)]


def _slack_line(n: Notification) -> str:
    icon = ":red_circle:" if n.kind == "firing" else ":large_green_circle:"
    return f"{icon} [{n.kind.upper()}] {n.summary}"


def slack(b: Batch) -> list[Message]:
    n = b.notes[0]
    fields = [{"type": "mrkdwn", "text": f"*{k}*: {v}"} for k, v in n.labels.items()]
    if b.group is None:
        text = _slack_line(n)
        context = f"rule `{n.rule}` · key `{n.key}` · {n.severity}"
    else:
        lines = [_slack_line(x) for x in b.notes[:SLACK_MAX_LINES]]
        if len(b.notes) > SLACK_MAX_LINES:
            lines.append(f"… and {len(b.notes) - SLACK_MAX_LINES} more")
        text = _title(b) + "\n" + "\n".join(lines)
        context = f"rule `{n.rule}` · {len(b.notes)} alerts · {n.severity}"
    blocks: list[dict[str, Any]] = [
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:3000]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": context}, *fields[:9]]},
    ]
    return [Message(orjson.dumps({"text": text, "blocks": blocks}), b.key, b.ids)]


def pagerduty(b: Batch, routing_key: str) -> list[Message]:
    """One event per key: PagerDuty keeps one incident per ``dedup_key`` (``rule:key``)."""
    out = []
    for i, n in b.items:
        event: dict[str, Any] = {
            "routing_key": routing_key,
            "event_action": "trigger" if n.kind == "firing" else "resolve",
            "dedup_key": n.dedup_key,
        }
        if n.kind == "firing":
            event["payload"] = {
                "summary": n.summary[:1024], "source": f"headwater/{n.tenant}/{n.rule}",
                "severity": PD_SEVERITY[n.severity], "timestamp": _iso(n.at_ms),
                "custom_details": {"key": n.key, "labels": n.labels, "values": n.values},
            }  # fmt: skip
        out.append(Message(orjson.dumps(event, default=str), n.id, (i,)))
    return out


def email(b: Batch, config: dict[str, Any]) -> list[Message]:
    """A plain-text e-mail (RFC 5322 bytes); a group's lists every alert."""
    msg = EmailMessage()
    n = b.notes[0]
    subject = f"[{n.kind.upper()}] {n.summary}" if b.group is None else _title(b)
    msg["Subject"] = subject[:200]
    msg["From"] = config["from"]
    to = config["to"]
    msg["To"] = ", ".join(to) if isinstance(to, list) else str(to)
    msg["Message-ID"] = f"<{b.key}@headwater>"
    parts = []
    for x in b.notes:
        lines = [x.summary, "", f"rule: {x.rule}", f"key: {x.key}", f"status: {x.kind}",
                 f"severity: {x.severity}", f"since: {_iso(x.since_ms)}"]  # fmt: skip
        parts.append("\n".join(lines + [f"{k}: {v}" for k, v in x.values.items()]))
    msg.set_content("\n\n".join(parts))
    return [Message(msg.as_bytes(), b.key, b.ids)]


def messages(channel: dict[str, Any], b: Batch) -> list[Message]:
    kind = channel["kind"]
    if kind == "webhook":
        return webhook(b)
    if kind == "slack":
        return slack(b)
    if kind == "pagerduty":
        return pagerduty(b, channel["routing_key"])
    return email(b, channel)
