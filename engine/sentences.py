"""Cutting a streamed reply into sentences, so speech can start before the reply ends.

The first sentence is what the caller waits for: each one goes to synthesis
the moment its final punctuation arrives. A long first sentence may be cut
earlier, at its first clause break (a comma or semicolon after enough words),
so the caller hears the reply begin while the model is still writing it.

Punctuation that ends a delta ends the sentence there and then: waiting for the
next delta to bring the space after it would hold every sentence back by one
token of the model's time. Two things can still go on after such punctuation,
and only they wait: a known abbreviation (``Dr.``) and a number (``3.`` may be
``3.5``, ``1,`` may be ``1,000``, ``3:`` may be ``3:30``).
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
# End punctuation, optional closing quotes or brackets, then whitespace or the end of what
# has arrived so far.
_BOUNDARY = re.compile(r"[.!?…]+[\"'”’)\]]*(?:\s+|$)|\n+")
_CLAUSE = re.compile(r"[,;:](?:\s+|$)")
#: Punctuation after a digit that a number may go on from (``3.5``, ``1,000``, ``3:30``).
_NUMBER_GOES_ON = frozenset(".,:")


def _may_go_on(text: str, match: re.Match[str]) -> bool:
    """Punctuation at the very end of the text so far that a number may continue."""
    if match.end() != len(text) or text[-1:].isspace():
        return False
    start = match.start()
    return text[start] in _NUMBER_GOES_ON and start > 0 and text[start - 1].isdigit()


class SentenceSplitter:
    """Accumulates text deltas and releases whole sentences.

    ``first_clause_chars`` > 0 lets the first piece end at a clause break once it
    is at least that long; later pieces are whole sentences.
    """

    def __init__(self, first_clause_chars: int = 0) -> None:
        self._buffer = ""
        self._first_clause_chars = first_clause_chars
        self._released = 0

    def push(self, text: str) -> list[str]:
        """Add a delta; return the sentences it completed."""
        self._buffer += text
        sentences: list[str] = []
        start = 0
        for match in _BOUNDARY.finditer(self._buffer):
            candidate = self._buffer[start : match.end()].strip()
            last_word = candidate.rsplit(None, 1)[-1].lower() if candidate else ""
            if not candidate or last_word in _ABBREVIATIONS or _may_go_on(self._buffer, match):
                continue
            sentences.append(candidate)
            start = match.end()
        self._buffer = self._buffer[start:]
        if not sentences and not self._released and self._first_clause_chars:
            for match in _CLAUSE.finditer(self._buffer):
                if match.start() >= self._first_clause_chars and not _may_go_on(
                    self._buffer, match
                ):
                    sentences.append(self._buffer[: match.end()].strip())
                    self._buffer = self._buffer[match.end() :]
                    break
        self._released += len(sentences)
        return sentences

    def flush(self) -> str | None:
        """The reply ended: whatever is left is the last sentence."""
        rest, self._buffer = self._buffer.strip(), ""
        if rest:
            self._released += 1
        return rest or None
