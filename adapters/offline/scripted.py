"""An offline agent brain read from a TOML script: the default with no API key.

A new user should hear a real conversation before opening any account, so
this stands in for the chat model with keyword intents. The caller's words
come from an offline recognizer that gets many of them wrong, so matching is
forgiving: text is lowercased and stripped of punctuation, keywords match
whole words (or whole phrases), and a word of four letters or more also
matches a keyword it is close to (``difflib`` ratio >= 0.8: "tabel" and
"tables" hit "table").

Script format::

    name = "Trattoria Roma table booking"
    greeting = "Hello, Trattoria Roma, how can I help you?"
    fallback = "Sorry, I didn't catch that. Would you like to book a table?"

    [[intents]]
    name = "confirm"
    keywords = ["tomorrow", "today", "pm"]    # words or phrases
    slots = ["day", "time"]                   # optional, see below
    reply = [                                 # one string, or variants
        "Lovely: {day} at {time}. Anything else?",
        "Lovely. Anything else?",             # the last uses no placeholder
    ]
    end_call = false                          # true: hang up after the reply

The intent whose keywords match most of the caller's last words wins; a tie
goes to the intent written first; no match gives ``fallback``.

Slots are ``party`` (how many people), ``day`` and ``time``, gathered from
everything the caller said so far (the latest mention wins), so one shared
brain serves many calls with no state of its own. A reply is the first
variant whose placeholders are all known: the last variant must use none,
which the loader checks, so a placeholder is never spoken raw. Each slot
listed under ``slots`` that the caller's last words fill adds one to the
intent's score: "tomorrow at seven" is an answer about time even though
"seven" is also a number of people.
"""

from __future__ import annotations

import difflib
import re
import string
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from adapters.providers.interfaces import ProviderLink
from engine.commands import Message
from engine.events import LlmDone, LlmText, LlmToolCall

BUILTIN_SCRIPT = Path(__file__).with_name("agents") / "restaurant.toml"
SLOT_NAMES = ("party", "day", "time")
FUZZY_RATIO = 0.8
FUZZY_MIN_LENGTH = 4


class ScriptError(ValueError):
    """A script file that cannot be used; the message names the file."""


@attrs.frozen
class Intent:
    """One thing the caller may want, and what the agent answers."""

    name: str
    keywords: tuple[str, ...]
    replies: tuple[str, ...]
    slots: tuple[str, ...] = ()
    end_call: bool = False


@attrs.frozen
class Script:
    """A whole scripted agent, as loaded from one TOML file."""

    name: str
    greeting: str
    fallback: str
    intents: tuple[Intent, ...]
    source: str = ""
    #: Whole phrases callers are expected to say (TOML ``hints``), for an offline recognizer.
    phrases: tuple[str, ...] = ()

    @property
    def hints(self) -> tuple[str, ...]:
        """What to tell a recognizer to expect: the script's phrases, else its keywords."""
        return self.phrases or self.keyphrases

    @property
    def keyphrases(self) -> tuple[str, ...]:
        """Every keyword once, so an offline recognizer can be biased towards them."""
        return tuple(dict.fromkeys(k for intent in self.intents for k in intent.keywords))


# --- loading ---------------------------------------------------------------


def load_script(path: str | Path | None = None) -> Script:
    """Read a script file; ``None`` gives the built-in restaurant booking agent."""
    file = Path(path) if path is not None else BUILTIN_SCRIPT
    try:
        data = tomllib.loads(file.read_text(encoding="utf-8"))
    except OSError as e:
        raise ScriptError(f"{file}: cannot read agent script: {e}") from e
    except tomllib.TOMLDecodeError as e:
        raise ScriptError(f"{file}: not valid TOML: {e}") from e
    return parse_script(data, source=str(file))


