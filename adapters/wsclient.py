"""A client WebSocket whose TCP stream we own and always close.

trio-websocket's own client leaves its socket open when the server closes
first (it waits for a TCP close that it then never performs), which is what
happens after a server's ``stop`` or a refused handshake.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import trio
import trio_websocket


@asynccontextmanager
async def open_client(
    url: str,
    headers: Sequence[tuple[bytes, bytes]] = (),
    connect_timeout: float = 5,
) -> AsyncIterator[trio_websocket.WebSocketConnection]:
    """Connect to ``url`` (ws:// or wss://); the TCP stream is closed however the block ends."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a WebSocket URL: {url!r}")
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    with trio.fail_after(connect_timeout):
        stream: trio.abc.HalfCloseableStream = await trio.open_tcp_stream(parts.hostname, port)
    try:
        if secure:
            context = ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=parts.hostname)
        async with trio.open_nursery() as nursery:
            with trio.fail_after(connect_timeout):
                ws = await trio_websocket.wrap_client_stream(
                    nursery, stream, parts.netloc, resource, extra_headers=list(headers)
                )
            try:
                yield ws
            finally:
                with trio.move_on_after(2) as cleanup:
                    cleanup.shield = True
                    await ws.aclose()
                nursery.cancel_scope.cancel()
    finally:
        await trio.aclose_forcefully(stream)
