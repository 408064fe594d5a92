"""What the engine asks the outside world to do: its only outputs.

Commands name what should happen, not how: the runner turns ``PlayAudio``
into Vobiz ``playAudio`` frames, ``StartCompletion`` into a streamed chat
request, ``StartTimer`` into a trio sleep. Times (``at``) are call times, so
a replay produces the very same commands.
"""

from __future__ import annotations

import attrs

from engine.audio import Audio


@attrs.frozen
class Message:
    """One chat message, in the shape chat APIs take."""

    role: str
    content: str


@attrs.frozen
class PlayAudio:
    """Queue audio for the caller (sentence ``seq`` of ``utterance``)."""

    utterance: int
    seq: int
    audio: Audio = attrs.field(repr=lambda a: f"<{len(a)} bytes>")


@attrs.frozen
class Checkpoint:
    """Ask the phone to tell us (``AudioPlayed``) once everything queued so far has played."""

    name: str


@attrs.frozen
class ClearAudio:
    """Drop everything queued at the phone: the caller interrupted."""


@attrs.frozen
class StartCompletion:
    """Ask the language model for the reply of ``utterance`` to this conversation.

    ``speculative``: asked before the caller's turn surely ended; its audio is
    prepared but played only if the turn ends with the words it answers.
    """

    utterance: int
    messages: tuple[Message, ...]
    speculative: bool = False


@attrs.frozen
class CancelCompletion:
    """Stop the completion of ``utterance`` at once; its later events will be dropped."""

    utterance: int


@attrs.frozen
class Synthesize:
    """Turn sentence ``seq`` of ``utterance`` into speech."""

    utterance: int
    seq: int
    text: str


@attrs.frozen
class CancelSynthesis:
    """Stop every synthesis of ``utterance``."""

    utterance: int


@attrs.frozen
class StartTimer:
    """Fire ``TimerFired(name)`` at call time ``at``; restarting a name replaces it."""

    name: str
    at: float


@attrs.frozen
class CancelTimer:
    """Forget timer ``name`` (no-op if it is not running)."""

    name: str


@attrs.frozen
class Hangup:
    """End the call: the farewell has been heard (or could not be)."""

    reason: str


@attrs.frozen
class Transfer:
    """Hand the caller to another number or SIP address."""

    to: str
    reason: str = ""


Command = (
    PlayAudio
    | Checkpoint
    | ClearAudio
    | StartCompletion
    | CancelCompletion
    | Synthesize
    | CancelSynthesis
    | StartTimer
    | CancelTimer
    | Hangup
    | Transfer
)

COMMAND_TYPES: tuple[type, ...] = Command.__args__
