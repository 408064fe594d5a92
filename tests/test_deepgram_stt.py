"""Deepgram live STT against the loopback fake: real sockets, virtual time."""

from __future__ import annotations

import json
import logging

import pytest
import trio
from trio_websocket import ConnectionClosed, ConnectionRejected

from adapters.providers.deepgram_listen import AudioBacklog
from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT
from adapters.providers.interfaces import ProviderLink
from adapters.providers.wsclient import open_client
from engine.events import CallerPaused, CallerSpeechStarted, SttLost, SttRestored, Transcript
from fixtures.fake_deepgram import run_fake_deepgram, silence, tone

KEY = "test-key"


def make_link(events: list) -> ProviderLink:
    async def emit(event) -> None:
        events.append(event)

    log = logging.LoggerAdapter(logging.getLogger("test.deepgram"), {"call_id": "c1"})
    return ProviderLink(call_id="c1", emit=emit, now=trio.current_time, log=log)


def settings_for(fake, **overrides) -> DeepgramSettings:
    return DeepgramSettings(api_key=KEY, url=fake.url, **overrides)


async def play(send: trio.MemorySendChannel, audio: bytes) -> None:
    """Deliver audio the way the phone does: 20 ms frames, 20 ms apart."""
    for i in range(0, len(audio), 160):
        await send.send(audio[i : i + 160])
        await trio.sleep(0.02)


async def run_call(settings: DeepgramSettings, script, events: list) -> None:
    """Run the recognizer while ``script(send)`` plays audio, then end the audio."""
    send, recv = trio.open_memory_channel[bytes](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(DeepgramSTT(settings).run, recv, make_link(events))
        async with send:
            await script(send)


def utterance(seconds: float = 1.0) -> bytes:
    return silence(0.2) + tone(seconds) + silence(1.6)


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


async def test_keepalive_is_sent_while_audio_pauses(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("still there")

        async def script(send):
            await play(send, silence(0.2))
            await trio.sleep(12)  # longer than the service's 10 s idle limit
            await play(send, utterance(0.6))

        await run_call(settings_for(fake), script, events)
        sessions = fake.listen_sessions
    assert len(sessions) == 1, "the idle limit must not have closed the stream"
    assert sessions[0].control_types() == ["KeepAlive"] * 4 + ["CloseStream"]
    assert Transcript("still there", is_final=True, speech_final=True) in events


async def test_without_keepalive_the_fake_closes_1011_and_we_reconnect(autojump_clock, caplog):
    caplog.set_level(logging.WARNING)
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("are you there")

        async def script(send):
            await play(send, silence(0.2))
            await trio.sleep(11)
            await play(send, utterance(0.6))

        await run_call(settings_for(fake, keepalive_after=60), script, events)
        sessions = fake.listen_sessions
    assert [s.close_code for s in sessions] == [1011, 1000]
    assert "connection closed with 1011" in caplog.text
    assert Transcript("are you there", is_final=True, speech_final=True) in events


async def test_dropped_socket_reconnects_and_next_utterance_is_heard(autojump_clock, caplog):
    caplog.set_level(logging.WARNING)
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.extend(["first question", "second question"])

        async def script(send):
            await play(send, utterance(0.8))
            assert await fake.drop_listen() == 1
            await play(send, tone(0.8) + silence(1.6))

        await run_call(settings_for(fake), script, events)
        sessions = fake.listen_sessions
    finals = [e.text for e in events if isinstance(e, Transcript) and e.is_final]
    assert finals == ["first question", "second question"]
    assert len(sessions) == 2
    assert "reconnecting in 0.25 s (attempt 1)" in caplog.text
    # Audio that arrived while disconnected was replayed on the new connection.
    assert tone(0.8) in bytes(sessions[1].audio)


async def test_refused_handshake_401_is_not_retried(autojump_clock, caplog):
    caplog.set_level(logging.WARNING)
    events: list = []
    async with run_fake_deepgram(api_key="another-key") as fake:

        async def script(send):
            await play(send, utterance(0.6))
            await trio.sleep(5)
            await play(send, utterance(0.6))

        with trio.fail_after(60):
            await run_call(settings_for(fake), script, events)
        assert fake.rejected == [("/v1/listen", 401)]
        assert fake.listen_sessions == []
    assert events == [SttLost("handshake refused with HTTP 401 (Invalid credentials.)")]
    assert "HTTP 401 (Invalid credentials.)" in caplog.text
    assert "not retrying" in caplog.text


async def test_server_error_on_handshake_is_retried_with_backoff(autojump_clock, caplog):
    caplog.set_level(logging.WARNING)
    events: list = []
    async with run_fake_deepgram(api_key=KEY, refuse_listen=503) as fake:
        fake.transcripts.append("finally")

        async def script(send):
            await play(send, silence(1.5))
            fake.refuse_listen = None
            await play(send, utterance(0.6))

        await run_call(settings_for(fake), script, events)
        refusals = len(fake.rejected)
    assert refusals >= 3
    for delay in ("0.25", "0.50", "1.00"):
        assert f"reconnecting in {delay} s" in caplog.text
    assert Transcript("finally", is_final=True, speech_final=True) in events


def test_backlog_is_bounded_and_confirmed_by_finals():
    backlog = AudioBacklog(max_bytes=480)
    for i in range(5):
        backlog.append(bytes([i]) * 160, at=i * 0.02)
    assert [c.index for c in backlog.chunks] == [2, 3, 4]  # the oldest fell out
    for n, chunk in enumerate(backlog.chunks):
        chunk.sent_at = n * 160
    assert backlog.call_time_of(200) == pytest.approx(0.06 + 40 / 8000)
    backlog.confirm(320)
    assert [c.index for c in backlog.chunks] == [4]
    backlog.new_connection()
    assert backlog.call_time_of(0) is None


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


async def test_an_outage_is_reported_and_what_the_caller_said_meanwhile_is_heard_after(
    autojump_clock, caplog
):
    """Deepgram is down for 15 s while the caller talks: the engine is told, nothing is lost."""
    caplog.set_level(logging.WARNING)
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.extend(["before the outage", "during the outage"])

        async def script(send):
            await play(send, utterance(0.8))
            fake.refuse_listen = 503
            assert await fake.drop_listen() == 1
            await play(send, silence(1.0) + tone(1.2) + silence(12.0))
            fake.refuse_listen = None
            await play(send, silence(3.0))

        await run_call(settings_for(fake), script, events)
    finals = [e.text for e in events if isinstance(e, Transcript) and e.is_final]
    assert finals == ["before the outage", "during the outage"]
    lost = [i for i, e in enumerate(events) if isinstance(e, SttLost)]
    back = [i for i, e in enumerate(events) if isinstance(e, SttRestored)]
    assert len(lost) == len(back) == 1 and lost[0] < back[0]
    assert events.index(Transcript("during the outage", is_final=True, speech_final=True)) > back[0]
