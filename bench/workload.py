"""What one call of a load test is: how the fakes answer and what the caller does.

Two workloads. **busy** (the default) is a call whose agent talks most of the
time, as real ones do, because a server's cost is mostly the agent's audio
going out and the caller's coming in:

- replies of about 6 s of audio in four sentences (one speech request each),
  streamed as 24 kHz pcm in 100 ms chunks at 5x real time, 150 ms to the first byte;
- the caller speaks real speech (espeak-ng phrases of 1.9-2.4 s, two voices), pauses
  0.3-2.5 s after each full reply, and barges in 1 s into every second reply;
- between phrases the line carries faint noise (about -60 dBFS), never digital silence.

**light** is the earlier bench's call: short replies in 20 ms chunks, a 300 Hz tone for
the caller, digital silence between lines, one barge-in per call.
"""

from __future__ import annotations

import random
from functools import cache

import attrs
import numpy as np

from adapters.simulator.script import QUIET_BEFORE_SPEAKING, CallerLine, CallerScript

#: The fakes' fixed delays: known constants, subtracted from the server's measured latency.
LLM_FIRST_TOKEN = 0.25
LLM_TOKEN_DELAY = 0.02
TTS_FIRST_BYTE = 0.15
ENDPOINTING_MS = 300

#: What the fake recognizer says the caller said, whatever the audio.
CALLER_TEXT = "I would like a table for four people tonight"
REPLY = (
    "Certainly, we have tables at six, seven and eight. "
    "The terrace is open too. Which time would you like?"
)
GREETING = "Hello, Roma restaurant."

#: The fake speech's pace: 1,440 samples of 24 kHz a character is 16.7 characters a
#: second, an ordinary speaking rate; the reply above is then 6.1 s of audio.
BUSY_SAMPLES_PER_CHAR = 1440

#: The busy caller's lines (each is 1.9-2.4 s in the voice it is given).
PHRASES = (
    ("en-us+f2", "I would like a table for four people tonight"),
    ("en-us+m3", "Can we sit outside on the terrace this evening"),
    ("en-us+f2", "Do you have anything vegetarian on the menu"),
    ("en-us+m3", "Is there somewhere to park near the restaurant"),
    ("en-us+m3", "Could you please repeat the last part again"),
    ("en", "We will be there at about eight fifteen"),
)
#: The line's noise floor: RMS in 16-bit units (30 is about -61 dBFS). Neither the local
#: VAD nor the fake recognizer takes it for speech.
NOISE_RMS = 30.0


@attrs.frozen
class Workload:
    name: str
    #: The fake speech's pcm: samples per character, body chunk sizes (bytes), and the
    #: time between chunks.
    samples_per_char: int
    chunk_sizes: tuple[int, ...]
    chunk_delay: float
    #: How long the caller waits after the agent's audio before a line that waits for it.
    quiet: float
    default_seconds: float

    def speak(self, text: str) -> bytes:
        """The caller's audio for ``text``, 8 kHz mu-law."""
        return espeak_line(text) if self.name == "busy" else tone(text)

    def background(self) -> bytes:
        """What the caller's line carries between phrases."""
        return noise(10.0) if self.name == "busy" else b"\xff" * 160

    def scripts(self, n: int, seconds: float) -> list[CallerScript]:
        """Each call's lines (the busy caller's pauses differ from call to call)."""
        if self.name == "light":
            return [light_script(seconds)] * n
        return [busy_script(i, seconds) for i in range(n)]


BUSY = Workload(
    name="busy",
    samples_per_char=BUSY_SAMPLES_PER_CHAR,
    chunk_sizes=(4800,),  # 100 ms of 24 kHz 16-bit
    chunk_delay=0.02,  # 5x real time
    # The pause drawn per line (0-2.2 s) comes on top: 0.3-2.5 s after the agent's audio.
    quiet=0.3,
    default_seconds=40.0,
)
LIGHT = Workload(
    name="light",
    samples_per_char=480,
    chunk_sizes=(4801, 2048, 333, 9600),
    chunk_delay=0.02,
    quiet=QUIET_BEFORE_SPEAKING,
    default_seconds=30.0,
)
WORKLOADS = {w.name: w for w in (BUSY, LIGHT)}


def busy_script(i: int, seconds: float) -> CallerScript:
    """Call ``i``: a line after each full reply, and a barge-in 1 s into every second reply."""
    rng = random.Random(1000 + i)
    lines = []
    for k in range(60):  # more than any call lasts
        _, text = PHRASES[(i + k) % len(PHRASES)]
        if k % 2 == 0:
            lines.append(CallerLine(text, pause=rng.uniform(0.0, 2.2)))
        else:
            lines.append(CallerLine(text, wait_for_agent=False, barge_in_after=1.0, pause=0))
    return CallerScript(tuple(lines), hang_up_after=seconds)


def light_script(seconds: float) -> CallerScript:
    """Two turns, a barge-in half a second into the third reply, one more turn, then hang up."""
    return CallerScript(
        lines=(
            CallerLine(CALLER_TEXT),
            CallerLine(CALLER_TEXT),
            CallerLine(CALLER_TEXT, wait_for_agent=False, barge_in_after=0.5, pause=0),
            CallerLine(CALLER_TEXT),
        ),
        hang_up_after=seconds,
    )


@cache
def tone(text: str) -> bytes:
    """The light caller's speech: a tone the fake recognizer hears, longer for longer lines."""
    from adapters.media.audio import ulaw_encode

    seconds = 0.6 + 0.03 * len(text)
    t = np.arange(int(8000 * seconds)) / 8000
    return ulaw_encode((np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16))


@cache
def espeak_line(text: str) -> bytes:
    """A phrase in its voice at 8 kHz, over the line's noise floor, as mu-law."""
    from adapters.media.audio import PHONE_RATE, resample, ulaw_encode
    from adapters.offline.espeak import Espeak

    voice = next(v for v, t in PHRASES if t == text)
    pcm, rate = Espeak(voice=voice).synthesize(text)
    speech = resample(pcm, rate, PHONE_RATE).astype(np.float64)
    floor = _noise_samples(len(speech), seed=len(text))
    return ulaw_encode(np.clip(np.rint(speech + floor), -32768, 32767).astype(np.int16))


@cache
def noise(seconds: float) -> bytes:
    from adapters.media.audio import ulaw_encode

    samples = _noise_samples(round(8000 * seconds), seed=7)
    return ulaw_encode(np.clip(np.rint(samples), -32768, 32767).astype(np.int16))


def _noise_samples(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, NOISE_RMS, n)