def parse_script(data: Mapping[str, Any], source: str = "<script>") -> Script:
    """Check a decoded script so mistakes show at start-up, not mid-call."""

    def fail(why: str) -> ScriptError:
        return ScriptError(f"{source}: {why}")

    def text(table: Mapping[str, Any], key: str, where: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise fail(f"{where}: '{key}' must be a non-empty string")
        return value.strip()

    greeting = text(data, "greeting", "top level")
    fallback = text(data, "fallback", "top level")
    for key, value in (("greeting", greeting), ("fallback", fallback)):
        if placeholders(value):
            raise fail(f"top level: '{key}' cannot use placeholders")
    raw_intents = data.get("intents", [])
    if not isinstance(raw_intents, list) or not all(isinstance(i, dict) for i in raw_intents):
        raise fail("'intents' must be an array of tables ([[intents]])")
    intents = []
    for n, raw in enumerate(raw_intents, start=1):
        where = f"intent {raw.get('name', n)!r}"
        name = text(raw, "name", f"intent {n}")
        keywords = raw.get("keywords")
        if (
            not isinstance(keywords, list)
            or not keywords
            or not all(isinstance(k, str) and words(k) for k in keywords)
        ):
            raise fail(f"{where}: 'keywords' must be a non-empty list of words or phrases")
        reply = raw.get("reply")
        replies = [reply] if isinstance(reply, str) else reply
        if (
            not isinstance(replies, list)
            or not replies
            or not all(isinstance(r, str) and r.strip() for r in replies)
        ):
            raise fail(f"{where}: 'reply' must be a string or a non-empty list of strings")
        for r in replies:
            unknown = placeholders(r) - set(SLOT_NAMES)
            if unknown:
                raise fail(
                    f"{where}: unknown placeholder(s) {sorted(unknown)} in {r!r};"
                    f" known: {list(SLOT_NAMES)}"
                )
        if placeholders(replies[-1]):
            raise fail(f"{where}: the last reply variant must use no placeholder")
        slots = raw.get("slots", [])
        if not isinstance(slots, list) or not set(slots) <= set(SLOT_NAMES):
            raise fail(f"{where}: 'slots' must be a list drawn from {list(SLOT_NAMES)}")
        end_call = raw.get("end_call", False)
        if not isinstance(end_call, bool):
            raise fail(f"{where}: 'end_call' must be true or false")
        intents.append(
            Intent(
                name=name,
                keywords=tuple(k.strip() for k in keywords),
                replies=tuple(r.strip() for r in replies),
                slots=tuple(slots),
                end_call=end_call,
            )
        )
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise fail("top level: 'name' must be a string")
    phrases = data.get("hints", [])
    if not isinstance(phrases, list) or not all(isinstance(h, str) and words(h) for h in phrases):
        raise fail("top level: 'hints' must be a list of phrases")
    return Script(name, greeting, fallback, tuple(intents), source, tuple(phrases))


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a reply template uses."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field}
    except ValueError:
        return {template}  # unbalanced braces: reported as an unknown placeholder


# --- understanding ---------------------------------------------------------


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


def choose(script: Script, messages: tuple[Message, ...]) -> tuple[Intent | None, str]:
    """The intent for the caller's last words and the reply to speak."""
    user = [m for m in messages if m.role == "user"]
    heard = words(user[-1].content) if user else []
    slots, fresh = known_slots(messages)
    best: Intent | None = None
    best_score = 0
    for intent in script.intents:
        score = sum(phrase_in(heard, k) for k in intent.keywords)
        if score:
            score += sum(s in fresh for s in intent.slots)
        if score > best_score:
            best, best_score = intent, score
    if best is None:
        return None, script.fallback
    for variant in best.replies:
        if placeholders(variant) <= slots.keys():
            return best, variant.format(**slots)
    raise AssertionError("the loader guarantees a variant without placeholders")


# --- the brain -------------------------------------------------------------


@attrs.frozen
class ScriptedBrain:
    """A :class:`adapters.providers.interfaces.LanguageModel` that follows a script.

    It keeps no per-call state (everything comes from ``messages``), so one
    instance serves every call. ``word_delay`` paces the words like a
    streaming model would; 0 still yields to trio between words, so a
    barge-in cancels a reply mid-way.
    """

    script: Script = attrs.field(factory=load_script)
    word_delay: float = 0.0

    async def complete(
        self, utterance: int, messages: tuple[Message, ...], link: ProviderLink
    ) -> None:
        """Stream the scripted reply word by word, then hang up if the intent says so."""
        intent, reply = choose(self.script, messages)
        link.log.debug("scripted intent %s", intent.name if intent else "<fallback>")
        for piece in re.findall(r"\s*\S+", reply):
            await trio.sleep(self.word_delay)
            await link.emit(LlmText(utterance, piece))
        if intent is not None and intent.end_call:
            await link.emit(LlmToolCall(utterance, "end_call", "{}", "scripted"))
        await link.emit(LlmDone(utterance))
