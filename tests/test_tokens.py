"""Stream tokens and webhook signatures: what gets in, and everything that must not."""

from __future__ import annotations

import base64
import hashlib
import hmac
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.vobiz import signature
from adapters.vobiz.tokens import StreamTokens, TokenError

SECRET = b"s" * 32
NOW = 1_700_000_000.0


def reason(tokens: StreamTokens, token: str | None, now: float = NOW) -> str:
    with pytest.raises(TokenError) as info:
        tokens.verify(token, now)
    return info.value.reason


def test_round_trip_is_url_safe():
    tokens = StreamTokens(SECRET)
    token = tokens.issue("CA-123/ü", NOW)
    assert re.fullmatch(r"[A-Za-z0-9_.\-]+", token)
    assert tokens.verify(token, NOW) == "CA-123/ü"
    assert tokens.verify(token, NOW + 299) == "CA-123/ü"


def test_expired():
    tokens = StreamTokens(SECRET)
    token = tokens.issue("c1", NOW, ttl=10)
    assert reason(tokens, token, NOW + 10) == "expired"


def test_missing():
    assert reason(StreamTokens(SECRET), "") == "missing"
    assert reason(StreamTokens(SECRET), None) == "missing"


def swap_call_id(token: str, call_id: str) -> str:
    version, _, expiry, mac = token.split(".")
    encoded = base64.urlsafe_b64encode(call_id.encode()).rstrip(b"=").decode()
    return ".".join([version, encoded, expiry, mac])


def test_forged():
    tokens = StreamTokens(SECRET)
    token = tokens.issue("c1", NOW)
    version, call, expiry, mac = token.split(".")
    assert reason(tokens, swap_call_id(token, "c2")) == "forged"
    assert reason(tokens, ".".join([version, call, str(int(expiry) + 1000), mac])) == "forged"
    flipped = ("A" if mac[0] != "A" else "B") + mac[1:]
    assert reason(tokens, ".".join([version, call, expiry, flipped])) == "forged"
    assert reason(StreamTokens(b"t" * 32), token) == "forged"


def test_forged_wins_over_expired():
    tokens = StreamTokens(SECRET)
    token = swap_call_id(tokens.issue("c1", NOW, ttl=1), "c2")
    assert reason(tokens, token, NOW + 100) == "forged"


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "v1.a.b",
        "v2.YzE.1.AAAA",
        "v1.YzE.-1.AAAA",
        "v1.YzE.12.",
        "v1.Y.12.AAAA",
        "v1.YzE=.1.A",
    ],
)
def test_malformed(token):
    assert reason(StreamTokens(SECRET), token) == "malformed"


@given(st.text())
def test_verify_refuses_arbitrary_text_with_token_error_only(text):
    with pytest.raises(TokenError):
        StreamTokens(SECRET).verify(text, NOW)


def test_from_env():
    shared = StreamTokens.from_env("x" * 24)
    assert not shared.ephemeral
    assert StreamTokens.from_env("x" * 24).verify(shared.issue("c", NOW), NOW) == "c"
    made_up = StreamTokens.from_env(None)
    assert made_up.ephemeral and StreamTokens.from_env("").ephemeral
    assert made_up.secret != StreamTokens.from_env(None).secret
    assert repr(made_up.secret) not in repr(made_up)


def test_short_secret_is_refused():
    with pytest.raises(ValueError):
        StreamTokens(b"short")


# ---------------------------------------------------------------- webhook signatures

TOKEN = "MAtokenSECRET"
URL = "https://agent.example/answer?run=7"
PARAMS = {"CallUUID": "c-1", "From": "+911234", "To": "+915678", "Direction": "inbound"}
NONCE = "12345678901234567890"


def b64mac(message: str, key: str = TOKEN) -> str:
    return base64.b64encode(
        hmac.new(key.encode(), message.encode(), hashlib.sha256).digest()
    ).decode()


