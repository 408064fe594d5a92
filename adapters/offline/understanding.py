"""What a caller's words say, for the scripted brain: forgiving matching, and the slots filled.

The words come from an offline recognizer that gets many of them wrong, so
matching is forgiving: text is lowercased and stripped of punctuation,
keywords match whole words (or whole phrases), and a word of four letters or
more also matches a keyword it is close to (``difflib`` ratio >= 0.8: "tabel"
and "tables" hit "table"). The slots are ``party`` (how many people), ``day``
and ``time``, as they should be spoken back.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable

from engine.commands import Message

#: The slots :func:`slots_in` fills, and the placeholders a reply may use.
SLOT_NAMES = ("party", "day", "time")
FUZZY_RATIO = 0.8
FUZZY_MIN_LENGTH = 4


def words(text: str) -> list[str]:
    """Lowercase words without punctuation; "that's" and "thats" are the same word."""
    text = text.lower().replace("'", "").replace("\u2019", "")
    return re.findall(r"[a-z0-9]+", text)


def word_matches(heard: str, keyword: str) -> bool:
    """Equal, or close enough for a recognizer's slip on a longer word."""
    if heard == keyword:
        return True
    if min(len(heard), len(keyword)) < FUZZY_MIN_LENGTH:
        return False  # "to"/"two", "for"/"four" would match everywhere
    return difflib.SequenceMatcher(None, heard, keyword).ratio() >= FUZZY_RATIO


def phrase_in(heard: list[str], keyword: str) -> bool:
    """Whether the keyword's words appear in a row among the heard words."""
    want = words(keyword)
    return any(
        all(word_matches(h, w) for h, w in zip(heard[i : i + len(want)], want, strict=True))
        for i in range(len(heard) - len(want) + 1)
    )


NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7,
    "eight": 8, "nine": 9, "ten": 10, "eleven": 11, "twelve": 12,
}  # fmt: skip
NUMBER_WORDS = {n: w for w, n in NUMBERS.items()}
# What an offline recognizer writes for a number word said on its own.
SOUNDALIKES = {"won": 1, "to": 2, "too": 2, "for": 4, "fore": 4, "ate": 8}
PEOPLE = {"people", "persons", "person", "guests", "adults", "of"}
TIME_TAIL = {"fifteen", "thirty", "forty", "am", "pm", "oclock"}
SPOKEN_TAIL = {"am": "a.m.", "pm": "p.m.", "oclock": "o'clock"}
DAYS = {"today": "today", "tonight": "tonight", "tomorrow": "tomorrow"}
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def number(word: str, soundalike: bool = False) -> int | None:
    """A number word or digits, optionally allowing words that sound like one."""
    if word.isdigit():
        return int(word)
    if word in NUMBERS:
        return NUMBERS[word]
    return SOUNDALIKES.get(word) if soundalike else None


def time_tail(heard: list[str], start: int) -> list[str]:
    """The words that finish a time: "thirty", "forty five", "p.m.", "o'clock"."""
    tail: list[str] = []
    for w in heard[start : start + 3]:
        minutes = w in TIME_TAIL or (w.isdigit() and len(w) == 2)
        if not (minutes or (w == "five" and tail[-1:] == ["forty"])):
            break
        tail.append(w)
    return tail


def slots_in(text: str, asked_how_many: bool = False) -> dict[str, str]:
    """The slots one utterance fills, as they should be spoken back."""
    heard = words(text)
    found: dict[str, str] = {}
    i = 0
    while i < len(heard):
        w = heard[i]
        after = heard[i + 1] if i + 1 < len(heard) else ""
        before = heard[i - 1] if i > 0 else ""
        i += 1
        if w in DAYS:
            found["day"] = DAYS[w]
        elif w in WEEKDAYS:
            found["day"] = f"on {w.capitalize()}"
        n = number(w, soundalike=after in PEOPLE)
        if n is None:
            continue
        tail = time_tail(heard, i)
        if before == "at" or tail:
            found["time"] = " ".join([w, *(SPOKEN_TAIL.get(t, t) for t in tail)])
            i += len(tail)
        elif 0 < n <= 20 and (after in PEOPLE or before == "for" or asked_how_many):
            found["party"] = NUMBER_WORDS.get(n, str(n))
    return found


def known_slots(messages: Iterable[Message]) -> tuple[dict[str, str], dict[str, str]]:
    """Slots from the whole call, and those the caller's last words filled.

    A bare number is a party size only when the agent had just asked how
    many: that context lives in the messages, not in the brain.
    """
    everything: dict[str, str] = {}
    last: dict[str, str] = {}
    asked = False
    for m in messages:
        if m.role == "assistant":
            asked = "how many" in m.content.lower()
        elif m.role == "user":
            last = slots_in(m.content, asked_how_many=asked)
            everything.update(last)
            asked = False
    return everything, last
