"""The benchmarks' bare-h11 OpenAI fake answers the real adapters like the quart fake does."""

import itertools
import logging

import pytest
import trio

from adapters.providers.interfaces import ProviderLink
from adapters.providers.openai_chat import ChatSettings, OpenAIChat
from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings
from engine import events as ev
from engine.commands import Message
from fixtures.fake_openai import (
    FakeOpenAI,
    Reply,
    loopback_clock,
    run_fake_openai,
    run_lean_fake_openai,
)

REPLY = "Certainly, we have tables at six. Which time would you like?"


async def _talk(base_url: str) -> list:
    seen: list = []

    async def emit(event) -> None:
        seen.append(event)

    link = ProviderLink(
        "c", emit, trio.current_time, logging.LoggerAdapter(logging.getLogger(), {})
    )
    chat = OpenAIChat(ChatSettings(base_url=base_url, api_key="k"))
    voice = OpenAISpeech(SpeechSettings(base_url=base_url, api_key="k", model="tts-1"))
    try:
        await chat.complete(1, (Message("user", "A table?"),), link)
        await chat.complete(2, (Message("user", "Again?"),), link)  # a kept-alive connection
        await voice.synthesize(1, 0, "Certainly, we have tables at six.", link)
    finally:
        await chat.aclose()
        await voice.aclose()
    return seen


async def test_the_lean_fake_streams_what_the_quart_fake_streams():
    def fake() -> FakeOpenAI:
        return FakeOpenAI(script=lambda messages: Reply(REPLY))

    async with run_fake_openai(fake()) as quart_fake:
        expected = await _talk(quart_fake.base_url)
    async with run_lean_fake_openai(fake()) as lean:
        got = await _talk(lean.base_url)

    assert got == expected
    assert [e.text for e in got if isinstance(e, ev.LlmText)][:3] == ["Certainly,", " we", " have"]
    assert sum(len(e.audio) for e in got if isinstance(e, ev.TtsAudio)) > 1000
    assert [p for p, _ in lean.requests] == [
        "/v1/chat/completions",
        "/v1/chat/completions",
        "/v1/audio/speech",
    ]


@pytest.fixture
def clock():
    """Virtual time, jumping only after 20 ms of real idleness (bytes may be in flight)."""
    return loopback_clock()


async def test_the_lean_fake_keeps_its_schedule(clock):
    fake = FakeOpenAI(
        script=lambda messages: Reply(REPLY),
        first_token_delay=0.25,
        token_delay=0.02,
        speech_first_byte_delay=0.15,
        speech_chunk_delay=0.02,
    )
    async with run_lean_fake_openai(fake) as lean:
        await _talk(lean.base_url)
    chat = [s for s in lean.timeline if s.path.endswith("completions")]
    speech = [s for s in lean.timeline if s.path.endswith("speech")]
    # Role chunk at the first-token delay, then one chunk per token delay, to the microsecond.
    gaps = [round(b.at - a.at, 6) for a, b in itertools.pairwise(chat) if b.index]
    assert set(gaps[:10]) == {0.02}
    gaps = [round(b.at - a.at, 6) for a, b in itertools.pairwise(speech)]
    assert gaps and set(gaps) == {0.02}
    # What a benchmark is told about the fake's own timers: every chat chunk but [DONE] and
    # each speech response's first, none of them late in virtual time.
    late_chat = [s for kind, s in lean.late if kind == "chat"]
    late_speech = [s for kind, s in lean.late if kind == "speech"]
    assert len(late_chat) == len([s for s in chat if not s.last])
    assert len(late_speech) == 1
    assert set(late_chat + late_speech) == {0.0}
