"""The agent's settings that shape a conversation.

These are the only knobs the engine reads. They are written into every call
log's header, so a replay rebuilds exactly the engine the call ran with.
"""

from __future__ import annotations

from typing import Any

import attrs

DEFAULT_BACKCHANNELS = (
    "uh-huh",
    "uh huh",
    "mm-hm",
    "mm hm",
    "mhm",
    "hmm",
    "okay",
    "ok",
    "right",
    "yeah",
    "yep",
    "sure",
    "i see",
)


def _tuple(value: Any) -> tuple[str, ...]:
    return tuple(str(v) for v in value)


@attrs.frozen(kw_only=True)
class AgentConfig:
    """How the agent behaves on the phone; times are in seconds."""

    system_prompt: str = (
        "You are a friendly, concise phone assistant. Answer in one or two short spoken "
        "sentences, without lists or markup. Call end_call when the caller is done."
    )
    greeting: str = "Hello! Thanks for calling. How can I help you today?"
    reprompt: str = "Are you still there?"
    goodbye: str = "Thank you for calling. Goodbye!"
    apology: str = "Sorry, I had a problem there. Could you say that again?"

    #: Silence after the agent was heard before a reprompt.
    idle_timeout: float = 8.0
    #: Reprompts before the agent says goodbye and hangs up.
    max_reprompts: int = 2
    #: The agent says goodbye and hangs up when the call reaches this length.
    max_call_seconds: float = 600.0

    #: A reply's first piece may end at a comma once it has this many characters, so its
    #: audio starts sooner (0: whole sentences only).
    first_clause_chars: int = 30

    #: Caller speech shorter than this (counted from its first frame) does not interrupt.
    barge_in_min_speech: float = 0.1
    #: After an interruption, words must come within this time or the agent resumes.
    false_interruption_timeout: float = 1.5
    #: When the recognizer says the sound had no words (an empty final, or a pause with
    #: nothing heard), the agent resumes once the local VAD has heard silence this long,
    #: instead of waiting out ``false_interruption_timeout``.
    resume_after_silence: float = 0.15
    #: Whether the caller can interrupt the greeting.
    greeting_interruptible: bool = False
    #: Short acknowledgements that do not take the floor from the agent.
    backchannels: tuple[str, ...] = attrs.field(default=DEFAULT_BACKCHANNELS, converter=_tuple)

    #: Whether keypad digits reach the language model as a user message.
    dtmf_to_llm: bool = True
    #: Digits are gathered until this gap passes or ``#`` is pressed.
    dtmf_gap: float = 1.5
    dtmf_template: str = "(The caller pressed the keys: {digits})"

    #: The caller finished and the agent is still silent after this long: it says ``filler``
    #: (when the model has not produced a sentence yet), so the line is never dead.
    filler_after: float = 4.0
    filler: str = "One moment, please."
    #: A reply whose model has not finished after this long is given up: the completion is
    #: cancelled and the agent apologizes, whatever the provider's own timeouts (0: never).
    reply_deadline: float = 12.0

    #: Prepare the reply when the recognizer says the turn is likely over (Flux's eager end
    #: of turn), and play it the moment the turn ends with the same words.
    speculate: bool = True
    #: Also speculate on a final result that ends a sentence before the turn's end (Nova).
    speculate_on_final: bool = False
    #: Sentences of a speculative reply sent to synthesis before the turn is confirmed
    #: (the rest wait for it): each one prepared is spent if the caller goes on.
    speculative_sentences: int = 1

    #: After the recognizer has been unreachable this long, the agent says ``deaf_notice``.
    deaf_notice_after: float = 5.0
    deaf_notice: str = "Sorry, I'm having trouble hearing you. Please bear with me a moment."

    #: Slack on top of the audio's own duration before a missing playback
    #: acknowledgement is taken as heard (the phone does not always send one).
    ack_grace: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentConfig:
        """Build from a log header or an agent file; unknown keys are an error, so typos show."""
        names = {a.name for a in attrs.fields(cls)}
        unknown = set(data) - names
        if unknown:
            raise ValueError(f"unknown agent settings: {', '.join(sorted(unknown))}")
        return cls(**data)
