"""What can happen to a call: the engine's only inputs.

Every event is an immutable value. The runner stamps the time it happened
(``now``, seconds since the call started) when it hands the event to
:meth:`engine.core.Engine.handle`; the engine never reads a clock.

Events that answer a request the engine made (a completion, a synthesis)
carry that request's ``utterance`` id. When the engine has moved on (a barge-in
cancelled the utterance), events of older utterances are dropped, so audio
from a cancelled reply can never reach the caller. Names say whose voice: the
caller's speech, pauses and words; the agent's audio, played by the phone.
"""

from __future__ import annotations

import attrs

from engine.audio import Audio


@attrs.frozen
class CallStarted:
    """The media stream is up: the caller can hear us from now on."""

    call_id: str
    stream_id: str = ""
    caller: str = ""
    callee: str = ""


@attrs.frozen
class CallerSpeechStarted:
    """Someone is talking on the caller's side (local VAD or the recognizer).

    ``at`` is the call time of the first speech frame, which is earlier than
    the moment the detector was sure: barge-in duration counts from it.
    """

    at: float
    source: str = "vad"


@attrs.frozen
class CallerSpeechStopped:
    """The caller's side went quiet."""

    at: float
    source: str = "vad"


@attrs.frozen
class Transcript:
    """Recognized words. Interim results replace each other; finals accumulate."""

    text: str
    is_final: bool = True
    speech_final: bool = False


@attrs.frozen
class CallerPaused:
    """The recognizer saw a long enough gap after the last word."""


@attrs.frozen
class LlmText:
    """A piece of the streamed reply."""

    utterance: int
    text: str


@attrs.frozen
class LlmToolCall:
    """The model asked for a tool; ``arguments`` is the raw JSON text."""

    utterance: int
    name: str
    arguments: str = "{}"
    call_id: str = ""


@attrs.frozen
class LlmDone:
    """The completion stream finished normally."""

    utterance: int


@attrs.frozen
class LlmFailed:
    """The completion could not be had (timeout, 429, 5xx, dropped stream)."""

    utterance: int
    reason: str


@attrs.frozen
class TtsAudio:
    """Phone-ready audio (8 kHz mu-law) of sentence ``seq`` of ``utterance``."""

    utterance: int
    seq: int
    audio: Audio = attrs.field(repr=lambda a: f"<{len(a)} bytes>")


@attrs.frozen
class TtsDone:
    """All audio of sentence ``seq`` has been delivered."""

    utterance: int
    seq: int


@attrs.frozen
class TtsFailed:
    """Sentence ``seq`` could not be synthesized."""

    utterance: int
    seq: int
    reason: str


@attrs.frozen
class AudioPlayed:
    """The phone played everything queued before checkpoint ``name`` (Vobiz ``playedStream``)."""

    name: str


@attrs.frozen
class AudioCleared:
    """The phone flushed its queue after our ``clearAudio`` (Vobiz ``clearedAudio``)."""


@attrs.frozen
class TimerFired:
    """A timer the engine started with :class:`engine.commands.StartTimer` ran out."""

    name: str


@attrs.frozen
class DtmfPressed:
    """The caller pressed a key."""

    digit: str


@attrs.frozen
class CallerTurnLikelyOver:
    """The recognizer thinks the caller may be done (Deepgram Flux ``EagerEndOfTurn``).

    ``text`` is the whole turn so far. The engine may prepare the reply now and
    play it only if the turn really ends with the same words.
    """

    text: str


@attrs.frozen
class CallerTurnResumed:
    """The caller went on after all (Flux ``TurnResumed``): a prepared reply is void."""


@attrs.frozen
class SttLost:
    """The recognizer is unreachable: the caller is not being understood until it is back."""

    reason: str = ""


@attrs.frozen
class SttRestored:
    """The recognizer is back; what the caller said meanwhile is being sent to it."""


@attrs.frozen
class CallTakenOver:
    """Another server process carries the call on: the one that ran it was lost.

    Its log was replayed into a fresh engine, so the conversation is as it was;
    but what that process had in flight (a completion, syntheses, timers, audio
    the phone had not confirmed) was lost with it.
    """

    worker: str = ""


@attrs.frozen
class CallEnded:
    """The call is over from the outside: socket closed, ``stop``, hang-up webhook."""

    reason: str


Event = (
    CallStarted
    | CallerSpeechStarted
    | CallerSpeechStopped
    | Transcript
    | CallerPaused
    | LlmText
    | LlmToolCall
    | LlmDone
    | LlmFailed
    | TtsAudio
    | TtsDone
    | TtsFailed
    | AudioPlayed
    | AudioCleared
    | TimerFired
    | DtmfPressed
    | CallerTurnLikelyOver
    | CallerTurnResumed
    | SttLost
    | SttRestored
    | CallTakenOver
    | CallEnded
)

EVENT_TYPES: tuple[type, ...] = Event.__args__
