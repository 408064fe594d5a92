"""The VobizXML the webhooks answer with: connect the stream, refuse politely, transfer."""

from __future__ import annotations

from xml.sax.saxutils import escape, quoteattr

from adapters.vobiz.protocol import STREAM_CONTENT_TYPES

_XML_DECL = '<?xml version="1.0" encoding="UTF-8"?>\n'


def answer_xml(
    ws_url: str,
    status_callback_url: str | None,
    content_type: str = "audio/x-mulaw;rate=8000",
    max_retries: int = 0,
) -> str:
    """The answer-webhook reply that connects the call to our media WebSocket.

    The URL is the element's text (not an attribute) and is escaped, because a
    stream token in its query string easily carries ``&``.
    """
    if not ws_url.startswith(("ws://", "wss://")):
        raise ValueError(f"stream URL must be ws:// or wss://, got {ws_url!r}")
    if content_type not in STREAM_CONTENT_TYPES:
        raise ValueError(f"contentType must be one of {STREAM_CONTENT_TYPES}")
    if not 0 <= max_retries <= 10:
        raise ValueError("maxRetries must be 0..10")
    attrs_ = [
        'bidirectional="true"',
        'keepCallAlive="true"',
        f"contentType={quoteattr(content_type)}",
    ]
    if status_callback_url:
        attrs_.append(f"statusCallbackUrl={quoteattr(status_callback_url)}")
        attrs_.append('statusCallbackMethod="POST"')
    if max_retries:
        attrs_.append(f'maxRetries="{max_retries}"')
    stream = f"<Stream {' '.join(attrs_)}>{escape(ws_url)}</Stream>"
    return f"{_XML_DECL}<Response>{stream}</Response>"


def busy_xml(message: str) -> str:
    """Refuse a call politely when we are full: speak, then hang up.

    This answers the call (so it is billed); a ``<Hangup reason="busy"/>`` as
    the first element would refuse it unanswered, but the caller would hear
    only a busy tone.
    """
    return f"{_XML_DECL}<Response><Speak>{escape(message)}</Speak><Hangup/></Response>"


def dial_xml(number: str) -> str:
    """Where a REST transfer sends the caller: connect them to ``number``."""
    return f"{_XML_DECL}<Response><Dial><Number>{escape(number)}</Number></Dial></Response>"
