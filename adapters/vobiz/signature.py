"""Is this webhook really from Vobiz? HMAC-SHA256 signatures keyed with the auth token.

Vobiz documents (vobiz.ai/docs/concepts/validating-callbacks) two live schemes:

- V2: ``base64(HMAC-SHA256(auth_token, base_url + nonce))``
- V3: ``base64(HMAC-SHA256(auth_token, base_url + "." + nonce))``

where ``base_url`` is the callback URL with its query string removed and the
nonce comes from ``X-Vobiz-Signature-V2-Nonce`` / ``-V3-Nonce``. Plivo's V3
(``plivo/utils/signature_v3.py`` in plivo-python), which Vobiz is modelled
on, signs more: the URL with its sorted query, then the sorted POST params.
We accept a V3 header that matches either string, so the validator keeps
working if Vobiz ever moves to the stricter Plivo form. Note what the Vobiz
form implies: the params are not signed, and nothing time-bound is, so a
signature proves only "Vobiz called this URL once": the server refuses a
nonce it has seen (:class:`NonceMemory`), binds the call id into the stream
token, and acts on a live call's hang-up only when it is signed.

The URL must be the public one Vobiz called (scheme, host, path), not what a
reverse proxy rewrote it to.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import parse_qs, urlparse, urlsplit, urlunparse

import attrs

ParamValue = str | Sequence[str]
#: Request headers: a plain mapping, or a web framework's multi-dict (anything with ``items()``).
Headers = Mapping[str, str] | Any


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


#: The signature headers Vobiz sends, strongest first: (signature, its nonce headers, scheme).
#: The ``MA`` pair comes on a sub-account's callbacks, signed with the parent account's token;
#: Vobiz documents no nonce header of its own for it, so the plain one is used when there is none.
SCHEMES = (
    ("x-vobiz-signature-v3", ("x-vobiz-signature-v3-nonce",), "v3"),
    (
        "x-vobiz-signature-ma-v3",
        ("x-vobiz-signature-ma-v3-nonce", "x-vobiz-signature-v3-nonce"),
        "ma-v3",
    ),
    ("x-vobiz-signature-v2", ("x-vobiz-signature-v2-nonce",), "v2"),
    (
        "x-vobiz-signature-ma-v2",
        ("x-vobiz-signature-ma-v2-nonce", "x-vobiz-signature-v2-nonce"),
        "ma-v2",
    ),
)


def _nonce(headers: Mapping[str, str], names: tuple[str, ...]) -> str:
    return next((headers[name] for name in names if headers.get(name)), "")


@attrs.frozen
class Verdict:
    """What a webhook's signature headers said.

    ``problem`` is None when a signature matched; otherwise it says exactly what
    was missing or wrong, in words an operator can act on. ``nonce`` is the
    matching header's nonce (to refuse the same request twice).
    """

    problem: str | None
    nonce: str = ""
    scheme: str = ""

    @property
    def ok(self) -> bool:
        return self.problem is None


def present(headers: Headers) -> bool:
    """Whether any signature header with its nonce came (checked before reading a body)."""
    lowered = {key.lower(): value for key, value in headers.items()}
    return any(lowered.get(sig) and _nonce(lowered, nonces) for sig, nonces, _ in SCHEMES)


def check(
    method: str,
    url: str,
    params: Mapping[str, ParamValue] | None,
    headers: Headers,
    auth_token: str,
    parent_token: str | None = None,
) -> Verdict:
    """Match a webhook's signature headers; say what is wrong when none matches.

    ``params`` may be None when the body has not been read: Vobiz's own
    schemes sign only the URL and the nonce, so only the stricter Plivo form
    of V3 needs them. ``parent_token`` checks the ``MA`` headers (the parent
    account's token); without it they are checked with ``auth_token``, which
    is right when this server holds the parent account's credentials.
    """
    if not auth_token:
        return Verdict("no VOBIZ_AUTH_TOKEN to check signatures with")
    lowered = {key.lower(): value for key, value in headers.items()}
    found = [(sig, nonces, scheme) for sig, nonces, scheme in SCHEMES if lowered.get(sig)]
    if not found:
        return Verdict(
            "no X-Vobiz-Signature-V3/-V2 header: enable callback authentication for this URL "
            "in the Vobiz console, or set VALIDATE_SIGNATURES=false to accept unsigned webhooks"
        )
    base = base_url(url)
    for sig_header, nonce_headers, scheme in found:
        nonce = _nonce(lowered, nonce_headers)
        if not nonce:
            continue
        token = (parent_token or auth_token) if scheme.startswith("ma-") else auth_token
        if scheme.endswith("v3"):
            messages = [f"{base}.{nonce}"]
            if params is not None:
                messages.append(f"{plivo_v3_string(method, url, params)}.{nonce}")
        else:
            messages = [f"{base}{nonce}"]
        if _matches(lowered[sig_header], messages, token):
            return Verdict(None, nonce, scheme)
    names = ", ".join(sig.title() for sig, _, _ in found)
    if not any(_nonce(lowered, nonces) for _, nonces, _ in found):
        return Verdict(f"{names} came without its nonce header")
    return Verdict(
        f"{names} does not match {base}: check that PUBLIC_URL is the address Vobiz calls "
        "and that VOBIZ_AUTH_TOKEN is this account's token"
    )


def validate(
    method: str,
    url: str,
    params: Mapping[str, ParamValue],
    headers: Headers,
    auth_token: str,
) -> bool:
    """True when a V3 (or, failing that, V2) signature header matches.

    Fails closed: no auth token, no signature or no nonce means False. A
    header may carry several comma-separated signatures (key rotation); any
    one matching is enough. Comparisons are constant-time.
    """
    return check(method, url, params, headers, auth_token).ok


class NonceMemory:
    """The nonces of recently accepted webhooks, to refuse a captured request sent again.

    Vobiz's signatures cover only the URL and a random nonce, not the form
    fields, so without this memory one captured signed ``/answer`` could be
    replayed with any ``CallUUID``. The memory is bounded (oldest forgotten
    first): a replay is refused while its nonce is among the last ``size``.
    """

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, nonce: str) -> bool:
        """Remember ``nonce``; False when it was seen before."""
        if nonce in self._seen:
            return False
        self._seen[nonce] = None
        if len(self._seen) > self.size:
            self._seen.popitem(last=False)
        return True
