"""Cutting a streamed reply into sentences, so speech can start before the reply ends.

The first sentence is what the caller waits for: each one goes to synthesis
the moment its final punctuation arrives.
"""

from __future__ import annotations

import re

_ABBREVIATIONS = frozenset(
    {
        "mr.",
        "mrs.",
        "ms.",
        "dr.",
        "st.",
        "jr.",
        "sr.",
        "vs.",
        "etc.",
        "e.g.",
        "i.e.",
        "approx.",
        "no.",
    }
)
# End punctuation, optional closing quotes or brackets, then whitespace.
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*\s+|\n+")


class SentenceSplitter:
    """Accumulates text deltas and releases whole sentences."""

    def __init__(self) -> None:
        self._buffer = ""

    def push(self, text: str) -> list[str]:
        """Add a delta; return the sentences it completed."""
        self._buffer += text
        sentences: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            candidate = self._buffer[start : match.end()].strip()
            last_word = candidate.rsplit(None, 1)[-1].lower() if candidate else ""
            if not candidate or last_word in _ABBREVIATIONS:
                continue
            sentences.append(candidate)
            start = match.end()
        self._buffer = self._buffer[start:]
        return sentences

    def flush(self) -> str | None:
        """The reply ended: whatever is left is the last sentence."""
        rest, self._buffer = self._buffer.strip(), ""
        return rest or None
