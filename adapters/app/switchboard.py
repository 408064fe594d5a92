"""The server's switchboard: its calls (answered, live, ended), and what every call is given.

One per app (``app.switchboard``). The webhooks and the media socket ask it:
may this call be answered (the call book, :mod:`adapters.app.admission`), may
this socket join that call (its stream token, then the book), what does a new
call run with (:meth:`Switchboard.options`). It also remembers the calls whose
hang-up webhook has not come yet, so a draining server answers those before
it exits.
"""

from __future__ import annotations

import importlib.metadata
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import attrs
import trio

from adapters.app.admission import CallBook, NewCall, Reconnect, Refused
from adapters.app.load_gauge import LoadGauge
from adapters.app.settings import ServerSettings
from adapters.call.runner import CallOptions, CallRunner
from adapters.providers.interfaces import Providers
from adapters.vobiz.rest import VobizRest
from adapters.vobiz.signature import NonceMemory
from adapters.vobiz.tokens import StreamTokens, TokenError
from engine.config import AgentConfig

log = logging.getLogger("voice_agent.server")

#: Ended calls' log paths (and awaited hang-ups) kept.
FINISHED_KEPT = 1_000
#: With stream retries on, how long a call whose socket dropped waits for Vobiz to reconnect.
RECONNECT_WINDOW = 5.0
#: A stream token outlives the longest call by this much (the answer window and slack).
TOKEN_SLACK = 60.0


def version() -> str:
    try:
        return importlib.metadata.version("vobiz-voice-agent")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


@attrs.define
class Switchboard:
    settings: ServerSettings
    config: AgentConfig
    providers: Providers
    tokens: StreamTokens
    rest: VobizRest | None = None
    book: CallBook = attrs.field(init=False)
    nonces: NonceMemory = attrs.field(factory=NonceMemory)
    #: Log paths of the latest ended calls, newest last.
    finished_logs: deque[Path] = attrs.field(factory=lambda: deque(maxlen=FINISHED_KEPT))
    #: Set while no call is live.
    idle: trio.Event = attrs.field(factory=trio.Event)
    #: Unix time for stream tokens (tests move it; the call book runs on trio's clock).
    wall_clock: Callable[[], float] = time.time
    #: After the agent's ``stop``, how long Vobiz has to close the stream before a REST hang-up.
    stop_grace: float = 5.0
    #: Calls that ended here and whose hang-up webhook has not come yet (bounded, newest last).
    awaiting_hangup: OrderedDict[str, None] = attrs.field(factory=OrderedDict)
    #: Set while no hang-up is awaited.
    hangups_in: trio.Event = attrs.field(factory=trio.Event)
    #: Sees every call's log records as they are written (the console's live view).
    log_listener: Callable[[str, dict[str, Any]], None] | None = None
    #: The process's measured load, where admission asks it (``voice-agent serve``).
    load: LoadGauge | None = None

    def __attrs_post_init__(self) -> None:
        self.book = CallBook(self.settings.max_calls)
        self.idle.set()
        self.hangups_in.set()

    @property
    def live(self) -> dict[str, CallRunner]:
        return self.book.live  # type: ignore[return-value]

    @property
    def draining(self) -> bool:
        return self.book.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.book.draining = value

    def token_lifetime(self) -> float:
        """A token lives as long as its call can (reconnects included), and no longer."""
        return self.config.max_call_seconds + self.book.answer_window + TOKEN_SLACK

    def options(self) -> CallOptions:
        """What a new call runs with."""
        rest = self.rest
        retries = self.settings.stream_retries
        return CallOptions(
            config=self.config,
            providers=self.providers,
            log_dir=self.settings.call_log_dir,
            record_audio=self.settings.record_audio,
            on_hangup=rest.hangup if rest is not None else None,
            on_transfer=(
                (lambda call_id, to: rest.transfer(call_id, self._transfer_url(to)))
                if rest is not None
                else None
            ),
            versions={"vobiz-voice-agent": version(), "trio": trio.__version__},
            reconnect_window=RECONNECT_WINDOW if retries else 0.0,
            max_reconnects=retries,
            stop_grace=self.stop_grace,
            log_listener=self.log_listener,
        )

    def _transfer_url(self, to: str) -> str:
        return f"{self.settings.public_url}/transfer?to={quote(to)}"

    # -- the media socket's admission ------------------------------------------------------
    def admit_socket(self, token: str | None) -> tuple[str, NewCall | Reconnect] | None:
        """Whether a media socket may join a call; logs why not."""
        try:
            call_id = self.tokens.verify(token, self.wall_clock())
        except TokenError as exc:
            log.warning("refused media socket: token %s", exc.reason)
            return None
        claim = self.book.claim(call_id, trio.current_time())
        if isinstance(claim, Refused):
            log.warning("[call %s] refused media socket: %s", call_id, claim.reason)
            return None
        return call_id, claim

    def started(self, call_id: str, runner: CallRunner) -> None:
        self.book.started(call_id, runner)
        self.idle = trio.Event()

    def finished(self, call_id: str, runner: CallRunner) -> None:
        self.book.finished(call_id)
        self.finished_logs.append(runner.path)
        if not runner.hangup_heard:
            self.awaiting_hangup[call_id] = None
            while len(self.awaiting_hangup) > FINISHED_KEPT:
                self.awaiting_hangup.popitem(last=False)
            self.hangups_in = trio.Event()
        if not self.live:
            self.idle.set()

    def hangup_heard(self, call_id: str) -> None:
        self.awaiting_hangup.pop(call_id, None)
        if not self.awaiting_hangup:
            self.hangups_in.set()
