"""One call, run as one trio nursery: the providers, the timers and the engine.

Everything that happens to the call becomes an engine event on **one**
memory channel, so the call log is the true order of things. Each media
socket is read by its own task (:meth:`CallSession.serve_socket`, in the
socket's handler) that does nothing but translate, forward and run the local
VAD (microseconds a frame): hypercorn buffers only ten inbound messages per
socket (``max_app_queue_size``), so slow work must never run there, and caller
audio goes straight to the recognizer's own bounded channel, never through the
engine. Each completion, synthesis and timer runs in a
cancel scope of its own, so the engine's Cancel* commands take effect at
once. The call outlives its socket, so a stream Vobiz reconnects continues
the same conversation.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import logging
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

import attrs
import trio

from adapters import vobiz
from adapters.audio import Framer, InboundConverter, OutboundConverter
from adapters.providers import (
    CallLink,
    LanguageModel,
    SpeechToText,
    TextToSpeech,
    VoiceActivity,
    VoiceDetector,
)
from adapters.recording import Recording
from engine import commands as cmd
from engine import events as ev
from engine.calllog import CallLogWriter, LoggedCall
from engine.config import AgentConfig
from engine.core import CallCore

logger = logging.getLogger("voice_agent.call")

#: Caller audio waiting for the recognizer: 5 s of 20 ms frames, then frames are dropped.
STT_BUFFER_FRAMES = 250
#: Events waiting for the engine (the engine handles one in tens of microseconds).
EVENT_BUFFER = 1000
#: Syntheses allowed to run ahead of playback.
TTS_LOOKAHEAD = 2


class CallLogger(logging.LoggerAdapter):
    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        return f"[call {self.extra['call_id']}] {msg}", kwargs


@attrs.frozen
class Providers:
    """What a call talks to; ``stt`` is a factory because a recognizer holds per-call state."""

    stt: Callable[[], SpeechToText]
    llm: LanguageModel
    tts: TextToSpeech
    names: dict[str, str] = attrs.field(factory=dict)
    #: A local VAD beside the recognizer for fast barge-in (None: the recognizer's own).
    vad: VoiceActivity | None = None
    #: Whether the recognizer's SpeechStarted/SpeechStopped reach the engine.
    stt_speech_events: bool = True

    def warm(self) -> None:
        """Pay start-up costs (clients, lazy imports) before the first caller waits on them."""
        for provider in (self.llm, self.tts):
            warm = getattr(provider, "warm", None)
            if warm is not None:
                warm()

    async def aclose(self) -> None:
        """Close pooled connections (they belong to the trio run that opened them)."""
        for provider in (self.llm, self.tts):
            close = getattr(provider, "aclose", None)
            if close is not None:
                with trio.move_on_after(2, shield=True):
                    await close()


class Transport:
    """The media socket as the runner needs it; the ASGI socket and test clients both fit."""

    async def receive(self) -> str | bytes:  # pragma: no cover - interface
        raise NotImplementedError

    async def send(self, text: str) -> None:  # pragma: no cover - interface
        raise NotImplementedError


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


def log_path(log_dir: Path, call_id: str, wall: datetime.datetime) -> Path:
    """A name that says when and which call, and that two call ids never share.

    The readable part squashes the id to file-name-safe characters, so ``a/b``
    and ``a.b`` would look alike: a hash of the whole id tells them apart.
    """
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in call_id)
    tag = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return log_dir / f"{wall:%Y%m%dT%H%M%S}_{safe[:60]}_{tag}.jsonl"


def create_log(log_dir: Path, call_id: str, wall: datetime.datetime) -> tuple[Path, IO[str]]:
    """Open a new call log, never an existing one: a log is never truncated or shared."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_path(log_dir, call_id, wall)
    for n in range(2, 1000):
        try:
            return path, path.open("x", encoding="utf-8")
        except FileExistsError:
            path = path.with_name(f"{log_path(log_dir, call_id, wall).stem}-{n}.jsonl")
    raise FileExistsError(f"no free log name for call {call_id!r} in {log_dir}")


