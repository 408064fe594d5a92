"""Offline speech recognition: pocketsphinx 5 with the English model its wheel ships.

No account and no download: the acoustic model, dictionary and a general
language model all come with the ``pocketsphinx`` wheel. Out of the box its
accuracy on 8 kHz phone audio is poor (a general model guessing among 130 000
words), so a caller of :class:`SphinxRecognizer` can pass *hints*: the
phrases it expects (say, the answers a booking script can handle). They
become a JSGF grammar of those phrases, and recognition is restricted to
one of them, which turns "rhode island" back into "tomorrow at seven".
The price: anything said outside the hints is forced onto the nearest hint.
``docs/offline.md`` has the measurements behind this choice and behind the
decoder settings that fit it to 8 kHz telephone audio.

:class:`SphinxSTT` wraps it as a :class:`~adapters.providers.interfaces.SpeechToText`:
a local VAD (:mod:`adapters.media.vad`) cuts utterances and the recognizer
decodes each one.
"""

from __future__ import annotations

import collections
import functools
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

import numpy as np
import trio
from pocketsphinx import Decoder

from adapters.media.audio import FRAME_BYTES, Framer, Upsampler, ulaw_decode
from adapters.media.vad import (
    FRAME_SECONDS,
    VadSegmenter,
    VoiceStarted,
    VoiceStopped,
    make_classifier,
)
from adapters.providers.interfaces import AudioSource, ProviderLink
from engine.events import CallerSpeechStarted, CallerSpeechStopped, Transcript

_T = TypeVar("_T")

#: Cepstral mean that live normalisation starts each utterance from. The model's own
#: start (40,3,-1,0...) is a wideband mean; 8 kHz audio lacks the top band, which
#: shows mostly in c1/c2. This is where the live mean settled after ~60 phone-path
#: utterances (espeak voices through 8 kHz mu-law); starting every utterance here
#: made results independent of call history and lifted keyword recall (docs/offline.md).
PHONE_CMN = "55,32,-37.7,51.5,-30.1,-6.1,15,-34.6,9,-13.8,-0.3,2.7,-13.1"

#: Decoder settings for a grammar of hints, chosen with ``bench/offline_asr.py``.
#: ``bestpath`` off: the lattice rescoring that follows the grammar search is free
#: to end anywhere, so it returned fragments ("tomorrow at eight at") and empty
#: results where the grammar search itself had a whole phrase. ``topn`` 16 instead
#: of 4 scores more Gaussians per frame: fewer near-misses on band-limited audio.
#: ``frate`` above the model's 100 frames a second stretches time for the model,
#: whose phones last three frames at least: quick speech (espeak's) fits it better.
GRAMMAR_OPTIONS: dict[str, object] = {"bestpath": False, "topn": 16, "frate": 120}

#: Phones whose energy lies mostly above the phone band's ~3.6 kHz top. At a
#: word's edge an 8 kHz line leaves too little of them to hear: "seven" arrives
#: as "even" and was taken for "eight". Hint words get pronunciations without them.
BAND_LIMITED = frozenset({"S", "Z", "F", "TH", "HH"})

_NOT_A_WORD = re.compile(r"[^a-z' ]+")


def _words(phrase: str) -> list[str]:
    return _NOT_A_WORD.sub(" ", phrase.lower()).split()


def phone_line_variants(phones: Sequence[str]) -> list[str]:
    """A word as a phone line may deliver it: without a band-limited first or last phone.

    "six" (S IH K S) gives "S IH K", "IH K S" and "IH K"; a variant keeps at
    least two phones, so a short word cannot shrink to a single vowel.
    """
    end = len(phones)
    first = 1 if phones[0] in BAND_LIMITED else 0
    last = end - 1 if phones[-1] in BAND_LIMITED else end
    variants = []
    for start in dict.fromkeys((0, first)):
        for stop in dict.fromkeys((end, last)):
            if (start, stop) != (0, end) and stop - start >= 2:
                variants.append(" ".join(phones[start:stop]))
    return variants


