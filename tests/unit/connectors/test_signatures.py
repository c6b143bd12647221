"""Webhook signature schemes, against signatures made the way each sender documents."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest
from hypothesis import given
from hypothesis import strategies as st

from headwater.connectors.sources.signatures import SignatureError, VerifyOptions, verify

BODY = b'{"id": "evt_1", "type": "payment.succeeded"}'
NOW = 1_800_000_000
OPTS = VerifyOptions()


def hexmac(secret: bytes, msg: bytes) -> str:
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def stripe_header(secret: str, t: int = NOW, body: bytes = BODY) -> str:
    return f"t={t},v1={hexmac(secret.encode(), f'{t}.'.encode() + body)}"


def standard_headers(key: bytes, msg_id: str = "msg_1", t: int = NOW) -> dict[str, str]:
    sig = base64.b64encode(hmac.new(key, f"{msg_id}.{t}.".encode() + BODY, hashlib.sha256).digest())
    return {"webhook-id": msg_id, "webhook-timestamp": str(t),
            "webhook-signature": f"v1,{sig.decode()}"}  # fmt: skip


def test_github() -> None:
    h = {"x-hub-signature-256": "sha256=" + hexmac(b"s", BODY), "x-github-delivery": "g-1"}
    assert verify("github", h, BODY, ["s"], OPTS, NOW) == "g-1"
    with pytest.raises(SignatureError) as bad:
        verify("github", h, BODY + b" ", ["s"], OPTS, NOW)
    assert bad.value.code == "bad_signature" and bad.value.status == 401


def test_stripe_with_tolerance_and_key_rotation() -> None:
    h = {"stripe-signature": stripe_header("new")}
    assert verify("stripe", h, BODY, ["old", "new"], OPTS, NOW + 10) == "evt_1"
    with pytest.raises(SignatureError) as stale:
        verify("stripe", h, BODY, ["new"], OPTS, NOW + 301)
    assert stale.value.code == "stale_signature"
    two = {"stripe-signature": stripe_header("old") + ",v1=" + "00" * 32}
    assert verify("stripe", two, BODY, ["old"], OPTS, NOW) == "evt_1"


def test_standard_webhooks_with_several_signatures() -> None:
    key = b"0123456789abcdef0123456789abcdef"
    secret = "whsec_" + base64.b64encode(key).decode()
    h = standard_headers(key)
    h["webhook-signature"] = "v1,bm90LWl0 " + h["webhook-signature"]
    assert verify("standard", h, BODY, [secret], OPTS, NOW) == "msg_1"
    with pytest.raises(SignatureError):
        verify("standard", standard_headers(b"other-key"), BODY, [secret], OPTS, NOW)


def test_generic_hmac_with_a_configured_header_prefix_and_encoding() -> None:
    opts = VerifyOptions(
        header="X-Acme-Signature", encoding="base64", prefix="sha256=", id_header="X-Acme-Id"
    )
    sig = base64.b64encode(hmac.new(b"k", BODY, hashlib.sha256).digest()).decode()
    h = {"x-acme-signature": f"sha256={sig}", "x-acme-id": "a-9"}
    assert verify("hmac", h, BODY, ["k"], opts, NOW) == "a-9"


@pytest.mark.parametrize(
    ("scheme", "headers", "code"),
    [
        ("github", {}, "missing_signature"),
        ("github", {"x-hub-signature-256": "md5=abc"}, "malformed_signature"),
        ("github", {"x-hub-signature-256": "sha256=zz"}, "malformed_signature"),
        ("stripe", {"stripe-signature": "garbage"}, "malformed_signature"),
        ("stripe", {"stripe-signature": "t=abc,v1=00"}, "malformed_signature"),
        ("standard", {"webhook-id": "m"}, "missing_signature"),
        (
            "standard",
            {"webhook-id": "m", "webhook-timestamp": str(NOW), "webhook-signature": "v2,abc"},
            "malformed_signature",
        ),
        ("hmac", {"x-signature": "x" * 5000}, "malformed_signature"),
    ],
)
def test_malformed_headers_are_401_with_a_code(scheme: str, headers: dict, code: str) -> None:
    with pytest.raises(SignatureError) as err:
        verify(scheme, headers, BODY, ["s"], OPTS, NOW)
    assert err.value.code == code and err.value.status == 401


@given(st.dictionaries(
    st.sampled_from(["x-hub-signature-256", "stripe-signature", "webhook-id", "webhook-timestamp",
                     "webhook-signature", "x-signature"]),
    st.text(max_size=200)))  # fmt: skip
def test_no_header_value_gets_past_or_breaks_verification(headers: dict[str, str]) -> None:
    for scheme in ("github", "stripe", "standard", "hmac"):
        with pytest.raises(SignatureError):
            verify(scheme, headers, BODY, ["s"], OPTS, NOW)
