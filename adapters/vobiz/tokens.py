"""Per-call stream tokens: only the call we just answered may open the media socket.

The answer webhook is signed by Vobiz, but the media WebSocket it points at
is a plain URL. Putting a short-lived token, bound to the call id and signed
with a server secret, into that URL means a stranger who finds the endpoint
cannot open a socket and talk to the agent (and run up provider bills).

A token is ``v1.<call id, base64url>.<expiry, unix seconds>.<HMAC-SHA256, base64url>``:
only URL-safe characters, so it can sit in a query string unescaped. The
clock is passed in (``now``) so expiry is testable without waiting.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets

import attrs

_VERSION = "v1"
_MIN_SECRET = 16


class TokenError(Exception):
    """A token was refused; ``reason`` is one of missing, malformed, forged, expired."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    # Only canonical unpadded base64url: a token has exactly one spelling.
    if not text or "=" in text or len(text) % 4 == 1:
        raise ValueError("bad base64url")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("non-canonical base64url")
    return data


def _is_seconds(text: str) -> bool:
    return 0 < len(text) <= 12 and text.isascii() and text.isdigit()


@attrs.frozen
class StreamTokens:
    """Issues and checks stream tokens with one secret.

    ``ephemeral`` is true when the secret was made up at start-up: tokens then
    only verify in this process, so a server running several workers must be
    given a shared ``STREAM_SECRET``.
    """

    secret: bytes = attrs.field(repr=False)
    ephemeral: bool = False

    @secret.validator
    def _long_enough(self, _attribute: attrs.Attribute, value: bytes) -> None:
        if len(value) < _MIN_SECRET:
            raise ValueError(f"stream secret must be at least {_MIN_SECRET} bytes")

    @classmethod
    def from_env(cls, value: str | None) -> StreamTokens:
        """Use ``STREAM_SECRET`` when set, else a random secret flagged ``ephemeral``."""
        if value:
            return cls(value.encode("utf-8"))
        return cls(secrets.token_bytes(32), ephemeral=True)

    def _mac(self, body: str) -> str:
        return _b64(hmac.new(self.secret, body.encode("ascii"), hashlib.sha256).digest())

    def issue(self, call_id: str, now: float, ttl: float = 300) -> str:
        """A token for ``call_id`` valid until ``now + ttl`` (whole seconds, rounded down)."""
        if not call_id:
            raise ValueError("call_id is empty")
        body = f"{_VERSION}.{_b64(call_id.encode('utf-8'))}.{int(now + ttl)}"
        return f"{body}.{self._mac(body)}"

    def verify(self, token: str | None, now: float) -> str:
        """The call id the token was issued for, or :class:`TokenError`.

        The signature is checked before the expiry, so a tampered token is
        reported as forged even when it is also stale.
        """
        if not token:
            raise TokenError("missing")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != _VERSION or not _is_seconds(parts[2]):
            raise TokenError("malformed")
        version, encoded_id, expiry, mac = parts
        try:
            _unb64(mac)
            call_id = _unb64(encoded_id).decode("utf-8")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            raise TokenError("malformed") from None
        expected = self._mac(f"{version}.{encoded_id}.{expiry}")
        if not hmac.compare_digest(expected.encode("ascii"), mac.encode("ascii")):
            raise TokenError("forged")
        if now >= int(expiry):
            raise TokenError("expired")
        return call_id
