"""What the agent is saying: one utterance (a greeting, a reply, a reprompt, …) and its sentences.

A sentence is *played* when the phone acknowledged the checkpoint placed after
its audio (or the acknowledgement's fallback timer ran out): only then did the
caller hear it, so only played sentences ever reach the history.
"""

from __future__ import annotations

import attrs

from engine.audio import Audio


@attrs.define
class Sentence:
    """One sentence of the agent's utterance, from text to the caller's ear."""

    seq: int
    text: str
    queued: list[Audio] = attrs.field(factory=list)  # audio waiting for earlier sentences
    requested: bool = True  # sent to synthesis (a speculative reply holds back the rest)
    synthesized: bool = False  # the voice delivered all its audio
    sent: bool = False  # all its audio and its checkpoint went out
    played: bool = False  # the phone played it to the caller


@attrs.define
class AgentUtterance:
    """One thing the agent says, with the id its completion and syntheses carry.

    ``then`` is what follows once every sentence was played: ``"hangup"``,
    ``"transfer"``, or ``None`` (listen again). ``played_before`` carries the
    sentences a caller heard before an interruption, so a resumed reply and
    the original become one assistant message.
    """

    id: int
    kind: str  # greeting | reply | reprompt | notice | apology | goodbye
    sentences: list[Sentence] = attrs.field(factory=list)
    text_done: bool = False
    then: str | None = None
    transfer_to: str = ""
    interruptible: bool = True
    next_play: int = 0
    played_before: list[str] = attrs.field(factory=list)
    #: A speculative reply: prepared while the caller may still be talking, not played.
    held: bool = False

    def add(self, text: str) -> Sentence:
        sentence = Sentence(seq=len(self.sentences), text=text)
        self.sentences.append(sentence)
        return sentence

    def get(self, seq: int) -> Sentence | None:
        return self.sentences[seq] if 0 <= seq < len(self.sentences) else None

    @property
    def finished(self) -> bool:
        """Everything that will be said has been said and played."""
        return self.text_done and all(s.played for s in self.sentences)

    @property
    def unplayed(self) -> list[str]:
        return [s.text for s in self.sentences if not s.played]

    @property
    def played_text(self) -> str:
        return " ".join(self.played_before + [s.text for s in self.sentences if s.played])
