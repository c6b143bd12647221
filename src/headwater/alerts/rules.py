"""An alert rule as the API takes it: ``POST /v1/alerts`` (see docs/alerts.md)."""

from __future__ import annotations

import string
from dataclasses import asdict, dataclass, field
from typing import Any

from headwater.alerts.grouping import DEFAULT_INTERVAL_MS, DEFAULT_WAIT_MS, Grouping
from headwater.errors import BadRequest
from headwater.model.schema import NAME_RE
from headwater.model.time import parse_duration_ms

SEVERITIES = ("critical", "error", "warning", "info")
CHANNEL_KINDS = ("webhook", "slack", "pagerduty", "email")
SECRET_KEYS = ("secret", "routing_key", "password")
DEFAULT_SUMMARY = "$__rule: $__key"


def _bad(message: str, code: str = "bad_alert") -> BadRequest:
    return BadRequest(message, code=code)


@dataclass(frozen=True, slots=True)
class AlertRule:
    tenant: str
    name: str
    source: str  # the table or stream read ("from")
    key: str
    condition: str
    for_ms: int = 0
    repeat_ms: int | None = None
    severity: str = "warning"
    labels: dict[str, str] = field(default_factory=dict)
    summary: str = DEFAULT_SUMMARY
    channels: list[dict[str, Any]] = field(default_factory=list)
    created_ms: int = 0
    group_by: list[str] = field(default_factory=list)
    group_wait_ms: int | None = None
    group_interval_ms: int | None = None

    @property
    def grouping(self) -> Grouping | None:
        """None: each notification goes alone, at once (no grouping option given)."""
        if not self.group_by and self.group_wait_ms is None and self.group_interval_ms is None:
            return None
        wait = DEFAULT_WAIT_MS if self.group_wait_ms is None else self.group_wait_ms
        interval = DEFAULT_INTERVAL_MS if self.group_interval_ms is None else self.group_interval_ms
        return Grouping(tuple(self.group_by), wait, interval)

    def spec(self) -> dict[str, Any]:
        return asdict(self)

    def render(self, key: str, values: dict[str, Any]) -> str:
        """The summary with the row's values: ``$column`` or ``${column}``; unknown names stay."""
        return string.Template(self.summary).safe_substitute(
            {**{k: _text(v) for k, v in values.items()}, "__rule": self.name, "__key": key}
        )

    def view(self) -> dict[str, Any]:
        g = self.grouping
        return {
            "name": self.name, "from": self.source, "key": self.key,
            "condition": self.condition, "for_ms": self.for_ms, "repeat_ms": self.repeat_ms,
            "severity": self.severity, "labels": self.labels, "summary": self.summary,
            "channels": [_masked(c) for c in self.channels], "group_by": self.group_by,
            "group_wait_ms": g.wait_ms if g else None,
            "group_interval_ms": g.interval_ms if g else None,
        }  # fmt: skip


def _text(v: Any) -> str:
    return "" if v is None else str(v)


def _masked(channel: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if k in SECRET_KEYS else v) for k, v in channel.items()}


def _duration(data: dict[str, Any], name: str) -> int | None:
    v = data.get(name)
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (str, int)):
        raise _bad(f'"{name}" is a duration such as "30s" or "2 minutes"', "bad_alert_duration")
    try:
        ms = v * 1000 if isinstance(v, int) else parse_duration_ms(v)
    except (ValueError, BadRequest) as exc:
        raise _bad(f'"{name}": {exc}', "bad_alert_duration") from None
    if ms < 0:
        raise _bad(f'"{name}" must not be negative', "bad_alert_duration")
    return ms


def parse_rule(tenant: str, data: Any, now_ms: int, require_channels: bool = True) -> AlertRule:
    """Check the body of ``POST /v1/alerts``; the condition is checked against the table later.

    ``require_channels`` false lets a rule the server makes itself (the demo's) have none:
    it fires and keeps its history, and notifies no one."""
    if not isinstance(data, dict):
        raise _bad('send {"name", "from", "key", "condition", "for", "channels"}')
    unknown = set(data) - {"name", "from", "key", "condition", "for", "repeat", "severity",
                           "labels", "summary", "channels", "repeat_interval", "group_by",
                           "group_wait", "group_interval"}  # fmt: skip
    if unknown:
        raise _bad(f"unknown fields: {', '.join(sorted(unknown))}", "unknown_field")
    name = data.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise _bad("alert name: letters, digits and '_', starting with a letter", "bad_name")
    for f in ("from", "key", "condition"):
        if not isinstance(data.get(f), str) or not data[f].strip():
            raise _bad(f'"{f}" is required: a non-empty string')
    severity = data.get("severity", "warning")
    if severity not in SEVERITIES:
        raise _bad(f"severity must be one of {', '.join(SEVERITIES)}", "bad_alert_severity")
    labels = data.get("labels", {})
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise _bad("labels: an object of strings to strings", "bad_alert_labels")
    summary = data.get("summary", DEFAULT_SUMMARY)
    if not isinstance(summary, str) or len(summary) > 2000:
        raise _bad("summary: a template string of at most 2000 characters", "bad_alert_summary")
    channels = data.get("channels", [])
    if not isinstance(channels, list) or (require_channels and not channels):
        raise _bad('"channels": a non-empty list of {"kind", ...}', "bad_alert_channel")
    for c in channels:
        check_channel(c)
    if "repeat" in data and "repeat_interval" in data:
        raise _bad('give "repeat" or "repeat_interval" (the same option), not both',
                   "bad_alert_duration")  # fmt: skip
    repeat = _duration(data, "repeat") or _duration(data, "repeat_interval")
    group_by = data.get("group_by", [])
    if not isinstance(group_by, list) or not all(isinstance(c, str) and c for c in group_by):
        raise _bad('"group_by": a list of column names', "bad_alert_group")
    interval = _duration(data, "group_interval")
    if interval == 0:
        raise _bad('"group_interval" must be more than 0', "bad_alert_duration")
    return AlertRule(
        tenant, name, data["from"], data["key"], data["condition"],
        _duration(data, "for") or 0, repeat or None, severity, labels, summary, channels, now_ms,
        list(dict.fromkeys(group_by)), _duration(data, "group_wait"), interval,
    )  # fmt: skip


REQUIRED = {
    "webhook": ("url", "secret"),
    "slack": ("url",),
    "pagerduty": ("routing_key",),
    "email": ("host", "from", "to"),
}


def check_channel(c: Any) -> None:
    if not isinstance(c, dict) or c.get("kind") not in CHANNEL_KINDS:
        raise _bad(f"each channel is an object with kind one of {', '.join(CHANNEL_KINDS)}",
                   "bad_alert_channel")  # fmt: skip
    missing = [f for f in REQUIRED[c["kind"]] if not c.get(f)]
    if missing:
        raise _bad(f"a {c['kind']} channel needs {', '.join(missing)}", "bad_alert_channel")
    for f in ("url",):
        if f in c and not str(c[f]).startswith(("http://", "https://")):
            raise _bad(f"channel {f} must be an http(s) URL", "bad_alert_channel")
    if c["kind"] == "webhook" and not str(c["secret"]).startswith("whsec_"):
        raise _bad("a webhook channel's secret is a Standard Webhooks key: whsec_<base64>",
                   "bad_alert_channel")  # fmt: skip
