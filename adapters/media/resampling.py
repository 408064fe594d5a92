"""Streaming resamplers between the phone's 8 kHz and the providers' 16 and 24 kHz.

Streaming FIR filters that are *exact*: taps are rounded to multiples of
2**-32, so with int16 input every product and partial sum is a float64 with no
rounding at all. The result therefore does not depend on the order of the
sums, hence not on chunk boundaries or on the BLAS in use: feeding a stream in
any chunks gives the same bytes as feeding it whole. Outputs are time-aligned
with the input (the filter's group delay is compensated), so N input samples
become exactly N/factor (or N*factor) output samples once flushed; the price
is a latency of half the filter.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from scipy.signal import firwin, resample_poly

from adapters.media.mulaw import PHONE_RATE

_INT16_MIN = -32768
_INT16_MAX = 32767


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


class SampleReader:
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


# --- the resamplers ----------------------------------------------------------------------------


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
        self._reader = SampleReader("little")
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
