"""OpenAISpeech against the loopback fake: streaming, conversion, failures, cancellation."""

from __future__ import annotations

import logging

import httpx2
import pytest
import trio

from adapters.media.audio import PhoneEncoder
from adapters.providers.interfaces import ProviderLink
from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings
from engine.events import TtsAudio, TtsDone, TtsFailed
from fixtures.fake_openai import (
    FakeOpenAI,
    Fault,
    Sent,
    loopback_clock,
    run_fake_openai,
    speech_pcm,
)

SPEECH = "/v1/audio/speech"
SENTENCE = "Your order shipped on Monday and arrives on Friday."


@pytest.fixture
def clock():
    return loopback_clock()


class Recorder:
    """A ProviderLink that writes each event onto ``timeline`` next to what the fake sent."""

    def __init__(self, timeline: list) -> None:
        self.timeline = timeline
        self.events: list = []
        self.link = ProviderLink(
            call_id="test-call",
            emit=self.emit,
            now=trio.current_time,
            log=logging.LoggerAdapter(logging.getLogger("test.openai_speech"), {}),
        )

    async def emit(self, event) -> None:
        self.events.append(event)
        self.timeline.append(event)


def make_speech(fake: FakeOpenAI, **overrides) -> OpenAISpeech:
    settings = {"base_url": fake.base_url, "api_key": "sk-test", "max_retries": 0, **overrides}
    return OpenAISpeech(SpeechSettings(**settings))


async def speak(speech: OpenAISpeech, fake: FakeOpenAI, text: str = SENTENCE) -> Recorder:
    rec = Recorder(fake.timeline)
    try:
        await speech.synthesize(3, 2, text, rec.link)
    finally:
        await speech.aclose()
    return rec


def audio_of(events) -> bytes:
    return b"".join(e.audio for e in events if isinstance(e, TtsAudio))


async def test_first_audio_leaves_before_the_response_ends(clock):
    fake = FakeOpenAI(speech_first_byte_delay=0.3, speech_chunk_delay=0.2)
    async with run_fake_openai(fake):
        rec = await speak(make_speech(fake, instructions="Warm and calm.", speed=1.1), fake)

    sent = [x for x in fake.timeline if isinstance(x, Sent)]
    assert len(sent) > 3 and sent[-1].last
    first_audio = next(i for i, x in enumerate(fake.timeline) if isinstance(x, TtsAudio))
    assert first_audio < fake.timeline.index(sent[-1])
    assert all(e.utterance == 3 and e.seq == 2 for e in rec.events)
    assert all(len(e.audio) for e in rec.events if isinstance(e, TtsAudio))
    assert rec.events[-1] == TtsDone(3, 2)
    [body] = fake.bodies(SPEECH)
    assert body == {
        "model": "gpt-4o-mini-tts",
        "voice": "marin",
        "input": SENTENCE,
        "response_format": "pcm",
        "instructions": "Warm and calm.",
        "speed": 1.1,
    }


async def test_audio_is_a_third_of_the_samples_and_chunking_loses_nothing(clock):
    fake = FakeOpenAI(speech_chunk_sizes=(1, 333, 4801, 2, 999))
    async with run_fake_openai(fake):
        rec = await speak(make_speech(fake), fake)

    pcm = speech_pcm(SENTENCE, fake.speech_samples_per_char)
    assert any(x.size % 2 for x in fake.timeline if isinstance(x, Sent))  # odd chunks were sent
    audio = audio_of(rec.events)
    assert len(audio) == len(pcm) // 2 // 3
    whole = PhoneEncoder()
    assert audio == whole.process(pcm) + whole.flush()


async def test_a_fast_voice_is_read_in_pieces_once_the_phone_has_plenty_and_a_slow_one_never(
    clock,
):
    """100 ms chunks every 20 ms (5x real time): the first goes at once, the rest in fewer,
    larger pieces once 0.3 s is queued; every 100 ms (real time): each chunk at once."""
    for delay, fewer in ((0.02, True), (0.1, False)):
        fake = FakeOpenAI(
            speech_chunk_sizes=(4800,), speech_chunk_delay=delay, speech_samples_per_char=1440
        )
        async with run_fake_openai(fake):
            rec = await speak(make_speech(fake), fake)
        chunks = sum(1 for x in fake.timeline if isinstance(x, Sent))
        pieces = [e for e in rec.events if isinstance(e, TtsAudio)]
        assert len(pieces[0].audio) < 800  # the first chunk, at once
        if fewer:
            assert len(pieces) <= chunks * 2 // 3
        else:
            assert len(pieces) >= chunks  # one per chunk (and the encoder's tail)
        whole = PhoneEncoder()
        pcm = speech_pcm(SENTENCE, fake.speech_samples_per_char)
        assert audio_of(rec.events) == whole.process(pcm) + whole.flush()


async def test_blank_text_needs_no_request(clock):
    fake = FakeOpenAI()
    async with run_fake_openai(fake):
        rec = await speak(make_speech(fake), fake, text="  ")
    assert rec.events == [TtsDone(3, 2)]
    assert fake.requests == []


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        (Fault("rate_limit"), "rate_limited"),
        (Fault("server_error"), "server_error 500"),
        (Fault("hang"), "timeout"),
        (Fault("drop", after_chunks=2), "connection"),
    ],
)
async def test_failures_become_tts_failed(clock, caplog, fault, reason):
    fake = FakeOpenAI()
    fake.speech_faults.append(fault)
    async with run_fake_openai(fake):
        rec = await speak(make_speech(fake, timeout=httpx2.Timeout(2.0, connect=1.0)), fake)
    assert rec.events[-1] == TtsFailed(3, 2, reason)
    assert f"failed: {reason}" in caplog.text


async def test_cancelling_mid_sentence_stops_at_once(clock):
    fake = FakeOpenAI(speech_chunk_delay=1.0)
    async with run_fake_openai(fake):
        speech = make_speech(fake)
        rec = Recorder(fake.timeline)
        with trio.move_on_after(2.5) as scope:
            await speech.synthesize(3, 2, SENTENCE, rec.link)
        # The scope's deadline ends it at exactly 2.5 s: nothing waited for the rest.
        assert scope.cancelled_caught
        assert trio.current_time() == pytest.approx(scope.deadline)
        assert TtsDone(3, 2) not in rec.events
        assert 0 < len(audio_of(rec.events)) < len(speech_pcm(SENTENCE)) // 6
        # The voice is usable again after a cancelled stream.
        await speech.synthesize(4, 0, "Hi.", rec.link)
        await speech.aclose()
    assert rec.events[-1] == TtsDone(4, 0)


async def test_missing_api_key_is_a_failure_not_a_crash(clock, monkeypatch):
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    speech = OpenAISpeech(SpeechSettings(base_url="http://127.0.0.1:9/v1", api_key=None))
    rec = Recorder([])
    await speech.synthesize(3, 2, SENTENCE, rec.link)
    assert rec.events == [TtsFailed(3, 2, "error OpenAIError")]


async def test_a_refused_key_fails_the_sentence(clock):
    fake = FakeOpenAI(api_key="sk-the-right-one")  # as strict as the real API: 401 otherwise
    async with run_fake_openai(fake):
        rec = await speak(make_speech(fake), fake)
    assert rec.events[-1] == TtsFailed(3, 2, "http_error 401")
