"""Audio as the engine sees it: an opaque value with a length.

The engine never looks inside audio; it forwards it and needs only its
length (to know how long the caller will be listening). Call logs keep
audio as length + sha256 unless recording is on, so a replayed log hands
the engine an :class:`AudioDigest` in place of the bytes: it has the same
length and the same logged form, which is all replay compares.
"""

from __future__ import annotations

import hashlib

import attrs

#: The engine's audio format: G.711 mu-law, 8 kHz, mono, one byte a sample.
BYTES_PER_SECOND = 8000


@attrs.frozen
class AudioDigest:
    """Stands in for audio bytes that a log recorded only by digest."""

    length: int
    sha256: str

    def __len__(self) -> int:
        return self.length


Audio = bytes | AudioDigest


def digest(audio: Audio) -> AudioDigest:
    """The logged identity of a piece of audio."""
    if isinstance(audio, AudioDigest):
        return audio
    return AudioDigest(len(audio), hashlib.sha256(audio).hexdigest())


def duration(audio: Audio) -> float:
    """Seconds of playback."""
    return len(audio) / BYTES_PER_SECOND
