"""What Deepgram's two WebSocket APIs (listen and speak) share: how to sign in, how they refuse.

Both take the key as ``Authorization: Token <key>`` on the handshake, and both
say why they refused a handshake in a ``dg-error`` header (the body may say it
too). Wire facts: ``docs/deepgram.md``.
"""

from __future__ import annotations

from typing import Any


def auth_headers(api_key: str) -> list[tuple[bytes, bytes]]:
    return [(b"Authorization", f"Token {api_key}".encode())]


def refusal_detail(exc: Any) -> str:
    """Why Deepgram refused a handshake: its ``dg-error`` header, else the body's start."""
    for name, value in getattr(exc, "headers", None) or ():
        if name.lower() == b"dg-error":
            return str(value.decode(errors="replace"))
    body = getattr(exc, "body", None) or b""
    return body.decode(errors="replace")[:200] or "no detail"
