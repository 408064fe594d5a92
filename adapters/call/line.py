"""Which media socket carries a call, and whether another may take its place.

A call outlives its socket: with stream retries on, Vobiz reconnects a dropped
stream and the same conversation goes on. So the line keeps, per call, the
socket that is live, the reconnects used, and what the platform said (an
unsigned hang-up that waits for the socket to close). Only Vobiz reconnecting
a stream it lost may join a live call: while the call's own socket is open, a
second socket presenting the same token is an attempt to take the call over.
"""

from __future__ import annotations

import attrs
import trio


@attrs.define
class MediaLine:
    reconnect_window: float
    max_reconnects: int
    sockets: int = 0  # sockets served so far; the newest one is the live one
    open: bool = False
    reconnects: int = 0
    gave_up: bool = False  # the reconnect window passed
    hangup_reported: bool = False  # an unsigned hang-up webhook came while the socket was open
    #: Set when the line is known to be down: the socket closed, or the platform said so.
    closed: trio.Event = attrs.field(factory=trio.Event)
    #: Cancelled when the call ends, so the socket's reader stops and its handler closes it.
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)

    def refuses(self, call_ended: bool) -> str | None:
        """Why a new socket may not join now; None when it is a fair reconnect."""
        if call_ended or self.gave_up or self.hangup_reported:
            return "call has ended"
        if self.open:
            return "the call's media socket is open (a second socket is refused)"
        if self.reconnect_window <= 0:
            return "stream retries are off"
        if self.reconnects >= self.max_reconnects:
            return "no stream retries left"
        return None

    def opened(self, reconnect: bool) -> int:
        """A socket joined; returns its number (its loss counts only while it is the newest)."""
        self.reconnects += reconnect
        self.sockets += 1
        self.open = True
        self.scope = trio.CancelScope()
        return self.sockets

    def lost(self, which: int) -> bool:
        """The socket ``which`` went away; True when it was the live one."""
        if which != self.sockets:
            return False
        self.open = False
        self.closed.set()
        return True

    def may_wait_for_reconnect(self) -> bool:
        return self.reconnect_window > 0 and self.reconnects < self.max_reconnects

    def waiting(self) -> None:
        """The socket dropped and a reconnect may come: the line is not closed yet."""
        self.closed = trio.Event()
