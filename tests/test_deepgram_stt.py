"""Deepgram live STT against the loopback fake: real sockets, virtual time."""

from __future__ import annotations

import json

import pytest
import trio
from listening import KEY, play, utterance
from listening import run_call as run_recognizer
from trio_websocket import ConnectionClosed, ConnectionRejected

from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT
from adapters.providers.wsclient import open_client
from engine.events import CallerPaused, CallerSpeechStarted, Transcript
from fixtures.fake_deepgram import run_fake_deepgram, silence, tone


def settings_for(fake, **overrides) -> DeepgramSettings:
    return DeepgramSettings(api_key=KEY, url=fake.url, **overrides)


async def run_call(settings: DeepgramSettings, script, events: list) -> None:
    await run_recognizer(DeepgramSTT(settings), script, events)


async def test_query_string_and_auth_carry_the_settings(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        settings = settings_for(fake, keyterms=["Vobiz", "Acme Corp"], endpointing=450)

        async def script(send):
            await play(send, silence(0.5))

        await run_call(settings, script, events)
        (session,) = fake.listen_sessions
    q = session.query
    assert q["model"] == ["nova-3"]
    assert q["language"] == ["en"]
    assert q["encoding"] == ["mulaw"]
    assert q["sample_rate"] == ["8000"]
    assert q["channels"] == ["1"]
    assert q["interim_results"] == ["true"]
    assert q["endpointing"] == ["450"]
    assert q["utterance_end_ms"] == ["1000"]
    assert q["vad_events"] == ["true"]
    assert q["smart_format"] == ["true"]
    assert q["keyterm"] == ["Vobiz", "Acme Corp"]
    assert session.headers["authorization"] == f"Token {KEY}"
    assert session.empty_frames == 0
    assert bytes(session.audio) == silence(0.5)
    assert session.control_types() == ["CloseStream"]
    assert session.close_code == 1000
    assert session.sent_types()[-1] == "Metadata"


async def test_utterance_becomes_events_in_order(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("hello there my friend")
        t0 = trio.current_time()

        async def script(send):
            await play(send, utterance(1.0))

        await run_call(settings_for(fake), script, events)
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "CallerSpeechStarted"
    assert events[0] == CallerSpeechStarted(at=pytest.approx(t0 + 0.2), source="stt")
    interims = [e for e in events if isinstance(e, Transcript) and not e.is_final]
    assert interims, kinds
    assert all(e.text for e in interims)
    finals = [e for e in events if isinstance(e, Transcript) and e.is_final]
    assert finals == [Transcript("hello there my friend", is_final=True, speech_final=True)]
    assert isinstance(events[-1], CallerPaused)
    assert kinds.index("CallerPaused") > events.index(finals[0]) > events.index(interims[-1])


async def test_empty_interims_are_skipped_and_an_empty_turn_end_is_reported(autojump_clock):
    """Noise with no words: the engine hears that (an agent it interrupted may resume)."""
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("")  # noise the recognizer found no words in

        async def script(send):
            await play(send, utterance(0.6))

        await run_call(settings_for(fake), script, events)
        sent = fake.listen_sessions[0].sent_types()
    assert "Results" in sent
    assert [type(e) for e in events] == [CallerSpeechStarted, Transcript, CallerPaused]
    assert events[1] == Transcript("", is_final=True, speech_final=True)


# -- the fake's own protocol, seen by a bare client ----------------------------


async def test_fake_finalize_and_closestream(autojump_clock):
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("cut short")
        url = f"{fake.url}/v1/listen?encoding=mulaw&sample_rate=8000&interim_results=false"
        headers = [(b"Authorization", f"Token {KEY}".encode())]
        async with open_client(url, headers, connect_timeout=5) as ws:
            await ws.send_message(tone(0.4))
            await ws.send_message(json.dumps({"type": "Finalize"}))
            final = json.loads(await ws.get_message())
            await ws.send_message(json.dumps({"type": "CloseStream"}))
            metadata = json.loads(await ws.get_message())
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
    assert final["type"] == "Results"
    assert final["is_final"] and final["from_finalize"]
    assert final["channel"]["alternatives"][0]["transcript"] == "cut short"
    assert metadata["type"] == "Metadata"
    assert metadata["duration"] == pytest.approx(0.4)
    assert closed.value.reason.code == 1000


async def test_fake_refuses_a_bad_key_with_dg_error(autojump_clock):
    async with run_fake_deepgram(api_key=KEY) as fake:
        headers = [(b"Authorization", b"Token wrong")]
        with pytest.raises(ConnectionRejected) as refused:
            async with open_client(f"{fake.url}/v1/listen", headers, connect_timeout=5):
                pass
    assert refused.value.status_code == 401
    assert (b"dg-error", b"Invalid credentials.") in refused.value.headers
    assert json.loads(refused.value.body)["err_code"] == "INVALID_AUTH"
