"""What has been said: the chat history and the agent's speech in progress.

The history holds only what the caller actually heard. A sentence counts as
heard when the phone acknowledged the checkpoint placed after its audio (or
the acknowledgement's fallback timer ran out), so after a barge-in the model
is never told it said something the caller never heard.
"""

from __future__ import annotations

import attrs

from engine.audio import Audio
from engine.commands import Message


@attrs.define
class Sentence:
    """One sentence of agent speech, from text to the caller's ear."""

    seq: int
    text: str
    queued: list[Audio] = attrs.field(factory=list)  # audio waiting for earlier sentences
    synthesized: bool = False  # the TTS delivered all its audio
    sent: bool = False  # all its audio and its checkpoint went out
    heard: bool = False  # its checkpoint was acknowledged


@attrs.define
class Speech:
    """The agent's turn at talking: a greeting, a reply, a reprompt, a goodbye.

    ``then`` is what follows once every sentence was heard: ``"hangup"``,
    ``"transfer"``, or ``None`` (listen again). ``heard_before`` carries the
    sentences a caller heard before an interruption, so a resumed reply and
    the original become one assistant message.
    """

    turn: int
    kind: str
    sentences: list[Sentence] = attrs.field(factory=list)
    text_done: bool = False
    then: str | None = None
    transfer_to: str = ""
    interruptible: bool = True
    next_play: int = 0
    heard_before: list[str] = attrs.field(factory=list)

    def add(self, text: str) -> Sentence:
        sentence = Sentence(seq=len(self.sentences), text=text)
        self.sentences.append(sentence)
        return sentence

    def get(self, seq: int) -> Sentence | None:
        return self.sentences[seq] if 0 <= seq < len(self.sentences) else None

    @property
    def finished(self) -> bool:
        """Everything that will be said has been said and heard."""
        return self.text_done and all(s.heard for s in self.sentences)

    @property
    def unheard(self) -> list[str]:
        return [s.text for s in self.sentences if not s.heard]

    @property
    def heard_text(self) -> str:
        return " ".join(self.heard_before + [s.text for s in self.sentences if s.heard])


@attrs.define
class History:
    """The conversation as the language model will see it."""

    system_prompt: str
    messages: list[Message] = attrs.field(factory=list)

    def add(self, role: str, content: str) -> None:
        if content:
            self.messages.append(Message(role, content))

    def for_model(self) -> tuple[Message, ...]:
        return (Message("system", self.system_prompt), *self.messages)

    def take_back_user(self) -> str:
        """Remove the last user message (its reply was abandoned unheard) and return it."""
        if self.messages and self.messages[-1].role == "user":
            return self.messages.pop().content
        return ""
