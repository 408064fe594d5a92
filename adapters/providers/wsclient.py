"""A client WebSocket whose TCP stream we own and always close.

``open_websocket_url`` of trio-websocket 0.12.2 never closes the client's socket
when the handshake is refused or the server closes first (RFC 6455 7.1.1 leaves
that to the server): one leaked descriptor per refusal, per Deepgram close, per
call our server ends with ``stop``. Every client of ours (Deepgram listen and
speak, the simulated caller, tests) connects through :func:`open_client`.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import trio
from trio_websocket import (
    ConnectionTimeout,
    HandshakeError,
    WebSocketConnection,
    wrap_client_stream,
)


@asynccontextmanager
async def open_client(
    url: str, headers: Sequence[tuple[bytes, bytes]] = (), connect_timeout: float = 5.0
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket whose TCP stream is always closed when the block ends.

    ``open_websocket_url`` of trio-websocket 0.12.2 never closes the client's
    socket when the handshake is refused or the server closes first (it
    leaves that to the server, RFC 6455 7.1.1): one leaked descriptor per
    refusal and per normal Deepgram close (1000 after CloseStream, 1011 on
    idle). Here we own the stream. Errors come out bare, as they do from
    ``open_websocket_url``: ``ConnectionRejected`` for a refused handshake,
    ``HandshakeError`` for network trouble, ``ConnectionTimeout``.
    """
    target = _Target.of(url)
    stream = await _connect(target, connect_timeout)
    try:
        async with trio.open_nursery() as nursery:
            try:
                with trio.fail_after(connect_timeout):
                    ws = await wrap_client_stream(
                        nursery,
                        stream,
                        target.host_header,
                        target.resource,
                        extra_headers=list(headers),
                    )
            except trio.TooSlowError:
                raise ConnectionTimeout from None
            try:
                yield ws
            finally:
                try:  # a polite close, unless we are being cancelled: then just drop
                    with trio.move_on_after(1):
                        await ws.aclose()
                finally:
                    nursery.cancel_scope.cancel()
    except BaseExceptionGroup as group:
        raise _sole_error(group) from None
    finally:
        await trio.aclose_forcefully(stream)


@attrs.frozen
class _Target:
    """Where a ``ws://`` or ``wss://`` URL points: the TCP address, and what the handshake names."""

    secure: bool
    host: str
    port: int
    resource: str  # the path and query
    host_header: str

    @classmethod
    def of(cls, url: str) -> _Target:
        parts = urlsplit(url)
        if parts.scheme not in ("ws", "wss") or not parts.hostname:
            raise ValueError(f"not a WebSocket URL: {url!r}")
        secure = parts.scheme == "wss"
        host = parts.hostname or ""
        port = parts.port or (443 if secure else 80)
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if port in (80, 443) else f"{host}:{port}"
        return cls(secure, host, port, resource, host_header)


async def _connect(
    target: _Target, connect_timeout: float
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    """The TCP (or TLS) stream to ``target``; errors as ``open_websocket_url`` raises them."""
    try:
        with trio.fail_after(connect_timeout):
            if target.secure:
                return await trio.open_ssl_over_tcp_stream(
                    target.host,
                    target.port,
                    ssl_context=ssl.create_default_context(),
                    https_compatible=True,
                )
            return await trio.open_tcp_stream(target.host, target.port)
    except trio.TooSlowError:
        raise ConnectionTimeout from None
    except OSError as exc:
        raise HandshakeError(f"cannot reach {target.host_header}: {exc}") from exc


def _sole_error(group: BaseExceptionGroup) -> BaseException:
    """The one real error inside a nursery's group, so callers can use plain ``except``."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    real = [e for e in leaves if not isinstance(e, trio.Cancelled)]
    if len(real) == 1:
        return real[0]
    if not real and leaves:
        return leaves[0]
    return group
