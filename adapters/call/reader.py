"""The task that reads a call's media socket: translate and forward, nothing else.

hypercorn hands the app only ten inbound messages per socket before its reader
waits, so nothing slow runs here: each frame goes through the media session
(microseconds), caller audio goes to the recognizer's own bounded channel and
the inline local VAD, and what the frame means for the conversation goes on the
call's one event channel. Bad frames are counted and noted; too many end the call.

The caller's audio goes to the recognizer in batches of up to :data:`BATCH_BYTES`
(one message instead of five) while the local VAD says it may wait: while the
caller is quiet (most of a busy call: the agent is talking) and while they talk.
From the first silent frame after speech until the VAD has heard the speech end
(longer than the recognizer's endpointing), every frame goes at once: those are
the frames that end a turn at the recognizer, so a turn's final result is not
delayed (``docs/load.md`` has the measurement).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

import trio

from adapters.call.recording import Recording
from adapters.media.audio import FRAME_BYTES
from adapters.ops import metrics
from adapters.providers.interfaces import Transport, VoiceDetector
from adapters.vobiz.protocol import ProtocolError
from adapters.vobiz.session import CallerAudio, MediaSession, StartedAgain
from engine import events as ev

#: Caller audio held for the recognizer at most: 100 ms of 8 kHz mu-law.
BATCH_BYTES = 800


class SocketReader:
    def __init__(
        self,
        media: MediaSession,
        events: trio.MemorySendChannel[ev.Event],
        audio: trio.MemorySendChannel[bytes],
        vad: VoiceDetector | None,
        recording: Recording | None,
        note: Callable[..., None],
        now: Callable[[], float],
        log: logging.LoggerAdapter,
        max_protocol_errors: int,
    ) -> None:
        self.media = media
        self.events = events
        self.audio = audio
        self.vad = vad
        self.recording = recording
        self.note = note
        self.now = now
        self.log = log
        self.max_protocol_errors = max_protocol_errors
        self.dropped_audio = 0
        self.protocol_errors: Counter[str] = Counter()
        self._held = bytearray()  # audio not yet passed to the recognizer

    async def read(self, transport: Transport, call_over: Callable[[], bool]) -> None:
        """Returns when the socket closes or the stream ends; after the call, frames are discarded."""
        try:
            await self._read(transport, call_over)
        finally:
            self._pass_on(b"")

    async def _read(self, transport: Transport, call_over: Callable[[], bool]) -> None:
        seen_unknown: set[str] = set()
        while True:
            try:
                frame = await transport.receive()
            except Exception:  # the socket closed: the normal end of a Vobiz call
                return
            if call_over():
                continue  # read and discard until the platform closes
            try:
                received = self.media.receive(frame)
            except ProtocolError as exc:
                if await self._protocol_error(exc, seen_unknown):
                    return
                continue
            if isinstance(received, CallerAudio):
                for event in self._hear(received.ulaw):
                    await self.events.send(event)
            elif isinstance(received, StartedAgain):
                self.note("start_again", stream_id=received.stream_id)
            else:
                await self.events.send(received)
                if isinstance(received, ev.CallEnded):
                    return

    def _hear(self, audio: bytes) -> list[ev.Event]:
        """Pass caller audio to the local VAD and the recognizer; the VAD's events come back."""
        if self.recording is not None:
            self.recording.caller(audio, self.now())
        events: list[ev.Event] = []
        if self.vad is not None:
            try:
                events = self.vad.feed(audio, self.now())
            except Exception as exc:
                self.log.exception("local VAD failed; barge-in falls back to the recognizer")
                self.note("vad_failed", reason=repr(exc))
                self.vad = None
        if (
            self.vad is not None
            and self.vad.audio_can_wait
            and len(self._held) + len(audio) < BATCH_BYTES
        ):
            self._held += audio
        else:
            self._pass_on(audio)
        return events

    def _pass_on(self, audio: bytes) -> None:
        """To the recognizer, after what was held. It never makes the caller's side wait:
        a recognizer 5 s behind loses audio (counted in frames)."""
        if self._held:
            self._held += audio
            audio = bytes(self._held)
            self._held.clear()
        if not audio:
            return
        try:
            self.audio.send_nowait(audio)
        except trio.WouldBlock:
            frames = max(1, len(audio) // FRAME_BYTES)
            self.dropped_audio += frames
            metrics.DROPPED_AUDIO_FRAMES.inc(frames)

    async def _protocol_error(self, exc: ProtocolError, seen: set[str]) -> bool:
        """Log a bad frame; True when there have been too many and the call must end."""
        self.protocol_errors[exc.kind] += 1
        metrics.PROTOCOL_ERRORS.labels(exc.kind).inc()
        detail = exc.detail[:200]
        if exc.kind != "unknown_event" or exc.detail not in seen:
            seen.add(exc.detail)
            self.log.warning("bad frame: %s: %s", exc.kind, detail)
            self.note("protocol_error", problem=exc.kind, detail=detail)
        if sum(self.protocol_errors.values()) >= self.max_protocol_errors:
            await self.events.send(ev.CallEnded("too many protocol errors"))
            return True
        return False

    def footer(self) -> dict[str, Any]:
        return {
            "dropped_audio_frames": self.dropped_audio,
            "protocol_errors": dict(self.protocol_errors),
        }
