"""A repair to hypercorn's trio connection handler, so one caller cannot take the server down.

hypercorn guards every write to a connection with ``TCPServer.send_lock``, except the
final ``send_eof()`` in ``TCPServer._close``. trio's ``SocketStream.send_eof`` holds the
stream's send-conflict detector across a checkpoint, so when a caller hangs up at the
moment the app closes the socket (the agent's ``hangup`` does exactly that), hypercorn's
reader task answers the caller's Close frame inside that checkpoint, collides with it and
raises ``trio.BusyResourceError``. ``protocol_send`` does not expect that error, it escapes
the connection handler, and ``trio.serve_listeners`` lets a handler's error end the whole
server: every live call on the process drops.

The code this mirrors is hypercorn 0.18.0's ``src/hypercorn/trio/tcp_server.py``
(identical in 0.17.0-0.17.3):
https://github.com/pgjones/hypercorn/blob/0.18.0/src/hypercorn/trio/tcp_server.py
The bug, a reproduction and the upstream patch are in ``docs/hypercorn-close-race.md``.

The repairs: ``_close`` takes the send lock for ``send_eof()`` (and, if a write is in
flight, skips the half-close: ``aclose()`` ends that write anyway); and should a stream
error of the same family escape a connection some other way, that connection alone is
logged and closed. Any other error is hypercorn's or the app's, and propagates as it
would without the repair. Private methods are replaced, so only the versions whose
source was compared are patched; any other is left alone, with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from importlib.metadata import version

import trio
from hypercorn.trio.tcp_server import TCPServer

log = logging.getLogger("voice_agent.server")

#: hypercorn releases whose ``TCPServer.run``, ``protocol_send`` and ``_close`` are the code
#: this module mirrors. Keep in step with the pin in pyproject.toml.
KNOWN_VERSIONS = frozenset({"0.17.0", "0.17.1", "0.17.2", "0.17.3", "0.18.0"})

#: What hypercorn's own ``_close`` ignores around ``send_eof()``.
_ALREADY_GONE = (
    trio.BrokenResourceError,
    trio.BusyResourceError,
    trio.ClosedResourceError,
    AttributeError,  # an SSL stream has no send_eof
)

#: Errors that say this connection's stream is in use, broken or closed: never a reason to
#: stop serving the others.
_STREAM_ERRORS = (trio.BusyResourceError, trio.BrokenResourceError, trio.ClosedResourceError)


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
    except* _STREAM_ERRORS:
        log.exception("a connection failed inside hypercorn; it is closed, the server goes on")
        with trio.CancelScope(shield=True), contextlib.suppress(*_STREAM_ERRORS):
            await self.stream.aclose()


def install(installed: str | None = None) -> bool:
    """Apply the repairs (idempotent) and say whether they are in place.

    ``installed`` is the hypercorn version to check, by default the one importable here.
    """
    installed = installed or version("hypercorn")
    if installed not in KNOWN_VERSIONS:
        log.warning(
            "hypercorn %s is not a version the close-race repair was written for (%s): "
            "not patched; a caller hanging up as the server closes its socket may stop the "
            "server (see docs/hypercorn-close-race.md)",
            installed,
            ", ".join(sorted(KNOWN_VERSIONS)),
        )
        return False
    TCPServer._close = _close_under_send_lock  # type: ignore[method-assign]
    TCPServer.run = _run_contained  # type: ignore[method-assign]
    return True
