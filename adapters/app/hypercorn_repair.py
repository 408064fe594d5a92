"""Two repairs to hypercorn's trio connection handler, so one caller cannot take the server down.

hypercorn 0.18 guards every write to a connection with a lock, except the final
``send_eof()`` in ``TCPServer._close``. That call checkpoints while it holds trio's
send-conflict detector, so when a caller hangs up at the moment the app closes the
socket (the agent's ``hangup`` does exactly that), hypercorn's reader task answers the
caller's Close frame, collides with it and raises ``trio.BusyResourceError``. The
error escapes the connection handler, and ``trio.serve_listeners`` lets a handler's
error end the whole server: every live call on the process drops.

The repairs: ``_close`` takes the send lock for ``send_eof()`` (and, if a write is in
flight, skips the half-close: ``aclose()`` ends that write anyway); and a connection
whose handler fails for any other reason is logged and ended alone.
"""

from __future__ import annotations

import contextlib
import logging

import trio
from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger("voice_agent.server")

_ALREADY_GONE = (
    trio.BrokenResourceError,
    trio.BusyResourceError,
    trio.ClosedResourceError,
    AttributeError,  # an SSL stream has no send_eof
)


async def _close_under_send_lock(self: TCPServer) -> None:
    if not self.send_lock.locked():
        self.send_lock.acquire_nowait()
        try:
            await self.stream.send_eof()
        except _ALREADY_GONE:
            pass
        finally:
            self.send_lock.release()
    await self.stream.aclose()


_original_run = TCPServer.run


async def _run_contained(self: TCPServer) -> None:
    try:
        await _original_run(self)
    except Exception:
        log.exception("a connection failed inside hypercorn; it is closed, the server goes on")
        with trio.CancelScope(shield=True), contextlib.suppress(Exception):
            await self.stream.aclose()  # best effort: the failure is already logged


def install() -> None:
    """Apply both repairs (idempotent); ``serve_app`` calls this before serving."""
    TCPServer._close = _close_under_send_lock
    TCPServer.run = _run_contained
