"""The phone's audio as Vobiz streams it: its formats, 20 ms framing, and the converters.

Built on :mod:`adapters.media.mulaw` (the codec) and :mod:`adapters.media.resampling`;
everything is numpy/scipy, vectorised, and byte-exact from run to run so call logs
that keep audio digests replay identically. The codec's and the resamplers' names
are offered here too, so the rest of the code needs one import for the phone's audio.
"""

from __future__ import annotations

from adapters.media.mulaw import PHONE_RATE, ULAW_SILENCE, ulaw_decode, ulaw_encode
from adapters.media.resampling import Downsampler, SampleReader, Upsampler, resample

__all__ = [
    "FRAME_BYTES",
    "L16",
    "MULAW",
    "PHONE_RATE",
    "ULAW_SILENCE",
    "Downsampler",
    "Framer",
    "InboundConverter",
    "OutboundConverter",
    "PhoneEncoder",
    "Upsampler",
    "resample",
    "ulaw_decode",
    "ulaw_encode",
]

#: Bytes of one 20 ms frame of 8 kHz mu-law.
FRAME_BYTES = 160


# --- phone-side pipelines ----------------------------------------------------------------------


class PhoneEncoder:
    """24 kHz s16le (e.g. OpenAI ``pcm`` speech) to 8 kHz mu-law, chunk by chunk."""

    def __init__(self) -> None:
        self._down = Downsampler(3)

    def process(self, pcm_s16le: bytes) -> bytes:
        return ulaw_encode(self._down.process(pcm_s16le))

    def flush(self) -> bytes:
        return ulaw_encode(self._down.flush())

    def reset(self) -> None:
        self._down.reset()


class Framer:
    """Cuts a byte stream into whole frames (20 ms = 160 bytes of mu-law), given out in
    pieces of at most ``max_frames`` frames.

    A piece of several frames is one message where the stream allows it (the agent's
    audio to the phone: :mod:`adapters.vobiz.session`); what is ready is never held back
    to fill a piece, only the part of a frame that is not whole yet.
    """

    def __init__(self, frame_bytes: int = FRAME_BYTES, max_frames: int = 1) -> None:
        if frame_bytes < 1 or max_frames < 1:
            raise ValueError("frame_bytes and max_frames must be positive")
        self.frame_bytes = frame_bytes
        self.piece_bytes = frame_bytes * max_frames
        self._carry = b""

    def push(self, data: bytes) -> list[bytes]:
        """Whole frames only; the remainder waits for the next push."""
        data = self._carry + data if self._carry else data
        whole = len(data) - len(data) % self.frame_bytes
        self._carry = data[whole:]
        if whole <= self.piece_bytes:
            return [data[:whole]] if whole else []
        return [
            data[i : min(i + self.piece_bytes, whole)] for i in range(0, whole, self.piece_bytes)
        ]

    def flush(self, pad: bytes = ULAW_SILENCE) -> bytes | None:
        """The last partial frame padded to full length with ``pad`` (one byte), or None."""
        if len(pad) != 1:
            raise ValueError("pad must be a single byte")
        if not self._carry:
            return None
        frame = self._carry + pad * (self.frame_bytes - len(self._carry))
        self._carry = b""
        return frame

    def reset(self) -> None:
        self._carry = b""


MULAW = "audio/x-mulaw"
L16 = "audio/x-l16"


def _check_format(encoding: str, rate: int) -> int:
    """Return the rate factor over 8 kHz, or refuse formats Vobiz does not stream."""
    if encoding == MULAW and rate == PHONE_RATE:
        return 1
    if encoding == L16 and rate in (8000, 16000, 24000):
        return rate // PHONE_RATE
    raise ValueError(f"unsupported audio format {encoding};rate={rate}")


class InboundConverter:
    """The caller's audio as Vobiz sends it (mu-law, or **big-endian** L16) to 8 kHz mu-law."""

    def __init__(self, encoding: str, rate: int) -> None:
        self.encoding = encoding
        self.rate = rate
        factor = _check_format(encoding, rate)
        self._reader = SampleReader("big")
        self._down = Downsampler(factor) if factor > 1 else None

    def to_ulaw8k(self, payload: bytes) -> bytes:
        if self.encoding == MULAW:
            return payload
        samples = self._reader.read(payload)
        if self._down is not None:
            samples = self._down.process_samples(samples)
        return ulaw_encode(samples)

    def flush(self) -> bytes:
        self._reader.reset()
        if self._down is None:
            return b""
        return ulaw_encode(self._down.flush())


class OutboundConverter:
    """8 kHz mu-law to what Vobiz expects back: mu-law, or **little-endian** L16 at the stream rate."""

    def __init__(self, encoding: str, rate: int) -> None:
        self.encoding = encoding
        self.rate = rate
        factor = _check_format(encoding, rate)
        self._up = Upsampler(factor) if factor > 1 else None

    def from_ulaw8k(self, data: bytes) -> bytes:
        if self.encoding == MULAW:
            return data
        samples = ulaw_decode(data)
        if self._up is not None:
            samples = self._up.process(samples)
        return samples.astype("<i2").tobytes()

    def flush(self) -> bytes:
        if self._up is None:
            return b""
        return self._up.flush().astype("<i2").tobytes()

    def reset(self) -> None:
        """Drop held-back samples (after clearAudio the old reply must not leak out)."""
        if self._up is not None:
            self._up.reset()
