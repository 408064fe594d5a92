"""What a simulated call is made of: the caller's script, and the result as the phone saw it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import attrs
import numpy as np

from adapters.media.audio import ulaw_decode
from adapters.media.wav import write_stereo_wav

RATE = 8000
FRAME_SECONDS = 0.02
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES

#: How long the agent must have been quiet before a ``wait_for_agent`` line starts.
QUIET_BEFORE_SPEAKING = 0.8

#: playAudio arriving this soon after a clearAudio, while the caller is still
#: talking, is taken to be the tail of the reply that was interrupted.
STALE_WINDOW = 0.15

#: Default caller voice: not the agent's "en-us", so the two are told apart by ear.
CALLER_VOICE = "en-us+f2"

#: How often the script re-checks the agent's state while it waits.
POLL = 0.02


@attrs.frozen
class CallerLine:
    """One thing the caller says, and when."""

    text: str
    wait_for_agent: bool = True
    barge_in_after: float | None = None
    pause: float = 0.6
    dtmf: str = ""  # keys pressed after speaking (or instead, when ``text`` is empty)


@attrs.frozen
class CallerScript:
    lines: tuple[CallerLine, ...]
    hang_up_after: float = 60.0
    #: Drop the media socket at this call time, as a network fault would; Vobiz then
    #: reconnects after ``reconnect_after`` seconds with a fresh ``start`` (when the
    #: answer's ``maxRetries`` allows it), the way its stream retries do.
    drop_stream_at: float | None = None
    reconnect_after: float = 0.5


@attrs.frozen
class TranscriptEntry:
    """``t`` is seconds since the call's media started; ``who`` is caller, agent or clear."""

    t: float
    who: str
    what: str


#: Answers "which sentence does checkpoint ``name`` of call ``call_id`` close?", or None.
AgentText = Callable[[str, str], "str | None"]


@attrs.define
class PlayedSentence:
    """One agent sentence as the phone plays it: the audio between two checkpoints."""

    start: float
    end: float
    text: str | None = None


def heard_part(text: str, fraction: float) -> str:
    """The words of ``text`` said in the first ``fraction`` of its audio, at an even pace.

    The phone knows only how much audio played; spreading the characters
    evenly over it is close enough to show where a barge-in cut in.
    """
    budget = fraction * len(text)
    said: list[str] = []
    end = -1  # where the last word counted ends, less the space before the next
    for word in text.split():
        end += 1 + len(word)
        if end > budget:
            break
        said.append(word)
    return " ".join(said)


@attrs.frozen
class Turn:
    """One caller line as it happened, with the latencies the caller felt.

    ``voice_to_voice``: end of the caller's audio → first agent audio received.
    ``barge_in_to_clear``: first frame of a barge-in line → clearAudio received.
    """

    text: str
    started: float
    ended: float
    barge_in: bool
    voice_to_voice: float | None
    barge_in_to_clear: float | None


@attrs.frozen
class SimulationResult:
    """What the phone saw; times are seconds since the call's media started.

    ``stale_audio_after_clear`` counts playAudio frames that arrived within
    :data:`STALE_WINDOW` (150 ms) after a clearAudio while the caller was still
    sending the utterance that interrupted: a server that flushes its pipeline
    properly sends nothing then, since its new reply cannot exist before the
    caller has finished. It is a heuristic: the wire does not say which reply
    a frame belongs to.
    """

    call_id: str
    duration: float
    stopped_by_agent: bool
    transcript: tuple[TranscriptEntry, ...]
    turns: tuple[Turn, ...]
    stale_audio_after_clear: int
    played_checkpoints: tuple[tuple[float, str], ...]
    cleared: int
    caller_audio: bytes = attrs.field(repr=False)
    agent_segments: tuple[tuple[float, bytes], ...] = attrs.field(repr=False)
    #: What Vobiz would have refused, in arrival order (strict mode raises at the first).
    violations: tuple[str, ...] = ()
    #: Media sockets opened for the call (1 + reconnects).
    sockets: int = 1

    def stereo_samples(self) -> np.ndarray:
        """(n, 2) int16: caller left, agent right, each sample at its scheduled time."""
        caller = ulaw_decode(self.caller_audio) if self.caller_audio else np.zeros(0, np.int16)
        ends = [round(start * RATE) + len(audio) for start, audio in self.agent_segments]
        length = max([len(caller), math.ceil(self.duration * RATE), *ends])
        out = np.zeros((length, 2), dtype=np.int16)
        out[: len(caller), 0] = caller
        for start, audio in self.agent_segments:
            if not audio:
                continue
            at = round(start * RATE)
            out[at : at + len(audio), 1] = ulaw_decode(audio)
        return out

    def write_wav(self, path: str | Path) -> None:
        """A stereo WAV to listen to the call as the phone heard it."""
        write_stereo_wav(path, self.stereo_samples(), RATE)
