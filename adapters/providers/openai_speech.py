"""Sentence-by-sentence speech from OpenAI's ``/audio/speech``, streamed to the phone.

The response is read as it arrives (``with_streaming_response`` and
``iter_bytes``), so the caller hears the first syllables while the rest of
the sentence is still being generated; a plain ``create()`` would buffer the
whole body. ``pcm`` (24 kHz s16le) is asked for because it needs no decoder
and its chunks can be converted to 8 kHz mu-law one by one, odd lengths
included.

OpenAI has announced that ``tts-1``, ``tts-1-hd`` and ``gpt-4o-mini-tts``
shut down on 2027-01-06; the base URL is a setting so that any compatible
server can take over.
"""

from __future__ import annotations

import attrs
import httpx2

from adapters.media.audio import PhoneEncoder
from adapters.providers.interfaces import ProviderLink
from adapters.providers.openai_chat import (
    DEFAULT_TIMEOUT,
    RunBoundClient,
    failure_reason,
)
from engine.events import TtsAudio, TtsDone, TtsFailed


@attrs.frozen
class SpeechSettings:
    """Which voice, and how patient to be; ``instructions`` work with gpt-4o-mini-tts only."""

    model: str = "gpt-4o-mini-tts"
    voice: str = "marin"
    instructions: str | None = None
    speed: float | None = None
    timeout: httpx2.Timeout = DEFAULT_TIMEOUT
    max_retries: int = attrs.field(default=1, validator=attrs.validators.in_((0, 1)))
    base_url: str | None = None
    api_key: str | None = attrs.field(default=None, repr=False)


class OpenAISpeech:
    """A :class:`~adapters.providers.interfaces.TextToSpeech` on OpenAI's streamed ``pcm`` speech."""

    def __init__(self, settings: SpeechSettings | None = None) -> None:
        self.settings = s = settings or SpeechSettings()
        self._client = RunBoundClient(s.base_url, s.api_key, s.timeout, s.max_retries)

    def warm(self) -> None:
        self._client.warm()

    async def aclose(self) -> None:
        """Release pooled connections (call it in the run that used this voice)."""
        await self._client.aclose()

    async def synthesize(self, utterance: int, seq: int, text: str, link: ProviderLink) -> None:
        """Stream sentence ``seq`` as TtsAudio chunks, then TtsDone (or TtsFailed)."""
        if not text.strip():
            await link.emit(TtsDone(utterance, seq))
            return
        s = self.settings
        options: dict = {}
        if s.instructions:
            options["instructions"] = s.instructions
        if s.speed is not None:
            options["speed"] = s.speed
        encoder = PhoneEncoder()
        started = link.now()
        first: float | None = None
        try:
            speech = self._client.get().audio.speech.with_streaming_response
            async with speech.create(
                model=s.model, voice=s.voice, input=text, response_format="pcm", **options
            ) as response:
                async for chunk in response.iter_bytes():
                    audio = encoder.process(chunk)
                    if audio:
                        if first is None:
                            first = link.now() - started
                        await link.emit(TtsAudio(utterance, seq, audio))
        except Exception as exc:
            reason = failure_reason(exc)
            if reason is None:
                raise
            link.log.warning("tts utterance %d seq %d failed: %s (%s)", utterance, seq, reason, exc)
            await link.emit(TtsFailed(utterance, seq, reason))
            return
        tail = encoder.flush()
        if tail:
            await link.emit(TtsAudio(utterance, seq, tail))
        link.log.info(
            "tts utterance %d seq %d: first audio %s s, %d chars",
            utterance,
            seq,
            "-" if first is None else f"{first:.3f}",
            len(text),
        )
        await link.emit(TtsDone(utterance, seq))
