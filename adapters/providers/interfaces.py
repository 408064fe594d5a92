"""The small interfaces every speech and language provider plugs into.

A provider never talks to the engine directly: it sends engine events into
the call's one event channel through :class:`CallLink`, and the runner starts
and cancels its work in a cancel scope of its own. Swapping Deepgram for the
offline recognizer, or OpenAI speech for Deepgram Aura, is one setting because
each side only knows these shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs

from engine.commands import Message
from engine.events import Event


@attrs.frozen
class CallLink:
    """What a provider may use of the call it serves.

    ``emit`` puts an event on the call's single channel (so the log keeps a
    faithful order); ``now`` is call time in seconds (trio clock based, so
    tests under ``MockClock`` stay exact); ``log`` is a logger bound to the
    call id.
    """

    call_id: str
    emit: Callable[[Event], Awaitable[None]]
    now: Callable[[], float]
    log: logging.LoggerAdapter


class SpeechToText(Protocol):
    """Streams caller audio in, sends CallerSpeechStarted/Transcript/CallerPaused out."""

    async def run(self, audio: AudioSource, link: CallLink) -> None:
        """Run until ``audio`` closes or the task is cancelled."""


class AudioSource(Protocol):
    """The caller's audio as 8 kHz mu-law chunks (a trio receive channel)."""

    def __aiter__(self): ...

    async def receive(self) -> bytes: ...


class VoiceDetector(Protocol):
    """One call's local VAD, fed each caller chunk inline in the receive path."""

    def feed(self, chunk: bytes, now: float) -> list[Event]:
        """The CallerSpeechStarted/CallerSpeechStopped this audio completes, if any."""


class VoiceActivity(Protocol):
    """Makes a fresh :class:`VoiceDetector` for each call."""

    def detector(self) -> VoiceDetector: ...


class LanguageModel(Protocol):
    """Streams one reply: LlmText*, LlmToolCall*, then LlmDone or LlmFailed."""

    async def complete(self, utterance: int, messages: tuple[Message, ...], link: CallLink) -> None:
        """Stream the reply of ``utterance``; cancellation stops it at once."""


class TextToSpeech(Protocol):
    """Turns one sentence into 8 kHz mu-law: TtsAudio*, then TtsDone or TtsFailed."""

    async def synthesize(self, utterance: int, seq: int, text: str, link: CallLink) -> None:
        """Stream the audio of sentence ``seq``; cancellation stops it at once."""