class SphinxRecognizer:
    """One utterance at a time: ``start``, ``feed``..., ``finish``. Not thread-safe.

    Audio is the phone's 8 kHz mu-law; the model is trained on 16 kHz, so it
    is upsampled (the missing top band is a large part of the accuracy lost
    on the phone path). ``dither`` (off by default) adds a little seeded
    noise: it helped on clips cut tight around the words but hurt when
    silence surrounds them, as it does behind a VAD. ``phone_cmn`` starts
    every utterance from :data:`PHONE_CMN`.

    With hints, ``grammar_options``, ``phrases`` (per utterance: 1, or 2 for
    one optionally followed by another) and ``phone_line`` (the variants of
    :func:`phone_line_variants`) are the choices ``bench/offline_asr.py
    --compare`` measures; the defaults are the ones it picked.
    """

    def __init__(
        self,
        hints: Sequence[str] = (),
        dither: bool = False,
        phone_cmn: bool = True,
        *,
        grammar_options: Mapping[str, object] = GRAMMAR_OPTIONS,
        phrases: int = 1,
        phone_line: bool = True,
    ) -> None:
        options: dict[str, object] = {"loglevel": "FATAL"}
        if dither:
            options.update(dither=True, seed=1)
        expected = [words for words in map(_words, hints) if words]
        if not expected:
            self.decoder = Decoder(**options)
            self.vocabulary: frozenset[str] = frozenset()
        else:
            self.decoder = Decoder(lm=None, **grammar_options, **options)
            self.vocabulary = self._use_grammar(expected, phrases, phone_line)
        self._upsampler = Upsampler(2)
        self._initial_cmn = PHONE_CMN if phone_cmn else None
        self._active = False

    def _use_grammar(
        self, expected: list[list[str]], phrases: int, phone_line: bool
    ) -> frozenset[str]:
        known = [[w for w in words if self.decoder.lookup_word(w)] for words in expected]
        alternatives = sorted({" ".join(words) for words in known if words})
        if not alternatives:
            raise ValueError("none of the hint words is in the pronouncing dictionary")
        vocabulary = frozenset(w for phrase in alternatives for w in phrase.split())
        if phone_line:
            for word in sorted(vocabulary):
                self._add_phone_line_variants(word)
        # One phrase per utterance by default. Allowing a second ("sorry" + "for four
        # people") measured worse: whole phrases got inserted ("hello sorry"), and
        # decoding cost 1.7 times as much (docs/offline.md).
        body = " | ".join(f"( {phrase} )" for phrase in alternatives)
        rule = " ".join([f"( {body} )", *[f"[ {body} ]"] * (phrases - 1)])
        grammar = f"#JSGF V1.0;\ngrammar hints;\npublic <utterance> = {rule} ;\n"
        self.decoder.add_jsgf_string("hints", grammar)
        self.decoder.activate_search("hints")
        return vocabulary

    def _add_phone_line_variants(self, word: str) -> None:
        """Give ``word`` the extra pronunciations of :func:`phone_line_variants`.

        They are numbered after the dictionary's own alternatives ("word(2)"...),
        which is how pocketsphinx links them to the word: the grammar search
        tries every pronunciation and reports the plain word.
        """
        phones = self.decoder.lookup_word(word).split()
        number = 2
        while self.decoder.lookup_word(f"{word}({number})"):
            number += 1
        for variant in phone_line_variants(phones):
            self.decoder.add_word(f"{word}({number})", variant, False)
            number += 1

    def start(self) -> None:
        """Begin an utterance (ending any unfinished one)."""
        if self._active:
            self.decoder.end_utt()
        self._upsampler.reset()
        # Each utterance starts from the model's cepstral mean, so a result never
        # depends on what was said before (or on a long silence before it).
        if self._initial_cmn is not None:
            self.decoder.set_cmn(self._initial_cmn)
        self.decoder.start_utt()
        self._active = True

    def feed(self, ulaw8k: bytes) -> None:
        """Decode more of the utterance: any length of 8 kHz mu-law."""
        if not self._active:
            self.start()
        self._process(self._upsampler.process(ulaw_decode(ulaw8k)))

    def _process(self, pcm16k: np.ndarray) -> None:
        if len(pcm16k):
            self.decoder.process_raw(pcm16k.astype("<i2").tobytes(), False, False)

    def partial(self) -> str:
        """The best guess so far; may change as more audio arrives."""
        hypothesis = self.decoder.hyp()
        return hypothesis.hypstr if hypothesis else ""

    def finish(self) -> str:
        """End the utterance; its final text ("" if nothing was recognized)."""
        if not self._active:
            return ""
        self._process(self._upsampler.flush())
        self.decoder.end_utt()
        self._active = False
        return self.partial()