class CallSession:
    """A live call from the media stream's ``start`` to the footer of its log."""

    def __init__(
        self, start: vobiz.Start, options: CallOptions, caller: str = "", callee: str = ""
    ):
        self.start = start
        self.options = options
        self.call_id = start.call_id
        self.log = CallLogger(logger, {"call_id": self.call_id})
        self.events_tx, self.events_rx = trio.open_memory_channel[ev.Event](EVENT_BUFFER)
        self.audio_tx, self.audio_rx = trio.open_memory_channel[bytes](STT_BUFFER_FRAMES)
        self.inbound = InboundConverter(start.encoding, start.sample_rate)
        self.outbound = OutboundConverter(start.encoding, start.sample_rate)
        self.framer = Framer()
        # The local VAD runs inline in the receive path: a channel and a task of its own
        # per call cost more than the detector itself.
        vad = options.providers.vad
        self.vad: VoiceDetector | None = vad.detector() if vad is not None else None
        self.core = CallCore(options.config)
        wall = datetime.datetime.now(datetime.UTC)
        self.path, self._file = create_log(options.log_dir, self.call_id, wall)
        listener = options.log_listener
        self.writer = CallLogWriter(
            self._file,
            options.record_audio,
            functools.partial(listener, self.call_id) if listener is not None else None,
        )
        # With audio recording on, both sides of the call also go to a stereo WAV by the log.
        self.recording = Recording() if options.record_audio else None
        self.writer.header(
            call_id=self.call_id,
            stream_id=start.stream_id,
            caller=caller,
            callee=callee,
            started_at=wall.isoformat(),
            media_format={"encoding": start.encoding, "sample_rate": start.sample_rate},
            providers=options.providers.names,
            config=options.config.to_dict(),
            versions=options.versions,
        )
        self.engine = LoggedCall(self.core, self.writer)
        self.t0 = trio.current_time()
        self.end_reason = "unknown"
        self.dropped_audio = 0
        self.protocol_errors: Counter[str] = Counter()
        self._llm: dict[int, trio.CancelScope] = {}
        self._tts: dict[int, list[trio.CancelScope]] = defaultdict(list)
        self._timers: dict[str, trio.CancelScope] = {}
        self._tts_slots = trio.Semaphore(TTS_LOOKAHEAD)
        self._nursery: trio.Nursery | None = None
        self._transport: Transport | None = None
        self._sockets = 0  # sockets served so far; the newest one is the live one
        # What goes to the caller waits here for the sender task: the engine never waits on
        # the socket, so a barge-in is not queued behind seconds of reply audio being written.
        self._outbox: deque[vobiz.Outbound] = deque()
        self._outbox_changed = trio.Event()
        self._outbox_idle = trio.Event()
        self._outbox_idle.set()
        self._socket_scope: trio.CancelScope | None = None
        self._socket_open = False
        self._reconnects = 0
        self._gave_up = False  # the reconnect window passed
        self._hangup_reported = False  # an unsigned hang-up webhook came while the socket was open
        self.hangup_heard = False  # the platform's hang-up webhook for this call came
        self._stop_sent = False
        # Set when the line is known to be down: the socket closed, or the platform said so.
        self._line_closed = trio.Event()
        self.link = CallLink(self.call_id, self._emit, self.now, self.log)

    # -- time and events -------------------------------------------------------------
    def now(self) -> float:
        """Call time, to the microsecond (the log and the engine see the same number)."""
        return round(trio.current_time() - self.t0, 6)

    async def _emit(self, event: ev.Event) -> None:
        await self.events_tx.send(event)

    def end_from_outside(self, reason: str) -> None:
        """The platform says the call is over (hang-up webhook, drain): end it now."""
        self._line_closed.set()
        try:
            self.events_tx.send_nowait(ev.CallEnded(reason))
        except (trio.WouldBlock, trio.ClosedResourceError):
            if self._nursery is not None:
                self.end_reason = reason
                self._nursery.cancel_scope.cancel()

    def note(self, what: str, **fields: Any) -> None:
        """Add a runner note to the log; once the footer is written, the log is finished."""
        if self._file.closed:
            # A webhook can arrive between the footer and the socket handler's exit.
            self.log.info("after the end: %s %s (not logged)", what, fields)
            return
        self.writer.note(self.now(), what, **fields)

    def refuses_socket(self) -> str | None:
        """Why a new media socket may not join this call now; None when it is a fair reconnect.

        Only Vobiz reconnecting a stream it lost is let in: while the call's own
        socket is open, a second one presenting the same token is an attempt to
        take the call over.
        """
        if self.core.ended or self._gave_up or self._hangup_reported:
            return "call has ended"
        if self._socket_open:
            return "the call's media socket is open (a second socket is refused)"
        if self.options.reconnect_window <= 0:
            return "stream retries are off"
        if self._reconnects >= self.options.max_reconnects:
            return "no stream retries left"
        return None

    def hangup_reported(self, fields: dict[str, str]) -> None:
        """An unsigned hang-up webhook: believed only once the media socket is gone too.

        Anyone can send an unsigned POST, so it cannot end a call whose caller is
        still connected; it does end a call that lost its socket at once, without
        waiting for a reconnect that will not come.
        """
        self.hangup_heard = True
        if self._socket_open:
            self._hangup_reported = True
            self.log.info("unsigned hangup webhook while the media socket is open: ends with it")
            return
        self.note("hangup_webhook", signed=False, **fields)
        self.end_from_outside("hangup webhook")

    def stream_status(self, status: vobiz.StreamStatus) -> None:
        """A (signed) stream status callback: kept in the log, trouble also on the console."""
        self.note("stream_status", **status.for_log())
        if status.trouble:
            self.log.warning("stream trouble: %s", status.for_log())

    # -- the call --------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the call until it ends; the log always gets its footer.

        Sockets come and go through :meth:`serve_socket`: with stream retries on,
        Vobiz reconnects a dropped stream and the same conversation goes on.
        """
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                nursery.start_soon(self._run_stt)
                nursery.start_soon(self._run_sender)
                await self.events_tx.send(ev.CallStarted(self.call_id, self.start.stream_id))
                await self._engine_loop()
                await self._flush_outbox()
                if self._stop_sent:
                    await self._confirm_hangup()
                nursery.cancel_scope.cancel()
        except Exception as exc:  # one failing call never takes the server down
            self.end_reason = f"error: {exc!r}"
            self.log.exception("call failed")
        finally:
            with trio.move_on_after(2, shield=True):
                self._finish()
            # The call is over: stop reading its socket, so the handler closes it.
            if self._socket_scope is not None:
                self._socket_scope.cancel()

    async def serve_socket(self, transport: Transport, start: vobiz.Start | None = None) -> None:
        """Carry one media socket's frames into the call until the socket goes away.

        ``start`` is given for a reconnected stream (a fresh ``start``, new stream id,
        same call): later frames go out on the new socket.
        """
        if start is not None:
            self._reconnects += 1
            self.note("stream_reconnected", stream_id=start.stream_id)
            self.log.info("stream reconnected as %s", start.stream_id)
            self.start = start
            self.inbound = InboundConverter(start.encoding, start.sample_rate)
            self.outbound = OutboundConverter(start.encoding, start.sample_rate)
            self.framer.reset()
        self._transport = transport
        self._sockets += 1
        self._socket_open = True
        mine = self._sockets
        try:
            with trio.CancelScope() as self._socket_scope:
                if self.core.ended:
                    return
                await self._receive(transport)
        finally:
            self._socket_lost(mine)

    def _socket_lost(self, which: int) -> None:
        """The socket closed (or its handler was cancelled): end the call, or wait for a retry."""
        if which != self._sockets:
            return  # an old socket
        self._socket_open = False
        self._line_closed.set()
        if self.core.ended:
            return
        if self._hangup_reported:
            self.note("hangup_webhook", signed=False)
            self.end_from_outside("hangup webhook")
            return
        window = self.options.reconnect_window
        if window > 0 and self._reconnects < self.options.max_reconnects and self._nursery:
            self._line_closed = trio.Event()  # a reconnect opens the line again
            self.note("stream_lost", waiting=window)
            self._nursery.start_soon(self._await_reconnect, which, window)
        else:
            self.end_from_outside("socket closed")

    async def _await_reconnect(self, which: int, window: float) -> None:
        await trio.sleep(window)
        if which == self._sockets:
            self._gave_up = True
            self._line_closed.set()
            await self.events_tx.send(ev.CallEnded("socket closed (no reconnect)"))

    async def _confirm_hangup(self) -> None:
        """After our ``stop``, Vobiz ends the call and closes the stream; check that it did.

        Vobiz documents that a ``stop`` with no XML after the Stream ends the call
        (hangup cause 4010), so the REST hang-up is only the fallback for a stream
        that stays open past :attr:`CallOptions.stop_grace`.
        """
        with trio.move_on_after(self.options.stop_grace):
            await self._line_closed.wait()
            self.note("hangup", via="stop", ok=True)
            return
        if self.options.on_hangup is None:
            self.note("hangup", via="stop", ok=False, error="stream still open; no REST API")
            return
        await self._best_effort("rest_hangup", self.options.on_hangup(self.call_id))

    async def _engine_loop(self) -> None:
        async for event in self.events_rx:
            if isinstance(event, ev.CallEnded):
                self.end_reason = event.reason
            for command in self.engine.handle(event, self.now()):
                await self._dispatch(command)
            if self.core.ended:
                return

    def _finish(self) -> None:
        if not self.core.ended:
            # Cancelled from outside (the server cancelled the socket's handler, e.g. at shutdown):
            # the engine still hears how the call ended, so the log tells the whole story.
            if self.end_reason == "unknown":
                self.end_reason = "socket closed"
            self.engine.handle(ev.CallEnded(self.end_reason), self.now())
        self.writer.footer(
            self.now(),
            reason=self.end_reason,
            duration=self.now(),
            final_state=self.core.state,
            dropped_audio_frames=self.dropped_audio,
            protocol_errors=dict(self.protocol_errors),
            turns=[t.as_dict() for t in self.writer.latency.turns()],
        )
        self._file.close()
        if self.recording is not None:
            self.recording.write_wav(self.path.with_suffix(".wav"), self.now())
        self.log.info("ended (%s); log %s", self.end_reason, self.path)

    # -- inbound: translate and forward, nothing else ----------------------------------------
    async def _receive(self, transport: Transport) -> None:
        """Translate and forward, nothing else; returns when the socket closes or the stream ends."""
        seen_unknown: set[str] = set()
        while True:
            try:
                frame = await transport.receive()
            except Exception:  # the socket closed: the normal end of a Vobiz call
                return
            if self.core.ended:
                continue  # the call is over: read and discard until the platform closes
            try:
                message = vobiz.parse(
                    frame,
                    self.options.max_frame_bytes,
                    encoding=self.start.encoding,
                    sample_rate=self.start.sample_rate,
                )
            except vobiz.ProtocolError as exc:
                if await self._protocol_error(exc, seen_unknown):
                    return
                continue
            for event in self._translate(message):
                await self.events_tx.send(event)
                if isinstance(event, ev.CallEnded):
                    return

    def _offer(self, channel: trio.MemorySendChannel[bytes], audio: bytes) -> None:
        """Caller audio never waits: a consumer that falls 5 s behind loses frames (counted)."""
        try:
            channel.send_nowait(audio)
        except trio.WouldBlock:
            self.dropped_audio += 1

    def _translate(self, message: vobiz.Inbound) -> list[ev.Event]:
        if isinstance(message, vobiz.Media):
            audio = self.inbound.to_ulaw8k(message.payload)
            self._offer(self.audio_tx, audio)
            if self.recording is not None:
                self.recording.caller(audio, self.now())
            return self._detect_voice(audio)
        if isinstance(message, vobiz.PlayedStream):
            return [ev.PlaybackMarked(message.name)]
        if isinstance(message, vobiz.ClearedAudio):
            return [ev.PlaybackCleared()]
        if isinstance(message, vobiz.Dtmf):
            return [ev.DtmfPressed(message.digit)]
        if isinstance(message, vobiz.Stop):
            return [ev.CallEnded("stop")]
        # A second start: Vobiz reconnected the stream; keep one conversation going.
        self.note("start_again", stream_id=message.stream_id)
        return []

    def _detect_voice(self, audio: bytes) -> list[ev.Event]:
        if self.vad is None:
            return []
        try:
            return self.vad.feed(audio, self.now())
        except Exception as exc:
            self.log.exception("local VAD failed; barge-in falls back to the recognizer")
            self.note("vad_failed", reason=repr(exc))
            self.vad = None
            return []

    async def _protocol_error(self, exc: vobiz.ProtocolError, seen: set[str]) -> bool:
        """Log a bad frame; True when there have been too many and the call must end."""
        self.protocol_errors[exc.kind] += 1
        if exc.kind == "unknown_event":
            if exc.detail not in seen:
                seen.add(exc.detail)
                self.log.warning("unknown event %r ignored (logged once)", exc.detail)
                self.note("protocol_error", problem=exc.kind, detail=exc.detail)
        else:
            self.log.warning("bad frame: %s: %s", exc.kind, exc.detail[:200])
            self.note("protocol_error", problem=exc.kind, detail=exc.detail[:200])
        if sum(self.protocol_errors.values()) >= self.options.max_protocol_errors:
            await self.events_tx.send(ev.CallEnded("too many protocol errors"))
            return True
        return False

    # -- providers ---------------------------------------------------------------------
    async def _run_stt(self) -> None:
        link = self.link
        if not self.options.providers.stt_speech_events:
            link = attrs.evolve(link, emit=self._emit_words_only)
        try:
            await self.options.providers.stt().run(self.audio_rx, link)
        except Exception as exc:
            self.log.exception("speech recognition failed; the call goes on without it")
            self.note("stt_failed", reason=repr(exc))
            await self._emit(ev.SttLost(f"error: {exc!r}"[:200]))

    async def _emit_words_only(self, event: ev.Event) -> None:
        """The recognizer's voice events are dropped when the local VAD drives barge-in."""
        if not isinstance(event, ev.SpeechStarted | ev.SpeechStopped):
            await self._emit(event)

    async def _run_llm(self, turn: int, messages: tuple, scope: trio.CancelScope) -> None:
        with scope:
            try:
                await self.options.providers.llm.complete(turn, messages, self.link)
            except Exception as exc:
                self.log.exception("completion %d failed", turn)
                await self._emit(ev.LlmFailed(turn, f"error: {exc!r}"[:200]))
        self._llm.pop(turn, None)

    async def _run_tts(self, turn: int, seq: int, text: str, scope: trio.CancelScope) -> None:
        with scope:
            async with self._tts_slots:
                try:
                    await self.options.providers.tts.synthesize(turn, seq, text, self.link)
                except Exception as exc:
                    self.log.exception("synthesis %d.%d failed", turn, seq)
                    await self._emit(ev.TtsFailed(turn, seq, f"error: {exc!r}"[:200]))

    async def _run_timer(self, name: str, at: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(self.t0 + at)
            await self._emit(ev.TimerFired(name))

    # -- outbound: commands to the world -------------------------------------------------
    def _queue(self, message: vobiz.Outbound) -> None:
        self._outbox.append(message)
        self._outbox_idle = trio.Event() if self._outbox_idle.is_set() else self._outbox_idle
        self._outbox_changed.set()

    async def _run_sender(self) -> None:
        """Write the outbox to the live socket, in order, as fast as the socket takes it."""
        while True:
            while self._outbox:
                await self._send(self._outbox.popleft())
            self._outbox_idle.set()
            self._outbox_changed = trio.Event()
            await self._outbox_changed.wait()

    async def _flush_outbox(self, timeout: float = 2.0) -> None:
        """Wait until everything queued is written (before a hang-up, a transfer, the end)."""
        with trio.move_on_after(timeout):
            await self._outbox_idle.wait()

    async def _send(self, message: vobiz.Outbound) -> None:
        assert self._transport is not None
        try:
            await self._transport.send(vobiz.encode(message, self.start))
        except Exception as exc:
            self.log.info("send failed (socket gone?): %r", exc)

    def _play(self, frame: bytes) -> None:
        if self.recording is not None:
            self.recording.agent(frame, self.now())
        payload = self.outbound.from_ulaw8k(frame)
        self._queue(vobiz.PlayAudio(payload))

    async def _dispatch(self, command: Any) -> None:
        nursery = self._nursery
        assert nursery is not None
        match command:
            case cmd.PlayAudio(audio=audio):
                for frame in self.framer.push(bytes(audio)):
                    self._play(frame)
            case cmd.Checkpoint(name=name):
                tail = self.framer.flush()
                if tail:
                    self._play(tail)
                self._queue(vobiz.Checkpoint(name))
            case cmd.ClearAudio():
                if self.recording is not None:
                    self.recording.clear(self.now())
                self.framer.reset()
                self.outbound.reset()
                # Audio not yet written is dropped here rather than sent and then cleared.
                self._outbox = deque(m for m in self._outbox if not isinstance(m, vobiz.PlayAudio))
                self._queue(vobiz.ClearAudio())
            case cmd.StartCompletion(turn=turn, messages=messages):
                scope = trio.CancelScope()
                self._llm[turn] = scope
                nursery.start_soon(self._run_llm, turn, messages, scope)
            case cmd.CancelCompletion(turn=turn):
                if (scope := self._llm.pop(turn, None)) is not None:
                    scope.cancel()
            case cmd.Synthesize(turn=turn, seq=seq, text=text):
                scope = trio.CancelScope()
                self._tts[turn].append(scope)
                nursery.start_soon(self._run_tts, turn, seq, text, scope)
            case cmd.CancelSynthesis(turn=turn):
                for scope in self._tts.pop(turn, []):
                    scope.cancel()
            case cmd.StartTimer(name=name, at=at):
                if (old := self._timers.pop(name, None)) is not None:
                    old.cancel()
                scope = self._timers[name] = trio.CancelScope()
                nursery.start_soon(self._run_timer, name, at, scope)
            case cmd.CancelTimer(name=name):
                if (scope := self._timers.pop(name, None)) is not None:
                    scope.cancel()
            case cmd.Hangup(reason=reason):
                self.end_reason = f"hangup ({reason})"
                self._queue(vobiz.StopStream())
                self._stop_sent = True
            case cmd.Transfer(to=to):
                self.end_reason = f"transfer to {to}"
                await self._flush_outbox()  # the goodbye is heard before the line moves
                if self.options.on_transfer is not None:
                    await self._best_effort(
                        "rest_transfer", self.options.on_transfer(self.call_id, to)
                    )
                else:
                    self.note("transfer_unavailable", to=to)
                    self._queue(vobiz.StopStream())
                    await self._flush_outbox()

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
