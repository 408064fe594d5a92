"""The scripted brain: intents from noisy transcripts, streaming, scripts on disk."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trio

from adapters.offline.scripted import Script, ScriptedBrain, ScriptError, load_script
from adapters.providers.interfaces import ProviderLink
from engine.commands import Message
from engine.events import Event, LlmDone, LlmText, LlmToolCall

SCRIPT = load_script(None)
REPLIES = {intent.name: intent.replies for intent in SCRIPT.intents}


def make_link(events: list[Event]) -> ProviderLink:
    async def emit(event: Event) -> None:
        events.append(event)

    log = logging.LoggerAdapter(logging.getLogger("test"), {})
    return ProviderLink("call-1", emit, trio.current_time, log)


async def reply_to(
    said: list[str], brain: ScriptedBrain | None = None, utterance: int = 1
) -> list[Event]:
    """Events of the reply to the last of ``said``, with the agent's earlier replies in between."""
    brain = brain or ScriptedBrain(SCRIPT)
    messages = [Message("system", "You are a restaurant."), Message("assistant", SCRIPT.greeting)]
    events: list[Event] = []
    for n, text in enumerate(said):
        messages.append(Message("user", text))
        events = []
        await brain.complete(utterance + n, tuple(messages), make_link(events))
        messages.append(Message("assistant", spoken(events)))
    return events


def spoken(events: list[Event]) -> str:
    return "".join(e.text for e in events if isinstance(e, LlmText))


async def test_builtin_script_loads() -> None:
    assert SCRIPT.greeting == "Hello, Trattoria Roma, how can I help you?"
    assert [i.name for i in SCRIPT.intents] == [
        "goodbye",
        "hours",
        "menu",
        "confirm",
        "party_size",
        "book",
    ]
    assert {"table", "book", "menu", "goodbye"} <= set(SCRIPT.keyphrases)
    assert len(SCRIPT.keyphrases) == len(set(SCRIPT.keyphrases))


async def test_demo_conversation() -> None:
    said = [
        "I would like to book a table",
        "for four people",
        "tomorrow at seven",
        "no thank you goodbye",
    ]
    replies = [spoken(await reply_to(said[: n + 1])) for n in range(len(said))]
    assert replies == [
        "Of course. For how many people?",
        "Great, a table for four. What day and time would you like?",
        "Lovely, a table for four tomorrow at seven is booked."
        " Is there anything else I can help with?",
        "Thank you for calling Trattoria Roma. Goodbye!",
    ]


@pytest.mark.parametrize(
    ("said", "reply"),
    [
        (["i would like to book a tabel"], REPLIES["book"][0]),
        (["can i make a reservations"], REPLIES["book"][0]),
        (["can i get a tabel"], REPLIES["book"][0]),
        (["tables"], REPLIES["book"][0]),
        (["book a table", "for for people"], "Great, a table for four. What day and time would you like?"),
        (["book a table", "four"], "Great, a table for four. What day and time would you like?"),
        (["tomorrow at seven"], "Lovely, that's booked for tomorrow at seven. Is there anything else I can help with?"),
        (["no thanks bye"], REPLIES["goodbye"][0]),
        (["what are your opening hour"], REPLIES["hours"][0]),
        (["what is on the menu"], REPLIES["menu"][0]),
    ],
)  # fmt: skip
async def test_near_miss_transcripts(said: list[str], reply: str) -> None:
    assert spoken(await reply_to(said)) == reply


async def test_missing_slot_never_spoken_raw() -> None:
    text = spoken(await reply_to(["we are a big group of people"]))
    assert text == "Great. What day and time would you like?"
    text = spoken(await reply_to(["on friday please for dinner"]))
    assert "{" not in text and "on Friday" not in text  # no time yet: the plain variant
    assert text == REPLIES["confirm"][-1]


async def test_fallback_when_nothing_matches() -> None:
    events = await reply_to(["uh hmm the weather is nice"])
    assert spoken(events) == SCRIPT.fallback
    assert events[-1] == LlmDone(1)
    assert not any(isinstance(e, LlmToolCall) for e in events)


async def test_fallback_without_any_user_message() -> None:
    events: list[Event] = []
    await ScriptedBrain(SCRIPT).complete(3, (Message("system", "x"),), make_link(events))
    assert spoken(events) == SCRIPT.fallback


