"""The conversation as the language model sees it: only what the caller heard."""

from __future__ import annotations

import attrs

from engine.commands import Message


@attrs.define
class History:
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
