"""One call, run as one trio nursery: a small supervisor of the call's tasks.

Everything that happens to the call becomes an engine event on **one**
memory channel, so the call log is the true order of things. The parts:

- the media socket's reader (:meth:`CallRunner.serve_socket`, in the socket's
  handler) hands each frame to the call's sans-I/O :class:`MediaSession` and
  forwards what it means; caller audio goes to the recognizer's own bounded
  channel and the inline local VAD, never through the engine (hypercorn buffers
  only ten inbound messages per socket, so nothing slow runs there);
- the engine loop takes each event, logs it, steps the engine and carries out
  its commands: the phone's go to the media session's outbox, the rest to
  :class:`ProviderWork` (completions, syntheses, timers, each cancellable);
- the sender writes the outbox to the socket, so the engine never waits on it
  and a barge-in is not queued behind seconds of reply audio.

The call outlives its socket: with stream retries on, a stream Vobiz reconnects
continues the same conversation, and only such a reconnect may join a live call.
"""

from __future__ import annotations

import datetime
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

from adapters.call.line import MediaLine
from adapters.call.reader import SocketReader
from adapters.call.record import CallRecord, call_logger, create_log
from adapters.call.sender import Sender
from adapters.call.store import Lease, LeaseLost
from adapters.call.work import ProviderWork
from adapters.providers.interfaces import ProviderLink, Providers, Transport
from adapters.vobiz.protocol import Start
from adapters.vobiz.session import MediaSession
from adapters.vobiz.status import StreamStatus
from engine import commands as cmd
from engine import events as ev
from engine.calllog import read_log
from engine.config import AgentConfig
from engine.core import Engine
from engine.replay import Resumed

#: Caller audio waiting for the recognizer: 5 s of 20 ms frames, then frames are dropped.
STT_BUFFER_FRAMES = 250
#: Events waiting for the engine (the engine handles one in tens of microseconds).
EVENT_BUFFER = 1000
#: How often a call waiting for its stream looks whether it reconnected to another worker.
ASKED_POLL = 0.1


@attrs.define
class CallOptions:
    config: AgentConfig
    providers: Providers
    log_dir: Path
    record_audio: bool = False
    max_protocol_errors: int = 20
    max_frame_bytes: int = 64_000
    on_hangup: Callable[[str], Awaitable[None]] | None = None  # REST hang-up, where configured
    on_transfer: Callable[[str, str], Awaitable[None]] | None = None
    versions: dict[str, str] = attrs.field(factory=dict)
    #: How long a call whose socket dropped waits for Vobiz to reconnect (0: it ends at once).
    reconnect_window: float = 0.0
    #: Reconnects a call accepts (Vobiz ``maxRetries``).
    max_reconnects: int = 0
    #: After our ``stop``, how long Vobiz has to close the stream before the REST hang-up.
    stop_grace: float = 5.0
    #: Sees every record of the call's log as it is written: ``(call id, record)``.
    log_listener: Callable[[str, dict[str, Any]], None] | None = None
    #: This process, as leases and notes name it.
    worker: str = ""


