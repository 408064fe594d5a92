"""G.711 mu-law, the phone's encoding: 8 kHz, one byte a sample.

There are two textbook ways to encode 16-bit PCM. The 14-bit route
(``audioop``, ITU g711.c) shifts ``x >> 2`` first; the 16-bit route (Sun
g711.c, used here) clips at 32 635 and adds a bias of 0x84. They disagree on
381 of the 65 536 inputs (negative ones just past a step, where ``>> 2``
rounds the magnitude up); decoders agree exactly. We pin the 16-bit route so
golden digests never depend on which library is installed.
"""

from __future__ import annotations

import numpy as np

#: The phone's sample rate.
PHONE_RATE = 8000
#: A mu-law code for silence (+0).
ULAW_SILENCE = b"\xff"

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635


def _build_encode_table() -> np.ndarray:
    x = np.arange(65536, dtype=np.uint16).view(np.int16).astype(np.int32)
    negative = x < 0
    magnitude = np.minimum(np.abs(x), _ULAW_CLIP) + _ULAW_BIAS
    exponent = np.frexp(magnitude.astype(np.float64))[1] - 8  # floor(log2 m) - 7
    mantissa = (magnitude >> (exponent + 3)) & 0x0F
    code = (negative.astype(np.int32) << 7) | (exponent << 4) | mantissa
    return (~code & 0xFF).astype(np.uint8)


def _build_decode_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    exponent = (u >> 4) & 0x07
    mantissa = u & 0x0F
    magnitude = (((mantissa << 3) + _ULAW_BIAS) << exponent) - _ULAW_BIAS
    return np.where(u & 0x80, -magnitude, magnitude).astype(np.int16)


_ENCODE = _build_encode_table()
_DECODE = _build_decode_table()


def ulaw_encode(pcm: np.ndarray) -> bytes:
    """Encode int16 samples to mu-law (16-bit route, see the module doc).

    Only int16 is accepted: silently casting floats or wider ints would wrap
    loud samples instead of clipping them.
    """
    samples = np.asarray(pcm)
    if samples.dtype != np.int16:
        raise TypeError(f"ulaw_encode needs int16 samples, got {samples.dtype}")
    return _ENCODE.take(samples.view(np.uint16)).tobytes()


def ulaw_decode(data: bytes) -> np.ndarray:
    """Decode mu-law to int16. Code 0x7F (negative zero) decodes to 0, so
    re-encoding it gives 0xFF: the one code that does not round-trip."""
    return _DECODE.take(np.frombuffer(data, dtype=np.uint8))
