"""Audio conversion between providers' PCM and the phone's 8 kHz G.711 mu-law.

Everything here is numpy/scipy, vectorised, and byte-exact from run to run so
call logs that keep audio digests replay identically.

**mu-law route.** There are two textbook ways to encode 16-bit PCM. The
14-bit route (``audioop``, ITU g711.c) shifts ``x >> 2`` first; the 16-bit
route (Sun g711.c, used here) clips at 32 635 and adds a bias of 0x84. They
disagree on 381 of the 65 536 inputs (negative ones just past a step, where
``>> 2`` rounds the magnitude up); decoders agree exactly. We pin the 16-bit
route so golden digests never depend on which library is installed.

**Resampling.** Streaming FIR filters that are *exact*: taps are rounded to
multiples of 2**-32, so with int16 input every product and partial sum is a
float64 with no rounding at all. The result therefore does not depend on the
order of the sums, hence not on chunk boundaries or on the BLAS in use:
feeding a stream in any chunks gives the same bytes as feeding it whole.
Outputs are time-aligned with the input (the filter's group delay is
compensated), so N input samples become exactly N/factor (or N*factor)
output samples once flushed; the price is a latency of half the filter.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import firwin, resample_poly

#: Bytes of one 20 ms frame of 8 kHz mu-law.
FRAME_BYTES = 160
#: A mu-law code for silence (+0).
ULAW_SILENCE = b"\xff"
#: The phone's sample rate.
PHONE_RATE = 8000

_ULAW_BIAS = 0x84
_ULAW_CLIP = 32635
_INT16_MIN = -32768
_INT16_MAX = 32767


# --- G.711 mu-law ------------------------------------------------------------------------------


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


# --- helpers -----------------------------------------------------------------------------------


def _to_int16(values: np.ndarray) -> np.ndarray:
    """Round half to even, then clip: one rule everywhere, so outputs are reproducible."""
    return np.clip(np.rint(values), _INT16_MIN, _INT16_MAX).astype(np.int16)


def _exact_taps(taps: np.ndarray) -> np.ndarray:
    """Snap taps to multiples of 2**-32 so int16 x taps sums are exact in float64.

    |x| <= 2**15 and |tap| < 1 give products below 2**47 units of 2**-32, and
    sums of ~100 of them stay far below 2**53: no rounding anywhere. The
    change to the response is below 1e-9, far under anything audible.
    """
    return np.round(taps * 2.0**32) / 2.0**32


def _phone_lowpass(factor: int) -> np.ndarray:
    """Anti-alias / anti-image low-pass at 3.6 kHz for a rate of 8 kHz x factor.

    32 taps per phase keeps the transition band ~1.3 kHz wide at every factor
    (95 taps at 24 kHz, 63 at 16 kHz): 4 kHz is about -27 dB down and 5 kHz
    and above more than 70 dB down.
    """
    return firwin(32 * factor - 1, 3600, fs=PHONE_RATE * factor, window=("kaiser", 8))


class _SampleReader:
    """Turns byte chunks into int16 samples, carrying a stray odd byte to the next chunk."""

    def __init__(self, byteorder: str) -> None:
        self._dtype = np.dtype(np.int16).newbyteorder("<" if byteorder == "little" else ">")
        self._stray = b""

    def read(self, data: bytes) -> np.ndarray:
        data = self._stray + data
        whole = len(data) & ~1
        self._stray = data[whole:]
        return np.frombuffer(data[:whole], dtype=self._dtype).astype(np.int16)

    def reset(self) -> None:
        # Half a sample cannot be played; at the end of a stream it is dropped.
        self._stray = b""


# --- streaming resamplers ----------------------------------------------------------------------


class Downsampler:
    """Stateful low-pass + decimation by ``factor`` (24 kHz -> 8 kHz by default).

    Output sample k is the filtered input at 3k (delay compensated); it can
    be emitted once input 3k + 47 has arrived, so the added latency is 47
    input samples (1.96 ms at 24 kHz; 31 samples, 1.94 ms, at 16 kHz).
    """

    def __init__(self, factor: int = 3) -> None:
        if factor < 2:
            raise ValueError("factor must be at least 2")
        self.factor = factor
        self.taps = _exact_taps(_phone_lowpass(factor))
        self._reversed_taps = np.ascontiguousarray(self.taps[::-1])
        self.delay = (len(self.taps) - 1) // 2  # input samples of latency
        self._reader = _SampleReader("little")
        self.reset()

    def reset(self) -> None:
        """Forget everything held back, e.g. when playback is cleared."""
        self._reader.reset()
        # History window for the next output: `delay` samples before its centre.
        self._history = np.zeros(self.delay, dtype=np.float64)

    def process(self, pcm_s16le: bytes) -> np.ndarray:
        """Feed little-endian int16 bytes of any length; get the int16 samples now ready."""
        return self.process_samples(self._reader.read(pcm_s16le))

    def process_samples(self, samples: np.ndarray) -> np.ndarray:
        """Same as :meth:`process` for samples already decoded (any byte order upstream)."""
        buffer = np.concatenate((self._history, np.asarray(samples, dtype=np.float64)))
        width = len(self._reversed_taps)
        if len(buffer) < width:
            self._history = buffer
            return np.zeros(0, dtype=np.int16)
        windows = sliding_window_view(buffer, width)[:: self.factor]
        self._history = buffer[len(windows) * self.factor :]
        return _to_int16(np.ascontiguousarray(windows) @ self._reversed_taps)

    def flush(self) -> np.ndarray:
        """End of stream: the held-back outputs (silence assumed after the end), then reset."""
        out = self.process_samples(np.zeros(self.delay, dtype=np.float64))
        self.reset()
        return out


class Upsampler:
    """Stateful interpolation by ``factor`` from 8 kHz (to 16 or 24 kHz) with a 3.6 kHz low-pass.

    Delay compensated like :class:`Downsampler`: N input samples become
    exactly N x factor outputs once flushed; latency is ~2 ms.
    """

    def __init__(self, factor: int) -> None:
        if factor < 2:
            raise ValueError("factor must be at least 2")
        self.factor = factor
        self.taps = taps = _exact_taps(_phone_lowpass(factor) * factor)  # x factor: stuffing gain
        delay = (len(taps) - 1) // 2  # in output samples
        # Output L*q + r is sum_j taps[j] * zero_stuffed[L*q + r + delay - j]; the inputs it
        # touches lie in x[q - before .. q + after]. One (window, factor) matrix holds it all.
        self._before = delay // factor
        self._after = (factor - 1 + delay) // factor
        width = self._before + self._after + 1
        position = np.arange(width)[:, None]
        phase = np.arange(factor)[None, :]
        tap_index = phase + delay + factor * self._before - factor * position
        valid = (tap_index >= 0) & (tap_index < len(taps))
        self._matrix = np.where(valid, taps[np.clip(tap_index, 0, len(taps) - 1)], 0.0)
        self.delay = self._after  # input samples held back
        self.reset()

    def reset(self) -> None:
        """Forget everything held back, e.g. when playback is cleared."""
        self._history = np.zeros(self._before, dtype=np.float64)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """Feed 8 kHz int16 samples; get the int16 samples now ready at the higher rate."""
        buffer = np.concatenate((self._history, np.asarray(samples, dtype=np.float64)))
        width = self._matrix.shape[0]
        count = len(buffer) - width + 1
        if count <= 0:
            self._history = buffer
            return np.zeros(0, dtype=np.int16)
        windows = sliding_window_view(buffer, width)[:count]
        self._history = buffer[count:]
        return _to_int16(np.ascontiguousarray(windows) @ self._matrix).ravel()

    def flush(self) -> np.ndarray:
        """End of stream: the held-back outputs (silence assumed after the end), then reset."""
        out = self.process(np.zeros(self._after, dtype=np.float64))
        self.reset()
        return out


def resample(pcm: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """Whole-buffer resampling (e.g. a synthesised sentence at 22 050 Hz to 8 kHz).

    For audio that arrives all at once the stateless ``resample_poly`` is the
    simplest correct tool; streams use :class:`Downsampler`/:class:`Upsampler`.
    """
    samples = np.asarray(pcm)
    if from_rate == to_rate:
        return _to_int16(samples)
    g = math.gcd(from_rate, to_rate)
    return _to_int16(resample_poly(samples.astype(np.float64), to_rate // g, from_rate // g))


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
    """Cuts a byte stream into fixed frames (20 ms = 160 bytes of mu-law) so that
    a clearAudio never has more than one frame to chase."""

    def __init__(self, frame_bytes: int = FRAME_BYTES) -> None:
        if frame_bytes < 1:
            raise ValueError("frame_bytes must be positive")
        self.frame_bytes = frame_bytes
        self._carry = b""

    def push(self, data: bytes) -> list[bytes]:
        """Whole frames only; the remainder waits for the next push."""
        data = self._carry + data
        whole = len(data) - len(data) % self.frame_bytes
        self._carry = data[whole:]
        return [data[i : i + self.frame_bytes] for i in range(0, whole, self.frame_bytes)]

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
        self._reader = _SampleReader("big")
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
