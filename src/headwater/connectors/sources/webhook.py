"""Webhook sources: signed deliveries pushed to ``POST /v1/webhooks/{name}``.

A delivery is authenticated by its signature (``signatures``), never by an API key; its
payload is mapped to the stream's fields and goes through the same ingest path as any
request (validate, quarantine, dedup, durable log). A re-delivery (same delivery id) is
answered like the first and stored once: the id is the request's idempotency key.

Config (``POST /v1/sources`` with ``"kind": "webhook"``):

- ``verify``: ``github`` | ``stripe`` | ``standard`` | ``hmac``; ``secret`` (or
  ``secrets``, a list, during a key rotation);
- ``tolerance_s`` (stripe, standard; default 300), ``header``, ``encoding`` (hex|base64),
  ``prefix`` and ``id_header`` (hmac);
- ``items``: where the events are in the payload (a dotted path to a list), else the
  payload is one event (or a list of them);
- ``mapping``: ``{"field": "dotted.path"}`` from the event to the stream's fields; without
  it the event's own top-level names are used.

>>> map_events({"data": [{"user": {"id": 7}, "kind": "x"}]}, "data", {"user_id": "user.id"})
[{'user_id': 7}]
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from headwater.connectors.sources.signatures import SCHEMES, VerifyOptions
from headwater.errors import BadRequest

KEYS = {"verify", "secret", "secrets", "tolerance_s", "header", "encoding", "prefix",
        "id_header", "items", "mapping"}  # fmt: skip


@dataclass(frozen=True, slots=True)
class WebhookConfig:
    verify: str
    secrets: tuple[str, ...]
    options: VerifyOptions
    items: str | None
    mapping: dict[str, str] | None

    @classmethod
    def parse(cls, config: dict[str, Any]) -> WebhookConfig:
        unknown = set(config) - KEYS
        if unknown:
            raise _bad(f"unknown webhook config keys {sorted(unknown)}; known: {sorted(KEYS)}")
        verify = config.get("verify")
        if verify not in SCHEMES:
            raise _bad(f"config.verify must be one of {', '.join(SCHEMES)}")
        secrets = config.get("secrets", [config["secret"]] if "secret" in config else [])
        if not secrets or not all(isinstance(s, str) and s for s in secrets):
            raise _bad("config.secret (or config.secrets, a list) must hold the signing secret")
        encoding = config.get("encoding", "hex")
        if encoding not in ("hex", "base64"):
            raise _bad("config.encoding must be hex or base64")
        tolerance = config.get("tolerance_s", 300)
        if not isinstance(tolerance, int) or not 1 <= tolerance <= 86_400:
            raise _bad("config.tolerance_s must be whole seconds from 1 to 86400")
        mapping = config.get("mapping")
        if mapping is not None and not (
            isinstance(mapping, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())
        ):
            raise _bad(
                'config.mapping must map field names to dotted paths: {"user_id": "user.id"}'
            )
        items = config.get("items")
        if items is not None and not isinstance(items, str):
            raise _bad("config.items must be a dotted path to the list of events")
        options = VerifyOptions(
            tolerance_s=tolerance, header=str(config.get("header", "x-signature")),
            encoding=encoding, prefix=str(config.get("prefix", "")),
            id_header=config.get("id_header"),
        )  # fmt: skip
        return cls(verify, tuple(secrets), options, items, mapping)


def map_events(payload: Any, items: str | None, mapping: dict[str, str] | None) -> list[Any]:
    """The events of a payload, each mapped to the stream's field names."""
    found = _path(payload, items) if items else payload
    events = found if isinstance(found, list) else [found]
    if mapping is None:
        return events
    return [
        {field: _path(e, path) for field, path in mapping.items() if _path(e, path) is not None}
        if isinstance(e, dict)
        else e  # not an object: ingest quarantines it with the reason
        for e in events
    ]


def _path(value: Any, path: str | None) -> Any:
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


def _bad(message: str) -> BadRequest:
    return BadRequest(message, code="bad_source_config")
