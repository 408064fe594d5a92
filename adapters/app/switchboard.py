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

from adapters.app.admission import NOT_ANSWERED_HERE, CallBook, NewCall, Reconnect, Refused
from adapters.app.load_gauge import LoadGauge
from adapters.app.settings import ServerSettings
from adapters.call.runner import CallOptions, CallRunner
from adapters.call.store import CallStore, open_store, worker_name
from adapters.ops import metrics
from adapters.providers.interfaces import Providers
from adapters.vobiz.rest import VobizRest
from adapters.vobiz.signature import NonceMemory
from adapters.vobiz.tokens import StreamTokens, TokenError
from engine.calllog import LogError
from engine.config import AgentConfig
from engine.replay import resume

log = logging.getLogger("voice_agent.server")

#: Ended calls' log paths (and awaited hang-ups) kept.
FINISHED_KEPT = 1_000
#: With stream retries on, how long a call whose socket dropped waits for Vobiz to reconnect.
RECONNECT_WINDOW = 5.0
#: How often a socket whose call is held elsewhere asks the store again.
LEASE_POLL = 0.1
#: How long a reconnected stream waits for the worker holding its call to hand it over
#: (that worker looks every :data:`adapters.call.runner.ASKED_POLL` while it waits).
HANDOVER_WAIT = 1.5
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
    #: What this process shares with the deployment's other workers (logs, leases, answers).
    store: CallStore = attrs.field(init=False)
    #: This process, as leases and takeover notes name it.
    worker: str = attrs.field(factory=worker_name)
    #: Reads every call's log records too, for the per-turn figures of ``/metrics``.
    figures: metrics.CallFigures = attrs.field(factory=metrics.CallFigures)
    #: The process's measured load, where admission asks it (``voice-agent serve``).
    load: LoadGauge | None = None

    def __attrs_post_init__(self) -> None:
        self.book = CallBook(self.settings.max_calls)
        self.store = open_store(self.settings.log_store, self.settings.call_log_dir)
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
            log_listener=self._listeners(),
            worker=self.worker,
        )

    def _listeners(self) -> Callable[[str, dict[str, Any]], None]:
        """The figures always read the logs; the console or the demo may too."""
        figures, other = self.figures, self.log_listener
        if other is None:
            return figures

        def both(call_id: str, record: dict[str, Any]) -> None:
            figures(call_id, record)
            other(call_id, record)

        return both

    def _transfer_url(self, to: str) -> str:
        return f"{self.settings.public_url}/transfer?to={quote(to)}"

    # -- the media socket's admission ------------------------------------------------------
    async def admit_socket(self, token: str | None) -> tuple[str, NewCall | Reconnect] | None:
        """Whether a media socket may join a call; logs why not.

        This process's call book decides for its own live calls. For the rest the
        store decides across the deployment's processes: the socket's call runs
        here only with its lease (so no two processes run one call), either new
        (answered here or by another worker) or carried on from its log (its
        process was lost).
        """
        try:
            call_id = self.tokens.verify(token, self.wall_clock())
        except TokenError as exc:
            log.warning("refused media socket: token %s", exc.reason)
            metrics.refused("socket", f"token {exc.reason}")
            return None
        now = trio.current_time()
        claim = self.book.claim(call_id, now)
        if isinstance(claim, Reconnect):
            return call_id, claim
        if isinstance(claim, Refused) and claim.reason != NOT_ANSWERED_HERE:
            return self._refuse(call_id, claim.reason)
        lease = await self.store.claim(call_id, self.worker)
        if lease is None:  # its holder may be waiting for this very stream: ask for the call
            await self.store.ask_for(call_id)
        with trio.move_on_after(max(self.store.lease_wait, HANDOVER_WAIT)):
            while lease is None:  # its holder may have died, and the store not know it yet
                await trio.sleep(LEASE_POLL)
                lease = await self.store.claim(call_id, self.worker)
        if lease is None:
            self.book.release(call_id, now)
            return self._refuse(call_id, "the call is live on another worker")
        lines = await lease.records()
        prior = None
        if lines is not None:
            try:  # a long log takes a while to replay: not on the loop that carries the calls
                prior = await trio.to_thread.run_sync(resume, lines)
            except LogError as exc:
                lease.release(ended=exc.message == "the call has ended")
                self.book.release(call_id, now)
                return self._refuse(call_id, f"its log cannot be carried on: {exc}")
        if isinstance(claim, Refused):  # not answered here: by another worker, or to take over
            answer = await self.store.answer_of(call_id) if prior is None else ("", "")
            adopted = self.book.adopt(call_id, *answer, now) if answer else claim
            if isinstance(adopted, Refused):
                lease.release(ended=False)
                return self._refuse(call_id, adopted.reason)
            claim = adopted
        return call_id, attrs.evolve(claim, lease=lease, prior=prior)

    def _refuse(self, call_id: str, reason: str) -> tuple[str, NewCall | Reconnect] | None:
        log.warning("refused media socket: %s", reason, extra={"call_id": call_id})
        metrics.refused("socket", reason)
        return None

    def started(self, call_id: str, runner: CallRunner) -> None:
        self.book.started(call_id, runner)
        self.idle = trio.Event()
        metrics.CALLS_STARTED.inc()
        metrics.CALLS_LIVE.inc()

    def finished(self, call_id: str, runner: CallRunner) -> None:
        self.book.finished(call_id)
        metrics.CALLS_LIVE.dec()
        metrics.CALLS_ENDED.labels(metrics.end_reason(runner.end_reason)).inc()
        self.figures.forget(call_id)
        self.finished_logs.append(runner.path)
        if not runner.hangup_heard and not runner.handed_over:
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
