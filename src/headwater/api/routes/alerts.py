"""Alerts: rules, what fires now, history, snoozes and maintenance silences (docs/alerts.md)."""

from __future__ import annotations

import secrets
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from headwater.alerts.evaluate import RuleRun
from headwater.alerts.mutes import Silence
from headwater.alerts.service import Alerts
from headwater.api.auth import authenticate
from headwater.api.render import json_response
from headwater.api.routes.streams import json_body, runtime
from headwater.errors import BadRequest
from headwater.model.time import ms_to_datetime, parse_iso_ms

router = APIRouter(prefix="/v1", tags=["alerts"])
MAX_EVENTS = 1000


def alerts(request: Request) -> Alerts:
    return runtime(request).alerts


def _iso(ms: int | None) -> str | None:
    return ms_to_datetime(ms).isoformat() if ms is not None else None


def _time(data: dict[str, Any], field: str) -> int:
    value = data.get(field)
    try:
        return parse_iso_ms(value) if isinstance(value, str) else _fail(field)
    except ValueError:
        return _fail(field)


def _fail(field: str) -> int:
    raise BadRequest(f'"{field}" is an ISO-8601 time with an offset, such as '
                     '"2026-01-01T12:00:00Z"', code="bad_time")  # fmt: skip


def _view(a: Alerts, run: RuleRun, detail: bool) -> dict[str, Any]:
    r, keys = run.rule, run.keys  # one version of the keys (see RuleRun.keys)
    out = {**r.view(), "created_at": _iso(r.created_ms), "error": run.error,
           "firing": sum(t.state.phase == "firing" for t in keys.values()),
           "pending": sum(t.state.phase == "pending" for t in keys.values()),
           "snoozed": [{"key": s.key, "until": _iso(s.until_ms)}
                       for s in a.snoozes(r.tenant, r.name)],
           "dead_letters_table": f"{r.name}_dlq"}  # fmt: skip
    if detail:
        out["keys"] = [
            {"key": k, "state": t.state.phase, "since": _iso(t.state.since_ms),
             "firing_since": _iso(t.state.firing_ms), "notified_at": _iso(t.state.notified_ms),
             "summary": r.render(k, t.values), "values": t.values}
            for k, t in sorted(keys.items())
        ]  # fmt: skip
    return out


@router.post("/alerts", status_code=201)
async def create_alert(request: Request) -> Response:
    """Create a rule: ``{"name", "from", "key", "condition", "for", "channels"}``."""
    who = authenticate(request)
    who.require("admin")
    p, a = runtime(request), alerts(request)
    tables = p.tables.readable(who.tenant)
    rule = a.create(who.tenant, await json_body(request), tables)
    return json_response(_view(a, a.get(who.tenant, rule.name), True), 201)


@router.get("/alerts")
async def list_alerts(request: Request) -> Response:
    who = authenticate(request)
    a = alerts(request)
    return json_response({"alerts": [_view(a, r, False) for r in a.in_tenant(who.tenant)]})


@router.get("/alerts/{name}")
async def get_alert(name: str, request: Request) -> Response:
    """The rule and its keys pending or firing now, with since-times."""
    who = authenticate(request)
    a = alerts(request)
    return json_response(_view(a, a.get(who.tenant, name), True))


@router.get("/alerts/{name}/events")
async def alert_events(name: str, request: Request) -> Response:
    """History, newest first: fired, resolved, repeated, notified, failed."""
    who = authenticate(request)
    raw = request.query_params.get("limit", "100")
    if not raw.isdigit() or len(raw) > 4 or not 1 <= int(raw) <= MAX_EVENTS:
        raise BadRequest(f"limit is a whole number from 1 to {MAX_EVENTS}", code="bad_limit")
    events = alerts(request).events(who.tenant, name, int(raw))
    return json_response({"name": name, "events": events})


@router.post("/alerts/{name}/snooze")
async def snooze_alert(name: str, request: Request) -> Response:
    """Mute the rule's notifications, or one key's, until ``until``: ``{"until", "key"?}``."""
    who = authenticate(request)
    who.require("admin")
    alerts(request).get(who.tenant, name)
    data = await json_body(request)
    if not isinstance(data, dict):
        raise BadRequest('send {"until": ISO time, "key": optional}', code="bad_snooze")
    key = data.get("key")
    if key is not None and not isinstance(key, str):
        raise BadRequest("key: the key's value as text", code="bad_snooze")
    s = alerts(request).snooze(who.tenant, name, _time(data, "until"), key)
    return json_response({"name": name, "key": s.key, "until": _iso(s.until_ms)})


@router.post("/alerts/{name}/dlq/replay")
async def replay_alert_dead_letters(name: str, request: Request) -> Response:
    """Send dead letters of ``<name>_dlq`` again, each at most once: ``{"keys": [...]}``
    or ``{"all": true}``."""
    who = authenticate(request)
    who.require("admin")
    a = alerts(request)
    a.get(who.tenant, name)
    data = await json_body(request)
    keys = data.get("keys") if isinstance(data, dict) else None
    every = isinstance(data, dict) and data.get("all") is True
    if every == (keys is not None) or (
        keys is not None and not (isinstance(keys, list) and all(isinstance(k, str) for k in keys))
    ):
        raise BadRequest('send {"keys": [dead-letter keys]} or {"all": true}', code="bad_replay")
    n = await a.replay(who.tenant, name, None if every else keys)
    return json_response({"name": name, "replaying": n})


@router.delete("/alerts/{name}")
async def delete_alert(name: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    alerts(request).drop(who.tenant, name)
    return json_response({"name": name, "deleted": True})


def _silence_view(s: Silence) -> dict[str, Any]:
    return {"id": s.id, "start": _iso(s.start_ms), "end": _iso(s.end_ms), "labels": s.labels,
            "comment": s.comment}  # fmt: skip


@router.post("/silences", status_code=201)
async def create_silence(request: Request) -> Response:
    """A maintenance window: ``{"start", "end", "labels"?, "comment"?}`` mutes matching rules."""
    who = authenticate(request)
    who.require("admin")
    data = await json_body(request)
    if not isinstance(data, dict):
        raise BadRequest('send {"start", "end", "labels", "comment"}', code="bad_silence")
    start, end = _time(data, "start"), _time(data, "end")
    labels, comment = data.get("labels", {}), data.get("comment", "")
    if end <= start:
        raise BadRequest("end must be after start", code="bad_silence")
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise BadRequest("labels: an object of strings to strings", code="bad_silence")
    if not isinstance(comment, str):
        raise BadRequest("comment: text", code="bad_silence")
    s = Silence("silence_" + secrets.token_hex(6), start, end, labels, comment)
    alerts(request).add_silence(who.tenant, s)
    return json_response(_silence_view(s), 201)


@router.get("/silences")
async def list_silences(request: Request) -> Response:
    who = authenticate(request)
    return json_response(
        {"silences": [_silence_view(s) for s in alerts(request).silences(who.tenant)]}
    )


@router.delete("/silences/{silence_id}")
async def delete_silence(silence_id: str, request: Request) -> Response:
    who = authenticate(request)
    who.require("admin")
    alerts(request).drop_silence(who.tenant, silence_id)
    return json_response({"id": silence_id, "deleted": True})
