"""Is this webhook really from Vobiz? HMAC-SHA256 signatures keyed with the auth token.

Vobiz documents (docs.vobiz.ai/concepts/validating-callbacks) two live schemes:

- V2: ``base64(HMAC-SHA256(auth_token, base_url + nonce))``
- V3: ``base64(HMAC-SHA256(auth_token, base_url + "." + nonce))``

where ``base_url`` is the callback URL with its query string removed and the
nonce comes from ``X-Vobiz-Signature-V2-Nonce`` / ``-V3-Nonce``. Plivo's V3
(``plivo/utils/signature_v3.py`` in plivo-python), which Vobiz is modelled
on, signs more: the URL with its sorted query, then the sorted POST params.
We accept a V3 header that matches either string, so the validator keeps
working if Vobiz ever moves to the stricter Plivo form. Note what the Vobiz
form implies: the params are not signed, so they must not be trusted beyond
"a request for this URL came from Vobiz" (the call id is cross-checked
against the stream token and the hang-up callback instead).

The URL must be the public one Vobiz called (scheme, host, path), not what a
reverse proxy rewrote it to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping, Sequence
from urllib.parse import parse_qs, urlparse, urlsplit, urlunparse

ParamValue = str | Sequence[str]


def base_url(url: str) -> str:
    """The URL without query string or fragment, as both Vobiz schemes sign it."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}{parts.path}"


def _values(value: ParamValue) -> list[str]:
    return [value] if isinstance(value, str) else sorted(value)


def _sorted_query(params: Mapping[str, ParamValue]) -> str:
    return "&".join(f"{key}={v}" for key in sorted(params) for v in _values(params[key]))


def _sorted_pairs(params: Mapping[str, ParamValue]) -> str:
    return "".join(f"{key}{v}" for key in sorted(params) for v in _values(params[key]))


def plivo_v3_string(method: str, url: str, params: Mapping[str, ParamValue]) -> str:
    """The string Plivo's V3 signs, before ``"." + nonce`` is appended.

    Mirrors ``construct_get_url`` / ``construct_post_url`` of plivo-python,
    except that text is UTF-8 encoded once (the SDK re-encodes non-ASCII
    bytes through latin-1, which no server would reproduce).
    """
    parsed = urlparse(url)
    base = urlunparse((parsed.scheme, parsed.netloc, parsed.path, "", "", ""))
    query = parse_qs(parsed.query, keep_blank_values=True)
    if method.upper() == "GET":
        merged: dict[str, ParamValue] = {**params, **query}
        qs = _sorted_query(merged)
        return f"{base}?{qs}" if qs else base
    qs = _sorted_query(query)
    if qs or params:
        base = f"{base}?{qs}"
    if qs and params:
        base = f"{base}."
    return base + _sorted_pairs(params)


def sign(message: str, auth_token: str) -> str:
    """base64(HMAC-SHA256(auth_token, message)), the form every scheme sends."""
    digest = hmac.new(auth_token.encode("utf-8"), message.encode("utf-8"), hashlib.sha256)
    return base64.b64encode(digest.digest()).decode("ascii")


def _matches(header: str, messages: list[str], auth_token: str) -> bool:
    expected = [sign(message, auth_token).encode("ascii") for message in messages]
    for candidate in header.split(","):
        given = candidate.strip().encode("utf-8")
        if given and any(hmac.compare_digest(given, e) for e in expected):
            return True
    return False


def validate(
    method: str,
    url: str,
    params: Mapping[str, ParamValue],
    headers: Mapping[str, str],
    auth_token: str,
) -> bool:
    """True when a V3 (or, failing that, V2) signature header matches.

    Fails closed: no auth token, no signature or no nonce means False. A
    header may carry several comma-separated signatures (key rotation); any
    one matching is enough. Comparisons are constant-time.
    """
    if not auth_token:
        return False
    lowered = {key.lower(): value for key, value in headers.items()}
    v3, v3_nonce = lowered.get("x-vobiz-signature-v3"), lowered.get("x-vobiz-signature-v3-nonce")
    if v3 and v3_nonce:
        messages = [
            f"{base_url(url)}.{v3_nonce}",
            f"{plivo_v3_string(method, url, params)}.{v3_nonce}",
        ]
        if _matches(v3, messages, auth_token):
            return True
    v2, v2_nonce = lowered.get("x-vobiz-signature-v2"), lowered.get("x-vobiz-signature-v2-nonce")
    return bool(v2 and v2_nonce and _matches(v2, [f"{base_url(url)}{v2_nonce}"], auth_token))
