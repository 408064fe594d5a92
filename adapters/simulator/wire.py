"""The simulated platform's side of the wire: what Vobiz sends, signs and answers with.

The answer's stream URL and retries, the ``start`` message, and the webhooks
signed as Vobiz signs them (written here from Vobiz's guide rather than taken
from the server's validator, so a mistake in one is caught by the other).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import string
import xml.etree.ElementTree as ET
from urllib.parse import urlsplit

import httpx


def stream_url(answer_xml: str) -> str:
    """The media WebSocket URL from an answer reply: the Stream element's text."""
    root = ET.fromstring(answer_xml)
    stream = root.find("Stream")
    url = (stream.text or "").strip() if stream is not None else ""
    if not url:
        raise ValueError(f"answer has no <Stream> URL: {answer_xml[:200]!r}")
    return url


def start_event(call_id: str, stream_id: str) -> dict:
    """The ``start`` message Vobiz sends first on a media stream (mu-law, 8 kHz, inbound)."""
    start = {
        "callId": call_id,
        "streamId": stream_id,
        "accountId": "sim",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    }
    return {"event": "start", "sequenceNumber": 0, "start": start}


class VobizRefused(Exception):
    """The server sent a frame the real Vobiz would refuse (strict mode)."""


def signed_headers(url: str, auth_token: str, nonce: str | None = None) -> dict[str, str]:
    """The signature headers Vobiz puts on a callback to ``url`` (V3 and V2, 20-digit nonces).

    Written here from Vobiz's "validating callbacks" guide rather than taken
    from the server's validator, so a mistake in one is caught by the other.
    """
    parts = urlsplit(url)
    base = f"{parts.scheme}://{parts.netloc}{parts.path}"

    def sign(message: str) -> str:
        digest = hmac.new(auth_token.encode(), message.encode(), hashlib.sha256).digest()
        return base64.b64encode(digest).decode("ascii")

    v3 = nonce or "".join(secrets.choice(string.digits) for _ in range(20))
    v2 = "".join(secrets.choice(string.digits) for _ in range(20))
    return {
        "X-Vobiz-Signature-V3": sign(f"{base}.{v3}"),
        "X-Vobiz-Signature-V3-Nonce": v3,
        "X-Vobiz-Signature-V2": sign(f"{base}{v2}"),
        "X-Vobiz-Signature-V2-Nonce": v2,
    }


class Webhooks:
    """Vobiz's side of the HTTP callbacks: form posts, signed when it holds the auth token."""

    def __init__(self, http: httpx.AsyncClient, auth_token: str | None) -> None:
        self.http = http
        self.auth_token = auth_token

    async def post(self, path: str, form: dict[str, str]) -> httpx.Response:
        url = str(self.http.base_url.join(path))
        headers = signed_headers(url, self.auth_token) if self.auth_token else {}
        return await self.http.post(path, data=form, headers=headers)


def max_retries(answer_xml: str) -> int:
    """The Stream element's ``maxRetries`` (Vobiz caps it to 0..10; non-integers mean 0)."""
    stream = ET.fromstring(answer_xml).find("Stream")
    value = stream.get("maxRetries", "0") if stream is not None else "0"
    return min(10, max(0, int(value))) if value.isdigit() else 0
