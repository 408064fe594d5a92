"""The task that writes a call's outbox to its media socket.

The engine never waits on the socket: what it wants the phone to hear waits in
the media session's outbox, and this task writes it as fast as the socket takes
it. So a barge-in's ``clearAudio`` is decided at once, not queued behind seconds
of reply audio being written, and a slow or stalled caller connection slows
only this task.
"""

from __future__ import annotations

import logging

import trio

from adapters.providers.interfaces import Transport
from adapters.vobiz.session import MediaSession


class Sender:
    def __init__(self, media: MediaSession, log: logging.LoggerAdapter) -> None:
        self.media = media
        self.log = log
        #: The socket carrying the call now (a reconnect replaces it).
        self.transport: Transport | None = None
        self._changed = trio.Event()
        self._idle = trio.Event()
        self._idle.set()

    def ready(self) -> None:
        """Something was queued: wake the writer."""
        if self._idle.is_set():
            self._idle = trio.Event()
        self._changed.set()

    async def run(self) -> None:
        """Write the outbox to the live socket, in order, for the life of the call."""
        while True:
            while (frame := self.media.next_frame()) is not None:
                await self._send(frame)
            self._idle.set()
            self._changed = trio.Event()
            await self._changed.wait()

    async def flush(self, timeout: float = 2.0) -> None:
        """Wait until everything queued is written (before a hang-up, a transfer, the end)."""
        with trio.move_on_after(timeout):
            await self._idle.wait()

    async def _send(self, frame: str) -> None:
        if self.transport is None:
            return
        try:
            await self.transport.send(frame)
        except Exception as exc:
            self.log.info("send failed (socket gone?): %r", exc)
