"""What a call asks of its providers and its clock, each in a cancel scope of its own.

The engine starts and cancels completions, syntheses and timers by id; here
each one is a task in the call's nursery with its own cancel scope, so a
``CancelCompletion`` or ``CancelSynthesis`` takes effect at once, mid-stream,
and a timer restarted under the same name replaces the old one. Failures of a
provider become engine events (``LlmFailed``, ``TtsFailed``, ``SttLost``): the
call goes on and the caller hears why.
"""

from __future__ import annotations

import contextlib
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import attrs
import trio

from adapters.ops import metrics
from adapters.providers.interfaces import AudioSource, ProviderLink, Providers
from engine import commands as cmd
from engine import events as ev

#: Syntheses allowed to run ahead of playback.
TTS_LOOKAHEAD = 2

#: The commands this module carries out.
WorkCommand = (
    cmd.StartCompletion
    | cmd.CancelCompletion
    | cmd.Synthesize
    | cmd.CancelSynthesis
    | cmd.StartTimer
    | cmd.CancelTimer
)


class OrderedSlots:
    """A few look-ahead slots, taken strictly in the order the requests were made.

    trio does not promise to run tasks in the order they were started, so with a
    plain semaphore sentence 3 of a resumed reply could take a slot before
    sentence 1 and the caller would wait for audio that comes last. Each request
    gets a ticket when it is made; a ticket enters only when every earlier one
    has entered (or was cancelled) and a slot is free.
    """

    def __init__(self, slots: int) -> None:
        self._free = slots
        self._waiting: list[int] = []
        self._next_ticket = 0
        self._changed = trio.Event()

    def ticket(self) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        self._waiting.append(ticket)
        return ticket

    @contextlib.asynccontextmanager
    async def slot(self, ticket: int) -> AsyncIterator[None]:
        try:
            while not (self._waiting[0] == ticket and self._free > 0):
                await self._changed.wait()
        except BaseException:
            self._waiting.remove(ticket)
            self._wake()
            raise
        self._waiting.pop(0)
        self._free -= 1
        self._wake()
        try:
            yield
        finally:
            self._free += 1
            self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()


class ProviderWork:
    """The in-flight requests and timers of one call."""

    def __init__(self, providers: Providers, link: ProviderLink, t0: float) -> None:
        self.providers = providers
        self.link = link
        self.t0 = t0
        self._nursery: trio.Nursery | None = None
        self._completions: dict[int, trio.CancelScope] = {}
        self._syntheses: dict[int, list[trio.CancelScope]] = defaultdict(list)
        self._timers: dict[str, trio.CancelScope] = {}
        self._voice_slots = OrderedSlots(TTS_LOOKAHEAD)

    def start(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery

    def carry_out(self, command: Any) -> bool:
        """Start or cancel what ``command`` says; False when it is not this module's."""
        nursery = self._nursery
        assert nursery is not None, "start() first"
        match command:
            case cmd.StartCompletion(utterance=utterance, messages=messages):
                scope = self._completions[utterance] = trio.CancelScope()
                nursery.start_soon(self._complete, utterance, messages, scope)
            case cmd.CancelCompletion(utterance=utterance):
                if (running := self._completions.pop(utterance, None)) is not None:
                    running.cancel()
            case cmd.Synthesize(utterance=utterance, seq=seq, text=text):
                scope = trio.CancelScope()
                self._syntheses[utterance].append(scope)
                ticket = self._voice_slots.ticket()
                nursery.start_soon(self._synthesize, utterance, seq, text, scope, ticket)
            case cmd.CancelSynthesis(utterance=utterance):
                for scope in self._syntheses.pop(utterance, []):
                    scope.cancel()
            case cmd.StartTimer(name=name, at=at):
                if (old := self._timers.pop(name, None)) is not None:
                    old.cancel()
                scope = self._timers[name] = trio.CancelScope()
                nursery.start_soon(self._time, name, at, scope)
            case cmd.CancelTimer(name=name):
                if (timer := self._timers.pop(name, None)) is not None:
                    timer.cancel()
            case _:
                return False
        return True

    async def recognize(self, audio: AudioSource) -> None:
        """Run the call's recognizer until its audio ends; a crash leaves the call deaf, not dead."""
        link = self.link
        if not self.providers.stt_speech_events:
            link = attrs.evolve(link, emit=self._words_only)
        try:
            await self.providers.stt().run(audio, link)
        except Exception as exc:
            self.link.log.exception("speech recognition failed; the call goes on without it")
            await self.link.emit(ev.SttLost(f"error: {exc!r}"[:200]))

    async def _words_only(self, event: ev.Event) -> None:
        """The recognizer's voice events are dropped when the local VAD drives barge-in."""
        if not isinstance(event, ev.CallerSpeechStarted | ev.CallerSpeechStopped):
            await self.link.emit(event)

    async def _complete(self, utterance: int, messages: tuple, scope: trio.CancelScope) -> None:
        with scope:
            link = self._timed("llm", "llm_first_token", ev.LlmText, ev.LlmFailed)
            try:
                await self.providers.llm.complete(utterance, messages, link)
            except Exception as exc:
                self.link.log.exception("completion %d failed", utterance)
                await link.emit(ev.LlmFailed(utterance, f"error: {exc!r}"[:200]))
        self._completions.pop(utterance, None)

    async def _synthesize(
        self, utterance: int, seq: int, text: str, scope: trio.CancelScope, ticket: int
    ) -> None:
        with scope:
            async with self._voice_slots.slot(ticket):
                link = self._timed("tts", "tts_first_byte", ev.TtsAudio, ev.TtsFailed)
                try:
                    await self.providers.tts.synthesize(utterance, seq, text, link)
                except Exception as exc:
                    self.link.log.exception("synthesis %d.%d failed", utterance, seq)
                    await link.emit(ev.TtsFailed(utterance, seq, f"error: {exc!r}"[:200]))

    def _timed(self, role: str, kind: str, first: type, failed: type) -> ProviderLink:
        """The link for one request of the ``role`` provider, timed for ``/metrics`` from now
        (a synthesis from when its look-ahead slot was free: the provider's time, not the
        queue's)."""
        provider = self.providers.names.get(role, role)
        emit = metrics.timed(self.link.emit, provider, kind, first, failed, role)
        return attrs.evolve(self.link, emit=emit)

    async def _time(self, name: str, at: float, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(self.t0 + at)
            await self.link.emit(ev.TimerFired(name))
