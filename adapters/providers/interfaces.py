"""The small interfaces every speech and language provider plugs into.

A provider never talks to the engine directly: it sends engine events into
the call's one event channel through :class:`ProviderLink`, and the runner starts
and cancels its work in a cancel scope of its own. Swapping Deepgram for the
offline recognizer, or OpenAI speech for Deepgram Aura, is one setting because
each side only knows these shapes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol

import attrs
import trio

from engine.commands import Message
from engine.events import Event


@attrs.frozen
class ProviderLink:
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

    async def run(self, audio: AudioSource, link: ProviderLink) -> None:
        """Run until ``audio`` closes or the task is cancelled."""


class AudioSource(Protocol):
    """The caller's audio as 8 kHz mu-law chunks (a trio receive channel)."""

    def __aiter__(self): ...

    async def receive(self) -> bytes: ...


class VoiceDetector(Protocol):
    """One call's local VAD, fed each caller chunk inline in the receive path."""

    def feed(self, chunk: bytes, now: float) -> list[Event]:
        """The CallerSpeechStarted/CallerSpeechStopped this audio completes, if any."""

    @property
    def audio_can_wait(self) -> bool:
        """Whether the latest audio may reach the recognizer a little later (nothing in it
        can end the caller's turn)."""


class VoiceActivity(Protocol):
    """Makes a fresh :class:`VoiceDetector` for each call."""

    def detector(self) -> VoiceDetector: ...


class LanguageModel(Protocol):
    """Streams one reply: LlmText*, LlmToolCall*, then LlmDone or LlmFailed."""

    async def complete(
        self, utterance: int, messages: tuple[Message, ...], link: ProviderLink
    ) -> None:
        """Stream the reply of ``utterance``; cancellation stops it at once."""


class TextToSpeech(Protocol):
    """Turns one sentence into 8 kHz mu-law: TtsAudio*, then TtsDone or TtsFailed."""

    async def synthesize(self, utterance: int, seq: int, text: str, link: ProviderLink) -> None:
        """Stream the audio of sentence ``seq``; cancellation stops it at once."""


class Transport(Protocol):
    """The media socket as the runner needs it: the ASGI socket and test clients both fit."""

    async def receive(self) -> str | bytes: ...

    async def send(self, text: str) -> None: ...


@attrs.frozen
class Providers:
    """What a call talks to; ``stt`` is a factory because a recognizer holds per-call state."""

    stt: Callable[[], SpeechToText]
    llm: LanguageModel
    tts: TextToSpeech
    names: dict[str, str] = attrs.field(factory=dict)
    #: A local VAD beside the recognizer for fast barge-in (None: the recognizer's own).
    vad: VoiceActivity | None = None
    #: Whether the recognizer's CallerSpeechStarted/CallerSpeechStopped reach the engine.
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