def v3_headers(sig: str, nonce: str = NONCE) -> dict[str, str]:
    return {"X-Vobiz-Signature-V3": sig, "X-Vobiz-Signature-V3-Nonce": nonce}


def test_vobiz_v3_documented_string_is_accepted():
    # Vobiz: base64(HMAC-SHA256(token, base URL without query + "." + nonce))
    headers = v3_headers(b64mac(f"https://agent.example/answer.{NONCE}"))
    assert signature.validate("POST", URL, PARAMS, headers, TOKEN)


def test_vobiz_v2_documented_string_is_accepted():
    headers = {
        "x-vobiz-signature-v2": b64mac(f"https://agent.example/answer{NONCE}"),
        "x-vobiz-signature-v2-nonce": NONCE,
    }
    assert signature.validate("POST", URL, PARAMS, headers, TOKEN)


def test_plivo_v3_string_for_post():
    # plivo-python signature_v3.construct_post_url: base URL, "?" + sorted query,
    # "." when both query and body exist, then sorted key+value pairs, no separators.
    expected = "https://agent.example/answer?run=7.CallUUIDc-1DirectioninboundFrom+911234To+915678"
    assert signature.plivo_v3_string("POST", URL, PARAMS) == expected
    headers = v3_headers(b64mac(f"{expected}.{NONCE}"))
    assert signature.validate("POST", URL, PARAMS, headers, TOKEN)


def test_plivo_v3_string_edge_cases():
    assert signature.plivo_v3_string("POST", "https://a.b/cb", {"B": "2", "A": "1"}) == (
        "https://a.b/cb?A1B2"
    )
    assert signature.plivo_v3_string("POST", "https://a.b/cb?z=1&a=2", {}) == (
        "https://a.b/cb?a=2&z=1"
    )
    assert signature.plivo_v3_string("GET", "https://a.b/cb?z=1", {"m": "3"}) == (
        "https://a.b/cb?m=3&z=1"
    )
    assert signature.plivo_v3_string("GET", "https://a.b/cb", {}) == "https://a.b/cb"


def test_plivo_v3_covers_the_params():
    sig = b64mac(f"{signature.plivo_v3_string('POST', URL, PARAMS)}.{NONCE}")
    tampered = {**PARAMS, "From": "+919999"}
    assert not signature.validate("POST", URL, tampered, v3_headers(sig), TOKEN)


def test_any_of_several_comma_separated_signatures():
    good = b64mac(f"https://agent.example/answer.{NONCE}")
    headers = v3_headers(f"bogus, {good}")
    assert signature.validate("POST", URL, PARAMS, headers, TOKEN)


@pytest.mark.parametrize(
    ("url", "headers"),
    [
        pytest.param("https://agent.example/other", None, id="tampered-url"),
        pytest.param("http://agent.example/answer", None, id="tampered-scheme"),
        pytest.param(
            URL, v3_headers(b64mac(f"https://agent.example/answer.{NONCE}"), "1"), id="nonce"
        ),
        pytest.param(
            URL, v3_headers(b64mac(f"https://agent.example/answer.{NONCE}", "x")), id="key"
        ),
        pytest.param(URL, {}, id="no-headers"),
        pytest.param(
            URL,
            {"X-Vobiz-Signature-V3": b64mac(f"https://agent.example/answer.{NONCE}")},
            id="no-nonce",
        ),
        pytest.param(URL, {"X-Vobiz-Signature-V3-Nonce": NONCE}, id="no-signature"),
        pytest.param(URL, v3_headers(""), id="empty-signature"),
    ],
)
def test_rejected(url, headers):
    if headers is None:
        headers = v3_headers(b64mac(f"https://agent.example/answer.{NONCE}"))
    assert not signature.validate("POST", url, PARAMS, headers, TOKEN)


def test_empty_auth_token_fails_closed():
    headers = v3_headers(b64mac(f"https://agent.example/answer.{NONCE}", ""))
    assert not signature.validate("POST", URL, PARAMS, headers, "")
