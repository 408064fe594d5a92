"""Which calls this server holds, and which media sockets may join them.

A call passes through three stages here, and a call id never goes back:

- **answered**: ``/answer`` minted a stream token for it; a media socket must
  come within :data:`ANSWER_WINDOW` seconds or the call is forgotten. Answered
  calls count against ``MAX_CALLS`` like live ones: a burst of answers whose
  sockets have not arrived yet must not let in more calls than the server serves.
- **live**: its first socket arrived and the call is running. A second socket
  for it is a *reconnect* only when the call lost its socket, is still waiting
  for Vobiz to reconnect and has retries left; any other socket presenting its
  token is refused, so nobody can take over a live call.
- **ended**: remembered (a bounded number), so a token of a finished call opens
  nothing and ``/answer`` never mints a new token for it.

The book is pure bookkeeping with the time passed in, so every rule is a table
test; the server asks it, then acts.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

import attrs

from engine.replay import Resumed

#: How long an answered call waits for its media socket.
ANSWER_WINDOW = 10.0
#: Ended call ids remembered (their tokens open nothing; ``/answer`` refuses them).
ENDED_KEPT = 20_000
#: Why a socket is refused when this process knows nothing of its call (another may).
NOT_ANSWERED_HERE = "call not answered here, or its socket came too late"


class LiveCall(Protocol):
    """What the book asks of a running call."""

    def refuses_socket(self) -> str | None:
        """Why a new socket cannot join this call now, or None when it may reconnect."""
        ...


@attrs.frozen
class Answered:
    """A call we answered, waiting for its media socket until ``expires``."""

    caller: str
    callee: str
    expires: float


@attrs.frozen
class Refused:
    """Why a call or a socket was turned away; ``reason`` is stable, for logs and tests."""

    reason: str


@attrs.frozen
class NewCall:
    """The first socket of an answered call: start the call.

    ``lease``: the store's word that no other process runs it. ``prior``: the log
    of a call another process ran until it was lost; this one carries it on.
    """

    answered: Answered
    lease: Any = None
    prior: Resumed | None = None


@attrs.frozen
class Reconnect:
    """A socket for a live call that lost its own: carry the same call on."""


@attrs.define
class CallBook:
    max_calls: int
    answer_window: float = ANSWER_WINDOW
    answered: OrderedDict[str, Answered] = attrs.field(factory=OrderedDict)
    #: Answered calls whose socket is open but has not sent ``start`` yet.
    connecting: dict[str, Answered] = attrs.field(factory=dict)
    live: dict[str, LiveCall] = attrs.field(factory=dict)
    #: Live calls with a reconnecting socket that has not sent ``start`` yet.
    reconnecting: set[str] = attrs.field(factory=set)
    ended: OrderedDict[str, None] = attrs.field(factory=OrderedDict)
    draining: bool = False

    @property
    def held(self) -> int:
        """Calls that count against ``max_calls``: answered, connecting and live."""
        return len(self.answered) + len(self.connecting) + len(self.live)

    def expire(self, now: float) -> None:
        while self.answered:
            call_id, answered = next(iter(self.answered.items()))
            if answered.expires > now:
                break
            del self.answered[call_id]

    def answer(
        self, call_id: str, caller: str, callee: str, now: float, overloaded: bool = False
    ) -> Answered | Refused:
        """``/answer``: admit the call (and mint its token) or say why not.

        ``overloaded``: the process's measured load has no room for another call
        (:mod:`adapters.app.load_gauge`); ``max_calls`` is the ceiling either way.
        """
        self.expire(now)
        if call_id in self.live or call_id in self.connecting:
            return Refused("call is live")
        if call_id in self.ended:
            return Refused("call has ended")
        if self.draining:
            return Refused("draining")
        again = self.answered.pop(call_id, None)  # Vobiz may retry a slow answer
        if again is None and self.held >= self.max_calls:
            return Refused("full")
        if again is None and overloaded:
            return Refused("overloaded")
        answered = Answered(caller, callee, now + self.answer_window)
        self.answered[call_id] = answered
        return answered

    def claim(self, call_id: str, now: float) -> NewCall | Reconnect | Refused:
        """A socket with a valid token for ``call_id`` arrived: may it join, and how?"""
        self.expire(now)
        if (live := self.live.get(call_id)) is not None:
            if call_id in self.reconnecting:
                return Refused("another socket is reconnecting this call")
            reason = live.refuses_socket()
            if reason:
                return Refused(reason)
            self.reconnecting.add(call_id)
            return Reconnect()
        if call_id in self.connecting:
            return Refused("another socket is starting this call")
        if call_id in self.ended:
            return Refused("call has ended")
        answered = self.answered.pop(call_id, None)
        if answered is None:
            return Refused(NOT_ANSWERED_HERE)
        self.connecting[call_id] = answered
        return NewCall(answered)

    def adopt(self, call_id: str, caller: str, callee: str, now: float) -> NewCall | Refused:
        """A call answered by another worker (or one to take over) starts here, room permitting."""
        self.expire(now)
        if self.draining:
            return Refused("draining")
        if self.held >= self.max_calls:
            return Refused("full")
        answered = Answered(caller, callee, now + self.answer_window)
        self.connecting[call_id] = answered
        return NewCall(answered)

    def release(self, call_id: str, now: float) -> None:
        """The claiming socket went away before ``start``: the answer stands until it expires."""
        answered = self.connecting.pop(call_id, None)
        if answered is not None and answered.expires > now:
            self.answered[call_id] = answered

    def started(self, call_id: str, call: LiveCall) -> None:
        self.connecting.pop(call_id, None)
        self.live[call_id] = call

    def finished(self, call_id: str) -> None:
        self.live.pop(call_id, None)
        self.reconnecting.discard(call_id)
        self.connecting.pop(call_id, None)
        self.answered.pop(call_id, None)
        self.ended[call_id] = None
        while len(self.ended) > ENDED_KEPT:
            self.ended.popitem(last=False)
