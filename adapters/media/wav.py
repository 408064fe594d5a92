"""A call as a stereo WAV: the caller on the left, the agent on the right.

The inspector draws and plays these files, so every writer lays them out the
same way: 16-bit little-endian samples at the phone's rate.
"""

from __future__ import annotations

import wave
from pathlib import Path

import numpy as np

from adapters.media.mulaw import PHONE_RATE


def write_stereo_wav(path: str | Path, samples: np.ndarray, rate: int = PHONE_RATE) -> None:
    """Write ``samples``, (n, 2) int16 with the caller in column 0, to ``path``."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(2)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(samples.astype("<i2").tobytes())