async def test_goodbye_ends_the_call_after_its_text() -> None:
    events = await reply_to(["no thanks bye"], utterance=7)
    assert events[-2:] == [LlmToolCall(7, "end_call", "{}", "scripted"), LlmDone(7)]
    texts = events[:-2]
    assert all(isinstance(e, LlmText) and e.utterance == 7 for e in texts)
    assert spoken(texts) == "Thank you for calling Trattoria Roma. Goodbye!"


async def test_reply_streams_word_by_word() -> None:
    events = await reply_to(["what time do you open"])
    texts = [e.text for e in events if isinstance(e, LlmText)]
    assert len(texts) == len(REPLIES["hours"][0].split()) > 30
    assert "".join(texts) == REPLIES["hours"][0]
    assert REPLIES["hours"][0].count(". ") + 1 in (3, 4, 5)


async def test_word_delay_paces_the_reply(autojump_clock: trio.testing.MockClock) -> None:
    start = trio.current_time()
    events = await reply_to(["book a table"], brain=ScriptedBrain(SCRIPT, word_delay=0.05))
    words = len(spoken(events).split())
    assert trio.current_time() - start == pytest.approx(0.05 * words)


async def test_cancel_stops_mid_reply(autojump_clock: trio.testing.MockClock) -> None:
    events: list[Event] = []
    brain = ScriptedBrain(SCRIPT, word_delay=0.1)
    messages = (Message("user", "tell me about the menu"),)
    with trio.move_on_after(0.35):
        await brain.complete(1, messages, make_link(events))
    assert 1 <= len(events) <= 4
    assert not any(isinstance(e, LlmDone) for e in events)


async def test_one_brain_serves_calls_independently() -> None:
    brain = ScriptedBrain(SCRIPT)
    first = spoken(await reply_to(["book a table", "for six people"], brain=brain))
    second = spoken(await reply_to(["book a table", "for two people"], brain=brain))
    third = spoken(await reply_to(["tomorrow at seven"], brain=brain))
    assert "for six" in first and "for two" in second
    assert "six" not in third and "two" not in third


CUSTOM = """
name = "Pizza line"
greeting = "Pizza line, hello!"
fallback = "Pardon?"

[[intents]]
name = "order"
keywords = ["pizza", "order"]
slots = ["party"]
reply = ["Pizza for {party}, coming up.", "Which pizza?"]

[[intents]]
name = "bye"
keywords = ["bye"]
reply = "Ciao!"
end_call = true
"""


async def test_custom_script_file(tmp_path: Path) -> None:
    path = tmp_path / "pizza.toml"
    path.write_text(CUSTOM, encoding="utf-8")
    script = load_script(str(path))
    assert isinstance(script, Script)
    assert script.name == "Pizza line"
    assert script.greeting == "Pizza line, hello!"
    assert script.keyphrases == ("pizza", "order", "bye")
    brain = ScriptedBrain(script)
    events: list[Event] = []
    await brain.complete(1, (Message("user", "a pizzas please"),), make_link(events))
    assert spoken(events) == "Which pizza?"
    events = []
    await brain.complete(2, (Message("user", "pizza for three people"),), make_link(events))
    assert spoken(events) == "Pizza for three, coming up."
    events = []
    await brain.complete(3, (Message("user", "bye"),), make_link(events))
    assert events[-2].name == "end_call"


async def test_malformed_toml_names_the_file(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text('greeting = "hi\n[[intents]\n', encoding="utf-8")
    with pytest.raises(ScriptError, match=r"broken\.toml.*not valid TOML"):
        load_script(path)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (('greeting = "Pizza line, hello!"', ""), "'greeting' must be"),
        (('keywords = ["bye"]', "keywords = []"), "intent 'bye': 'keywords'"),
        (('"Which pizza?"', '"Which {pizza}?"'), "unknown placeholder"),
        (('["Pizza for {party}, coming up.", "Which pizza?"]', '"For {party}."'), "last reply"),
        (("end_call = true", 'end_call = "yes"'), "'end_call' must be"),
        (('slots = ["party"]', 'slots = ["size"]'), "'slots' must be"),
    ],
)
async def test_invalid_script_is_explained(
    tmp_path: Path, change: tuple[str, str], complaint: str
) -> None:
    path = tmp_path / "bad.toml"
    assert change[0] in CUSTOM
    path.write_text(CUSTOM.replace(*change), encoding="utf-8")
    with pytest.raises(ScriptError, match=r"bad\.toml") as info:
        load_script(path)
    assert complaint in str(info.value)


async def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(ScriptError, match=r"nowhere\.toml"):
        load_script(tmp_path / "nowhere.toml")
