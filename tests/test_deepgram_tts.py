"""Deepgram Aura streaming TTS against the loopback fake: real sockets, virtual time."""

from __future__ import annotations

import json
import logging

import pytest
import trio

from adapters.providers.deepgram_tts import AuraSettings, DeepgramSpeech
from adapters.providers.interfaces import ProviderLink
from adapters.providers.wsclient import open_client
from engine.events import TtsAudio, TtsDone, TtsFailed
from fixtures.fake_deepgram import run_fake_deepgram, speech_audio

KEY = "test-key"


def make_link(events: list, on_event=None) -> ProviderLink:
    async def emit(event) -> None:
        events.append(event)
        if on_event is not None:
            on_event(event)

    log = logging.LoggerAdapter(logging.getLogger("test.deepgram"), {"call_id": "c1"})
    return ProviderLink(call_id="c1", emit=emit, now=trio.current_time, log=log)


def speech_for(fake, **overrides) -> DeepgramSpeech:
    return DeepgramSpeech(AuraSettings(api_key=KEY, url=fake.url, **overrides))


async def test_audio_then_done(autojump_clock):
    events: list = []
    text = "Thanks for calling, how can I help?"
    async with run_fake_deepgram(api_key=KEY) as fake:
        await speech_for(fake).synthesize(3, 1, text, make_link(events))
        (session,) = fake.speak_sessions
    assert session.query == {
        "model": ["aura-2-thalia-en"],
        "encoding": ["mulaw"],
        "sample_rate": ["8000"],
    }
    assert session.headers["authorization"] == f"Token {KEY}"
    assert session.received == [
        {"type": "Speak", "text": text},
        {"type": "Flush"},
        {"type": "Close"},
    ]
    audio = [e for e in events if isinstance(e, TtsAudio)]
    assert len(audio) > 1
    assert all((e.utterance, e.seq) == (3, 1) for e in audio)
    assert b"".join(e.audio for e in audio) == speech_audio(text)
    assert events[-1] == TtsDone(3, 1)
    assert len(events) == len(audio) + 1


async def test_time_to_first_byte_is_waited_for(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY, tts_first_byte=0.4) as fake:
        t0 = trio.current_time()
        await speech_for(fake).synthesize(1, 0, "Hi.", make_link(events))
    assert trio.current_time() - t0 >= 0.4
    assert events[-1] == TtsDone(1, 0)


async def test_empty_text_is_done_without_a_connection(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        await speech_for(fake).synthesize(1, 2, "  ", make_link(events))
        assert fake.speak_sessions == []
    assert events == [TtsDone(1, 2)]


async def test_cancel_sends_clear_and_stops_at_once(autojump_clock):
    events: list = []
    first_audio = trio.Event()

    def on_event(event) -> None:
        if isinstance(event, TtsAudio):
            first_audio.set()

    async with run_fake_deepgram(api_key=KEY, tts_chunk_delay=0.05) as fake:
        link = make_link(events, on_event)
        async with trio.open_nursery() as nursery:
            scope = trio.CancelScope()

            async def speak() -> None:
                with scope:
                    await speech_for(fake).synthesize(2, 0, "A rather long sentence. " * 5, link)

            nursery.start_soon(speak)
            await first_audio.wait()
            cancelled_at = trio.current_time()
            scope.cancel()
        stopped_after = trio.current_time() - cancelled_at
        heard = len(events)
        await trio.sleep(1)  # the fake would keep sending if it had not been cleared
        (session,) = fake.speak_sessions
    assert session.received_types() == ["Speak", "Flush", "Clear"]
    assert stopped_after < 0.1
    assert len(events) == heard
    assert all(isinstance(e, TtsAudio) for e in events)
    assert sum(len(e.audio) for e in events) < len(speech_audio("A rather long sentence. " * 5))


@pytest.mark.parametrize(
    ("knobs", "reason"),
    [
        ({"refuse_speak": 401}, "handshake failed: HTTP 401 Invalid credentials."),
        ({"refuse_speak": 402}, "handshake failed: HTTP 402"),
        ({"speak_close_code": 1011}, "closed with 1011 (fake synthesis failure)"),
        ({"tts_first_byte": 30.0}, "no reply within 5.0 s"),
    ],
)
async def test_errors_become_tts_failed(autojump_clock, caplog, knobs, reason):
    caplog.set_level(logging.WARNING)
    events: list = []
    async with run_fake_deepgram(api_key=KEY, **knobs) as fake:
        await speech_for(fake).synthesize(4, 2, "Hello.", make_link(events))
    assert len(events) == 1
    (failed,) = events
    assert isinstance(failed, TtsFailed)
    assert (failed.utterance, failed.seq) == (4, 2)
    assert failed.reason.startswith(reason)
    assert "sentence 4/2 failed" in caplog.text


async def test_unreachable_server_becomes_tts_failed(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        url = fake.url
    # The fake is gone: nothing listens on its port any more.
    speech = DeepgramSpeech(AuraSettings(api_key=KEY, url=url))
    await speech.synthesize(1, 1, "Hello.", make_link(events))
    assert len(events) == 1
    assert isinstance(events[0], TtsFailed)
    assert "handshake failed" in events[0].reason


async def test_fake_answers_clear_with_cleared(autojump_clock):
    async with run_fake_deepgram(api_key=KEY, tts_chunk_delay=0.05) as fake:
        url = f"{fake.url}/v1/speak?model=aura-2-thalia-en&encoding=mulaw&sample_rate=8000"
        headers = [(b"Authorization", f"Token {KEY}".encode())]
        async with open_client(url, headers, connect_timeout=5) as ws:
            await ws.send_message(json.dumps({"type": "Speak", "text": "Hello there. " * 10}))
            await ws.send_message(json.dumps({"type": "Flush"}))
            assert isinstance(await ws.get_message(), bytes)
            await ws.send_message(json.dumps({"type": "Clear"}))
            while isinstance(message := await ws.get_message(), bytes):
                pass  # audio already on the wire before the Clear
            assert json.loads(message) == {"type": "Cleared", "sequence_id": 0}
            await ws.send_message(json.dumps({"type": "Speak", "text": "Bye."}))
            await ws.send_message(json.dumps({"type": "Flush"}))
            audio = b""
            while isinstance(message := await ws.get_message(), bytes):
                audio += message
            assert json.loads(message) == {"type": "Flushed", "sequence_id": 1}
            assert audio == speech_audio("Bye.")