class SphinxSTT:
    """The offline :class:`~adapters.providers.interfaces.SpeechToText`: local VAD plus pocketsphinx.

    At onset it emits ``CallerSpeechStarted`` dated to the first speech frame; at
    offset ``CallerSpeechStopped`` and the utterance's final ``Transcript``;
    in between, an interim ``Transcript`` about every ``interim_s`` when the
    guess changed. The frames just before onset (``preroll_s``) are decoded
    too, so a word's soft start is not cut.

    Decoding costs a share of each 20 ms frame, more on a few frames (see
    ``docs/offline.md``), too much to do on the call's event loop, so by
    default it runs in a worker thread. ``threaded=False`` decodes inline: for
    tests under a mock clock, where a thread's real time would be invisible
    to the clock. ``recognizer`` passes settings on to each call's
    :class:`SphinxRecognizer`.
    """

    def __init__(
        self,
        hints: Sequence[str] = (),
        *,
        vad_mode: int = 2,
        vad: str = "webrtc",
        onset_s: float = 0.1,
        offset_s: float = 0.5,
        preroll_s: float = 0.3,
        interim_s: float = 0.5,
        threaded: bool = True,
        recognizer: Mapping[str, Any] | None = None,
    ) -> None:
        self.hints = tuple(hints)
        self.recognizer: dict[str, Any] = dict(recognizer or {})
        self.vad_mode = vad_mode
        self.vad = vad
        self.onset_s = onset_s
        self.offset_s = offset_s
        self.preroll_frames = max(
            1, round(preroll_s / FRAME_SECONDS), round(onset_s / FRAME_SECONDS)
        )
        self.interim_s = interim_s
        self.threaded = threaded

    async def _call(self, fn: Callable[..., _T], *args: object) -> _T:
        if self.threaded:
            # Not abandoned on cancel: the decoder must never be used by two threads at once.
            return await trio.to_thread.run_sync(fn, *args)
        return fn(*args)

    async def run(self, audio: AudioSource, link: ProviderLink) -> None:
        """Recognize utterances until ``audio`` closes or the task is cancelled."""
        recognizer = await self._call(
            functools.partial(SphinxRecognizer, self.hints, **self.recognizer)
        )
        classifier = make_classifier(self.vad, self.vad_mode)
        segmenter = VadSegmenter(self.onset_s, self.offset_s)
        framer = Framer(FRAME_BYTES)
        recent: collections.deque[bytes] = collections.deque(maxlen=self.preroll_frames)
        last_interim_at = 0.0
        last_interim = ""
        last_frame_at = 0.0

        async for chunk in audio:
            frames = framer.push(chunk)
            if not frames:
                continue
            now = link.now()
            pending: list[bytes] = []
            for index, frame in enumerate(frames):
                # A chunk of several frames arrived at once: its last frame is "now".
                at = now - (len(frames) - 1 - index) * FRAME_SECONDS
                last_frame_at = at
                event = segmenter.push(classifier.is_speech(frame), at)
                if isinstance(event, VoiceStarted):
                    await link.emit(CallerSpeechStarted(at=event.at, source="vad"))
                    await self._call(recognizer.start)
                    pending = [*recent, frame]
                    recent.clear()
                    last_interim_at, last_interim = now, ""
                elif isinstance(event, VoiceStopped):
                    pending.append(frame)
                    await self._call(recognizer.feed, b"".join(pending))
                    pending = []
                    await self._end_utterance(recognizer, event.at, link)
                elif segmenter.in_speech:
                    pending.append(frame)
                else:
                    recent.append(frame)
            if pending:
                await self._call(recognizer.feed, b"".join(pending))
            if segmenter.in_speech and now - last_interim_at >= self.interim_s:
                last_interim_at = now
                guess = await self._call(recognizer.partial)
                if guess and guess != last_interim:
                    last_interim = guess
                    await link.emit(Transcript(guess, is_final=False))

        if segmenter.in_speech:  # the audio ended mid-utterance
            await self._end_utterance(recognizer, last_frame_at + FRAME_SECONDS, link)

    async def _end_utterance(
        self, recognizer: SphinxRecognizer, at: float, link: ProviderLink
    ) -> None:
        await link.emit(CallerSpeechStopped(at=at, source="vad"))
        text = await self._call(recognizer.finish)
        # Even with no words: the engine learns the sound was not speech (it may resume).
        await link.emit(Transcript(text or "", is_final=True, speech_final=True))
