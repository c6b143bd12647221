"""Webhook signatures: who sent this body, checked on the raw bytes in constant time.

One function per scheme, each taking the request headers (lower-case names), the raw
body, the source's secrets (several during a key rotation) and the current time, and
returning the delivery id (for dedup) or raising ``SignatureError`` with a stable code:

- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, body)>``; the
  delivery id is ``X-GitHub-Delivery``.
- ``stripe``: ``Stripe-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret, "t.body")>[,v1=...]``,
  refused when ``t`` is further than the tolerance from now; the id is the event's ``id``.
- ``standard`` (Standard Webhooks): ``webhook-id``, ``webhook-timestamp``,
  ``webhook-signature: v1,<base64 HMAC-SHA256(key, "id.timestamp.body")> ...`` where the
  secret is ``whsec_<base64 key>``; the id is ``webhook-id``.
- ``hmac``: HMAC-SHA256 of the body in a configurable header, hex or base64, with an
  optional prefix such as ``sha256=``; the id from an optional header.

>>> import hashlib, hmac as h
>>> body = b'{"action": "opened"}'
>>> sig = "sha256=" + h.new(b"s3cret", body, hashlib.sha256).hexdigest()
>>> verify("github", {"x-hub-signature-256": sig, "x-github-delivery": "d1"}, body,
...        ["s3cret"], VerifyOptions(), now_s=0)
'd1'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import orjson

from headwater.errors import HeadwaterError

SCHEMES = ("github", "stripe", "standard", "hmac")
MAX_SIGNATURE_HEADER = 4096  # bytes: a longer header is refused before any work


class SignatureError(HeadwaterError):
    code = "bad_signature"
    status = 401


@dataclass(frozen=True, slots=True)
class VerifyOptions:
    tolerance_s: int = 300  # stripe and standard: how far the signed timestamp may be from now
    header: str = "x-signature"  # hmac: where the signature is
    encoding: str = "hex"  # hmac: hex or base64
    prefix: str = ""  # hmac: e.g. "sha256="
    id_header: str | None = None  # hmac: where the delivery id is, if anywhere


Headers = Mapping[str, str]


def verify(
    scheme: str,
    headers: Headers,
    body: bytes,
    secrets: Sequence[str],
    options: VerifyOptions,
    now_s: float,
) -> str | None:
    """Check the signature; return the delivery id (None when the scheme has none)."""
    check: Callable[[Headers, bytes, Sequence[str], VerifyOptions, float], str | None] = {
        "github": _github,
        "stripe": _stripe,
        "standard": _standard,
        "hmac": _hmac,
    }[scheme]
    return check(headers, body, secrets, options, now_s)


def _header(headers: Headers, name: str) -> str:
    value = headers.get(name)
    if not value:
        raise SignatureError(
            f"missing {name} header: the request is not signed", code="missing_signature"
        )
    if len(value) > MAX_SIGNATURE_HEADER:
        raise SignatureError(f"the {name} header is too long", code="malformed_signature")
    return value


def _mac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def _any_equal(expected: Sequence[bytes], given: Sequence[bytes]) -> bool:
    found = False
    for e in expected:  # no early exit: the time does not tell which key matched
        for g in given:
            found |= hmac.compare_digest(e, g)
    return found


def _fresh(timestamp: str, options: VerifyOptions, now_s: float) -> None:
    try:
        at = int(timestamp)
    except ValueError:
        raise SignatureError(
            "the signature timestamp is not a number", code="malformed_signature"
        ) from None
    if abs(now_s - at) > options.tolerance_s:
        raise SignatureError(
            f"the signature is {abs(now_s - at):.0f} s from now, more than the "
            f"{options.tolerance_s} s tolerance: a replayed or delayed delivery",
            code="stale_signature",
        )


def _unhex(text: str) -> bytes | None:
    try:
        return bytes.fromhex(text)
    except ValueError:
        return None


def _unbase64(text: str) -> bytes | None:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


def _refuse() -> SignatureError:
    return SignatureError("the signature does not match the body and the source's secret")


def _github(
    h: Headers, body: bytes, secrets: Sequence[str], o: VerifyOptions, now_s: float
) -> str | None:
    value = _header(h, "x-hub-signature-256")
    scheme, _, digest = value.partition("=")
    given = _unhex(digest) if scheme == "sha256" else None
    if given is None:
        raise SignatureError(
            "X-Hub-Signature-256 must read sha256=<hex>", code="malformed_signature"
        )
    if not _any_equal([_mac(s.encode(), body) for s in secrets], [given]):
        raise _refuse()
    return h.get("x-github-delivery")


def _stripe(
    h: Headers, body: bytes, secrets: Sequence[str], o: VerifyOptions, now_s: float
) -> str | None:
    parts = [p.partition("=") for p in _header(h, "stripe-signature").split(",")]
    stamps = [v for k, _, v in parts if k.strip() == "t"]
    given = [_unhex(v.strip()) for k, _, v in parts if k.strip() == "v1"]
    if len(stamps) != 1 or not given or any(g is None for g in given):
        raise SignatureError(
            "Stripe-Signature must read t=<unix>,v1=<hex>", code="malformed_signature"
        )
    _fresh(stamps[0].strip(), o, now_s)
    signed = stamps[0].strip().encode() + b"." + body
    if not _any_equal([_mac(s.encode(), signed) for s in secrets], [g for g in given if g]):
        raise _refuse()
    return _event_id(body)


def _standard(
    h: Headers, body: bytes, secrets: Sequence[str], o: VerifyOptions, now_s: float
) -> str | None:
    msg_id, stamp = _header(h, "webhook-id"), _header(h, "webhook-timestamp")
    _fresh(stamp, o, now_s)
    given: list[bytes] = []
    for item in _header(h, "webhook-signature").split():
        version, _, sig = item.partition(",")
        raw = _unbase64(sig) if version == "v1" else None
        if raw is not None:
            given.append(raw)
    if not given:
        raise SignatureError(
            "webhook-signature must hold v1,<base64> signatures", code="malformed_signature"
        )
    keys = [_standard_key(s) for s in secrets]
    signed = f"{msg_id}.{stamp}.".encode() + body
    if not _any_equal([_mac(k, signed) for k in keys], given):
        raise _refuse()
    return msg_id


def _standard_key(secret: str) -> bytes:
    key = _unbase64(secret.removeprefix("whsec_"))
    return key if key is not None else secret.encode()


def _hmac(
    h: Headers, body: bytes, secrets: Sequence[str], o: VerifyOptions, now_s: float
) -> str | None:
    value = _header(h, o.header.lower())
    if o.prefix and not value.startswith(o.prefix):
        raise SignatureError(
            f"the {o.header} header must start with {o.prefix!r}", code="malformed_signature"
        )
    text = value[len(o.prefix) :].strip()
    given = _unbase64(text) if o.encoding == "base64" else _unhex(text)
    if given is None:
        raise SignatureError(
            f"the {o.header} header is not {o.encoding}", code="malformed_signature"
        )
    if not _any_equal([_mac(s.encode(), body) for s in secrets], [given]):
        raise _refuse()
    return h.get(o.id_header.lower()) if o.id_header else None


def _event_id(body: bytes) -> str | None:
    try:
        event = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    found = event.get("id") if isinstance(event, dict) else None
    return found if isinstance(found, str) and len(found) <= 256 else None
