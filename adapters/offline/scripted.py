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

import re
import string
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import trio

from adapters.offline.understanding import SLOT_NAMES, known_slots, phrase_in, words
from adapters.providers.interfaces import ProviderLink
from engine.commands import Message
from engine.events import LlmDone, LlmText, LlmToolCall

BUILTIN_SCRIPT = Path(__file__).with_name("agents") / "restaurant.toml"


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
    check = _Checker(source)
    greeting = check.text(data, "greeting", "top level")
    fallback = check.text(data, "fallback", "top level")
    for key, value in (("greeting", greeting), ("fallback", fallback)):
        if placeholders(value):
            raise check.fail(f"top level: '{key}' cannot use placeholders")
    raw_intents = data.get("intents", [])
    if not isinstance(raw_intents, list) or not all(isinstance(i, dict) for i in raw_intents):
        raise check.fail("'intents' must be an array of tables ([[intents]])")
    intents = tuple(_intent(check, raw, n) for n, raw in enumerate(raw_intents, start=1))
    name = data.get("name", Path(source).stem)
    if not isinstance(name, str):
        raise check.fail("top level: 'name' must be a string")
    phrases = data.get("hints", [])
    if not isinstance(phrases, list) or not all(isinstance(h, str) and words(h) for h in phrases):
        raise check.fail("top level: 'hints' must be a list of phrases")
    return Script(name, greeting, fallback, intents, source, tuple(phrases))


@attrs.frozen
class _Checker:
    """Reports a script's mistakes, each with the file it is in."""

    source: str

    def fail(self, why: str) -> ScriptError:
        return ScriptError(f"{self.source}: {why}")

    def text(self, table: Mapping[str, Any], key: str, where: str) -> str:
        value = table.get(key)
        if not isinstance(value, str) or not value.strip():
            raise self.fail(f"{where}: '{key}' must be a non-empty string")
        return value.strip()


def _intent(check: _Checker, raw: Mapping[str, Any], n: int) -> Intent:
    """The ``n``-th ``[[intents]]`` table, checked."""
    where = f"intent {raw.get('name', n)!r}"
    name = check.text(raw, "name", f"intent {n}")
    keywords = raw.get("keywords")
    if (
        not isinstance(keywords, list)
        or not keywords
        or not all(isinstance(k, str) and words(k) for k in keywords)
    ):
        raise check.fail(f"{where}: 'keywords' must be a non-empty list of words or phrases")
    replies = _replies(check, raw.get("reply"), where)
    slots = raw.get("slots", [])
    if not isinstance(slots, list) or not set(slots) <= set(SLOT_NAMES):
        raise check.fail(f"{where}: 'slots' must be a list drawn from {list(SLOT_NAMES)}")
    end_call = raw.get("end_call", False)
    if not isinstance(end_call, bool):
        raise check.fail(f"{where}: 'end_call' must be true or false")
    return Intent(
        name=name,
        keywords=tuple(k.strip() for k in keywords),
        replies=tuple(r.strip() for r in replies),
        slots=tuple(slots),
        end_call=end_call,
    )


def _replies(check: _Checker, reply: Any, where: str) -> list[str]:
    """An intent's reply variants: known placeholders only, and a last variant with none."""
    replies = [reply] if isinstance(reply, str) else reply
    if (
        not isinstance(replies, list)
        or not replies
        or not all(isinstance(r, str) and r.strip() for r in replies)
    ):
        raise check.fail(f"{where}: 'reply' must be a string or a non-empty list of strings")
    for r in replies:
        unknown = placeholders(r) - set(SLOT_NAMES)
        if unknown:
            raise check.fail(
                f"{where}: unknown placeholder(s) {sorted(unknown)} in {r!r};"
                f" known: {list(SLOT_NAMES)}"
            )
    if placeholders(replies[-1]):
        raise check.fail(f"{where}: the last reply variant must use no placeholder")
    return replies


def placeholders(template: str) -> set[str]:
    """The ``{names}`` a reply template uses."""
    try:
        return {field for _, field, _, _ in string.Formatter().parse(template) if field}
    except ValueError:
        return {template}  # unbalanced braces: reported as an unknown placeholder


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
