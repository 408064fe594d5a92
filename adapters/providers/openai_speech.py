"""Sentence-by-sentence speech from OpenAI's ``/audio/speech``, streamed to the phone.

The response is read as it arrives (a streamed request on the pooled client,
:meth:`~adapters.providers.openai_http.RunBoundClient.stream`), so the caller
hears the first syllables while the rest of the sentence is still being
generated; the SDK's plain ``create()`` would buffer the whole body. ``pcm``
(24 kHz s16le) is asked for because it needs no decoder and its chunks can be
converted to 8 kHz mu-law one by one, odd lengths included.

Once a sentence's audio is well ahead of the phone, the stream is read in
pieces instead of as each network chunk lands: every piece handed on is an
engine step, two call-log records and a resampler call, and every wake-up a
system call, so a voice that streams at several times real time would
otherwise cost its call far more than the audio needs. The first audio always
goes at once, and while less than :data:`LEAD` seconds of the sentence are
queued at the phone every chunk goes at once too: a slow voice is never held back.

OpenAI has announced that ``tts-1``, ``tts-1-hd`` and ``gpt-4o-mini-tts``
shut down on 2027-01-06; the base URL is a setting so that any compatible
server can take over.
"""

from __future__ import annotations

import attrs
import httpx2
import trio

from adapters.media.audio import PhoneEncoder
from adapters.providers.interfaces import ProviderLink
from adapters.providers.openai_http import (
    DEFAULT_TIMEOUT,
    RunBoundClient,
    failure_reason,
)
from engine.events import TtsAudio, TtsDone, TtsFailed

#: Seconds of the sentence's audio that must be queued at the phone before the stream is
#: read in pieces; below it, every chunk is handed on as it comes.
LEAD = 0.3
#: The largest piece handed on at once (24 kHz 16-bit pcm: half a second).
PIECE_BYTES = 24_000
#: How long reading pauses, once more than :data:`LEAD` plus a piece is queued, so that
#: the stream's chunks arrive together.
SETTLE = 0.1
#: 8 kHz mu-law bytes a second (one byte a sample), what the phone plays.
_PHONE_BYTES_PER_SECOND = 8000


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
        sentence = _Sentence(utterance, seq, link)
        body = {"model": s.model, "voice": s.voice, "input": text, "response_format": "pcm"}
        try:
            async with self._client.stream("/audio/speech", body | options) as response:
                async for chunk in response.aiter_bytes():
                    await sentence.take(chunk)
        except Exception as exc:
            reason = failure_reason(exc)
            if reason is None:
                raise
            link.log.warning("tts utterance %d seq %d failed: %s (%s)", utterance, seq, reason, exc)
            await link.emit(TtsFailed(utterance, seq, reason))
            return
        await sentence.finish()
        first = sentence.first_audio
        link.log.info(
            "tts utterance %d seq %d: first audio %s s, %d chars",
            utterance,
            seq,
            "-" if first is None else f"{first:.3f}",
            len(text),
        )
        await link.emit(TtsDone(utterance, seq))


class _Sentence:
    """One sentence's pcm on its way to the phone: handed on at once while the phone has
    little of it queued, in pieces once it has plenty (see the module's doc)."""

    def __init__(self, utterance: int, seq: int, link: ProviderLink) -> None:
        self.utterance, self.seq, self.link = utterance, seq, link
        self.encoder = PhoneEncoder()
        self.pending = bytearray()
        self.requested = link.now()
        self.first_audio: float | None = None  # seconds from the request to the first audio
        self.started = 0.0  # trio time of the first audio handed on
        self.sent = 0  # phone bytes handed on

    def queued(self) -> float:
        """Seconds of this sentence's audio the phone has not played yet (at the least)."""
        if self.first_audio is None:
            return 0.0
        return self.sent / _PHONE_BYTES_PER_SECOND - (trio.current_time() - self.started)

    async def take(self, chunk: bytes) -> None:
        self.pending += chunk
        held = len(self.pending) / 2 / 24_000  # pcm seconds waiting here
        if len(self.pending) < PIECE_BYTES and self.queued() >= LEAD + held:
            return
        await self._hand_on()
        if self.queued() >= LEAD + PIECE_BYTES / 2 / 24_000:
            await trio.sleep(SETTLE)

    async def finish(self) -> None:
        await self._hand_on()
        tail = self.encoder.flush()
        if tail:
            await self._emit(tail)

    async def _hand_on(self) -> None:
        if not self.pending:
            return
        audio = self.encoder.process(bytes(self.pending))
        self.pending.clear()
        if audio:
            await self._emit(audio)

    async def _emit(self, audio: bytes) -> None:
        if self.first_audio is None:
            self.first_audio = self.link.now() - self.requested
            self.started = trio.current_time()
        self.sent += len(audio)
        await self.link.emit(TtsAudio(self.utterance, self.seq, audio))