class CallRunner:
    """A live call from the media stream's ``start`` to the footer of its log."""

    def __init__(
        self,
        start: Start,
        options: CallOptions,
        caller: str = "",
        callee: str = "",
        *,
        prior: Resumed | None = None,
        lease: Lease | None = None,
    ):
        """``prior``: the log of a call another process ran until it was lost; it goes on here."""
        self.call_id = start.call_id
        self.options = options
        self.log = call_logger(self.call_id)
        self.media = MediaSession(start, options.max_frame_bytes)
        self.events_tx, self.events_rx = trio.open_memory_channel[ev.Event](EVENT_BUFFER)
        self.audio_tx, self.audio_rx = trio.open_memory_channel[bytes](STT_BUFFER_FRAMES)
        self.lease = lease
        self.t0 = trio.current_time()
        if prior is None:
            self.engine = Engine(options.config)
            wall = datetime.datetime.now(datetime.UTC)
            self.record = CallRecord(
                lease.open_log(None) if lease else create_log(options.log_dir, self.call_id, wall),
                self.call_id,
                self.engine,
                options.record_audio,
                options.log_listener,
            )
            self.record.begin(
                start,
                caller=caller,
                callee=callee,
                providers=options.providers.names,
                config=options.config.to_dict(),
                versions=options.versions,
            )
            self._first: ev.Event = ev.CallStarted(self.call_id, start.stream_id)
        else:
            assert lease is not None, "only the lease holder carries a call on"
            self._carry_on(start, lease, prior)
            self._first = ev.CallTakenOver(options.worker)
        self.path = self.record.path
        self.end_reason = "unknown"
        # The local VAD runs inline in the receive path: a channel and a task of its own
        # per call cost more than the detector itself.
        vad = options.providers.vad
        self.reader = SocketReader(
            self.media,
            self.events_tx,
            self.audio_tx,
            vad.detector() if vad is not None else None,
            self.record.recording,
            self.note,
            self.now,
            self.log,
            options.max_protocol_errors,
        )
        self.link = ProviderLink(self.call_id, self._emit, self.now, self.log)
        self.work = ProviderWork(options.providers, self.link, self.t0)
        self._nursery: trio.Nursery | None = None
        self.sender = Sender(self.media, self.log)
        self._line = MediaLine(options.reconnect_window, options.max_reconnects)
        self.hangup_heard = False  # the platform's hang-up webhook for this call came
        self._stop_sent = False
        #: This process let the call go on elsewhere (:meth:`hand_over`): its log has no footer.
        self.handed_over = False

    def _carry_on(self, start: Start, lease: Lease, prior: Resumed) -> None:
        """Go on from the lost process's log: its engine, its log, its call clock."""
        self.engine = prior.engine
        self.record = CallRecord(
            lease.open_log(list(prior.lines)),
            self.call_id,
            self.engine,
            self.options.record_audio,
            self.options.log_listener,
        )
        records = [record for _, record in read_log(prior.lines)]
        self.record.carry_on(records)
        for record in prior.unwritten:  # what the engine decided before the loss, in full
            self.record.writer.write(record)
        started = datetime.datetime.fromisoformat(records[0]["started_at"])
        since = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
        self.t0 = trio.current_time() - max(since, prior.last_t)  # call time never runs back
        self.note(
            "taken_over",
            worker=self.options.worker,
            stream_id=start.stream_id,
            records=len(prior.lines),
            completed=len(prior.unwritten),
        )
        self.log.info("taken over after its worker was lost (%d records)", len(prior.lines))

    # -- time, events, notes -----------------------------------------------------------
    def now(self) -> float:
        """Call time, to the microsecond (the log and the engine see the same number)."""
        return round(trio.current_time() - self.t0, 6)

    async def _emit(self, event: ev.Event) -> None:
        await self.events_tx.send(event)

    def note(self, what: str, **fields: Any) -> None:
        self.record.note(self.now(), what, **fields)

    def hand_over(self) -> None:
        """This process is going away, and the call may go on without it: stop running it
        without ending it. Its stream closes without ``stop``; when Vobiz retries it, the
        worker it reaches carries the call on from its log, as after a lost worker."""
        self.handed_over = True
        self._line.closed.set()
        if self._nursery is not None:
            self._nursery.cancel_scope.cancel()

    def end_from_outside(self, reason: str) -> None:
        """The platform says the call is over (hang-up webhook, drain): end it now."""
        self._line.closed.set()
        try:
            self.events_tx.send_nowait(ev.CallEnded(reason))
        except (trio.WouldBlock, trio.ClosedResourceError):
            if self._nursery is not None:
                self.end_reason = reason
                self._nursery.cancel_scope.cancel()

    # -- what the webhooks tell the call -------------------------------------------------
    def refuses_socket(self) -> str | None:
        """Why a new media socket may not join this call now; None when it is a fair reconnect.

        Only Vobiz reconnecting a stream it lost is let in: while the call's own
        socket is open, a second one presenting the same token is an attempt to
        take the call over.
        """
        return self._line.refuses(self.engine.ended)

    def hangup_reported(self, fields: dict[str, str]) -> None:
        """An unsigned hang-up webhook: believed only once the media socket is gone too.

        Anyone can send an unsigned POST, so it cannot end a call whose caller is
        still connected; it does end a call that lost its socket at once, without
        waiting for a reconnect that will not come.
        """
        self.hangup_heard = True
        if self._line.open:
            self._line.hangup_reported = True
            self.log.info("unsigned hangup webhook while the media socket is open: ends with it")
            return
        self.note("hangup_webhook", signed=False, **fields)
        self.end_from_outside("hangup webhook")

    def stream_status(self, status: StreamStatus) -> None:
        """A (signed) stream status callback: kept in the log, trouble also on the console."""
        self.note("stream_status", **status.for_log())
        if status.trouble:
            self.log.warning("stream trouble: %s", status.for_log())

    # -- the call ------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the call until it ends; the log always gets its footer."""
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self.work.start(nursery)
                task_status.started()
                nursery.start_soon(self.work.recognize, self.audio_rx)
                nursery.start_soon(self.sender.run)
                if self.lease is not None:
                    nursery.start_soon(self._hold_lease, self.lease)
                await self.events_tx.send(self._first)
                await self._engine_loop()
                await self.sender.flush()
                if self._stop_sent:
                    await self._confirm_hangup()
                nursery.cancel_scope.cancel()
        except Exception as exc:  # one failing call never takes the server down
            self.end_reason = f"error: {exc!r}"
            self.log.exception("call failed")
        finally:
            with trio.move_on_after(2, shield=True):
                if self.handed_over:
                    self.note("handed_over", worker=self.options.worker)
                    self.record.close_unfinished()
                    self.log.info("handed over: another worker may carry it on from its log")
                else:
                    self._finish()
            # The call is over: stop reading its socket, so the handler closes it.
            self._line.scope.cancel()

    async def _hold_lease(self, lease: Lease) -> None:
        """Only one process runs a call: one that loses the lease stops at once."""
        try:
            await lease.keep()
        except LeaseLost:
            self.log.warning("lease lost: another worker runs the call now")
            self.end_from_outside("lease lost")

    async def _engine_loop(self) -> None:
        async for event in self.events_rx:
            if isinstance(event, ev.CallEnded):
                self.end_reason = event.reason
            for command in self.record.engine.handle(event, self.now()):
                await self._carry_out(command)
            if self.engine.ended:
                return

    def _finish(self) -> None:
        if not self.engine.ended:
            # Cancelled from outside (the server cancelled the socket's handler, e.g. at shutdown):
            # the engine still hears how the call ended, so the log tells the whole story.
            if self.end_reason == "unknown":
                self.end_reason = "socket closed"
            self.record.engine.handle(ev.CallEnded(self.end_reason), self.now())
        self.record.finish(
            self.now(),
            reason=self.end_reason,
            final_state=self.engine.state,
            **self.reader.footer(),
        )
        self.log.info("ended (%s); log %s", self.end_reason, self.path)

    # -- the media socket ------------------------------------------------------------------
    async def serve_socket(self, transport: Transport, start: Start | None = None) -> None:
        """Carry one media socket's frames into the call until the socket goes away.

        ``start`` is given for a reconnected stream (a fresh ``start``, new stream id,
        same call): later frames go out on the new socket.
        """
        line = self._line
        if start is not None:
            self.note("stream_reconnected", stream_id=start.stream_id)
            self.log.info("stream reconnected as %s", start.stream_id)
            self.media.reconnected(start)
        self.sender.transport = transport
        mine = line.opened(reconnect=start is not None)
        try:
            with line.scope:
                if not self.engine.ended:
                    await self.reader.read(transport, lambda: self.engine.ended)
        finally:
            self._socket_lost(mine)

    def _socket_lost(self, which: int) -> None:
        """The socket closed (or its handler was cancelled): end the call, or wait for a retry."""
        line = self._line
        if not line.lost(which) or self.engine.ended or self.handed_over:
            return  # an old socket, or the call is already over (here)
        if line.hangup_reported:
            self.note("hangup_webhook", signed=False)
            self.end_from_outside("hangup webhook")
            return
        window = self.options.reconnect_window
        if line.may_wait_for_reconnect() and self._nursery:
            line.waiting()
            self.note("stream_lost", waiting=window)
            self._nursery.start_soon(self._await_reconnect, which, window)
        else:
            self.end_from_outside("socket closed")

    async def _await_reconnect(self, which: int, window: float) -> None:
        """Wait for Vobiz to reconnect the stream; a reconnect that reached another worker
        of the deployment (they share a port) asks for the call there: it is handed over."""
        with trio.move_on_after(window):
            while which == self._line.sockets:
                await trio.sleep(ASKED_POLL)
                lease = self.lease
                if lease is not None and which == self._line.sockets and await lease.asked_for():
                    self.log.info("its stream reconnected to another worker")
                    self.hand_over()
                    return
        if which == self._line.sockets:
            self._line.gave_up = True
            self._line.closed.set()
            await self.events_tx.send(ev.CallEnded("socket closed (no reconnect)"))

    # -- commands to the world ---------------------------------------------------------------
    async def _carry_out(self, command: Any) -> None:
        match command:
            case cmd.PlayAudio() | cmd.Checkpoint() | cmd.ClearAudio():
                self.record.agent_audio(command, self.now())
                self.media.send(command)
                self.sender.ready()
            case cmd.Hangup(reason=reason):
                self.end_reason = f"hangup ({reason})"
                self.media.send(command)
                self.sender.ready()
                self._stop_sent = True
            case cmd.Transfer(to=to):
                await self._transfer(to)
            case _:
                self.work.carry_out(command)

    async def _transfer(self, to: str) -> None:
        self.end_reason = f"transfer to {to}"
        await self.sender.flush()  # the goodbye is heard before the line moves
        if self.options.on_transfer is not None:
            await self._best_effort("rest_transfer", self.options.on_transfer(self.call_id, to))
            return
        self.note("transfer_unavailable", to=to)
        self.media.send(cmd.Hangup("transfer unavailable"))
        self.sender.ready()
        await self.sender.flush()

    async def _confirm_hangup(self) -> None:
        """After our ``stop``, Vobiz ends the call and closes the stream; check that it did.

        Vobiz documents that a ``stop`` with no XML after the Stream ends the call
        (hangup cause 4010), so the REST hang-up is only the fallback for a stream
        that stays open past :attr:`CallOptions.stop_grace`.
        """
        with trio.move_on_after(self.options.stop_grace):
            await self._line.closed.wait()
            self.note("hangup", via="stop", ok=True)
            return
        if self.options.on_hangup is None:
            self.note("hangup", via="stop", ok=False, error="stream still open; no REST API")
            return
        await self._best_effort("rest_hangup", self.options.on_hangup(self.call_id))

    async def _best_effort(self, what: str, action: Awaitable[None]) -> None:
        """REST calls never raise into the call; their failures are logged."""
        with trio.move_on_after(5, shield=True) as scope:
            try:
                await action
                self.note(what, ok=True)
            except Exception as exc:
                self.log.warning("%s failed: %s", what, exc)
                self.note(what, ok=False, error=str(exc)[:200])
        if scope.cancelled_caught:
            self.note(what, ok=False, error="timeout")
