"""Both sides of a call as one stereo WAV beside its log (``RECORD_AUDIO=true``).

The call log keeps the agent's audio when recording is on, but never the
caller's: the 50 frames a second never go through the engine. The inspector's
waveform needs both, laid on the call's own clock, so the runner hands each
caller frame and each agent frame here as it passes.

The server cannot hear the phone's speaker, so the agent's channel is laid
the way a phone plays it: each frame starts when it was sent or when the one
before it finished, whichever is later, and a ``clearAudio`` cuts what had
not been played by then. Caller frames follow one another as received; a
gap in the stream (a reconnect) shows as silence.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from adapters.media.audio import PHONE_RATE, ulaw_decode
from adapters.media.wav import write_stereo_wav

#: Mu-law silence, used to fill the gaps between the frames.
_SILENCE = 0xFF


class Recording:
    """Two mu-law tracks at 8 kHz, indexed by call time."""

    def __init__(self) -> None:
        self._caller = bytearray()
        self._agent = bytearray()

    @staticmethod
    def _place(track: bytearray, at: int, audio: bytes) -> None:
        if at > len(track):
            track.extend(bytes([_SILENCE]) * (at - len(track)))
        track[at : at + len(audio)] = audio

    def caller(self, audio: bytes, now: float) -> None:
        """A caller frame received at ``now`` (it was spoken just before)."""
        at = max(len(self._caller), round(now * PHONE_RATE) - len(audio))
        self._place(self._caller, at, audio)

    def agent(self, audio: bytes, now: float) -> None:
        """An agent frame sent at ``now``: it plays after what is queued before it."""
        at = max(len(self._agent), round(now * PHONE_RATE))
        self._place(self._agent, at, audio)

    def clear(self, now: float) -> None:
        """The phone drops whatever it had not played by ``now``."""
        del self._agent[max(0, round(now * PHONE_RATE)) :]

    def stereo(self) -> np.ndarray:
        """(n, 2) int16: the caller on the left, the agent on the right."""
        length = max(len(self._caller), len(self._agent))
        out = np.zeros((length, 2), dtype=np.int16)
        if self._caller:
            out[: len(self._caller), 0] = ulaw_decode(bytes(self._caller))
        if self._agent:
            out[: len(self._agent), 1] = ulaw_decode(bytes(self._agent))
        return out

    def write_wav(self, path: Path, end: float) -> None:
        """The recording up to the end of the call at ``end``: the phone plays nothing after it."""
        self.clear(end)
        write_stereo_wav(path, self.stereo())
