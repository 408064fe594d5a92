"""Deepgram Flux against the loopback fake: real sockets, virtual time."""

from __future__ import annotations

import json

import pytest
import trio
from listening import KEY, play, run_call
from trio_websocket import ConnectionClosed, ConnectionRejected

from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings
from adapters.providers.wsclient import open_client
from engine.events import (
    CallerSpeechStarted,
    CallerTurnLikelyOver,
    CallerTurnResumed,
    Transcript,
)
from fixtures.fake_deepgram import run_fake_deepgram, silence, tone
from fixtures.fake_flux import FluxInvariantBroken, FluxKnobs, TurnTaker


def flux(fake, **overrides) -> DeepgramFlux:
    return DeepgramFlux(FluxSettings(api_key=KEY, url=fake.url, **overrides))


def final(text: str) -> Transcript:
    return Transcript(text, is_final=True, speech_final=True)


def kinds(events: list) -> list[str]:
    return [type(e).__name__ for e in events if not (isinstance(e, Transcript) and not e.is_final)]


async def test_the_url_carries_the_settings_and_the_stream_ends_with_closestream(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        recognizer = flux(fake, keyterms=["Vobiz", "Roma"], eot_threshold=0.8, eot_timeout_ms=3000)

        async def script(send):
            await play(send, silence(0.5))

        await run_call(recognizer, script, events)
        (session,) = fake.flux_sessions
    q = session.query
    assert q == {
        "model": ["flux-general-en"],
        "encoding": ["mulaw"],
        "sample_rate": ["8000"],
        "eot_threshold": ["0.8"],
        "eager_eot_threshold": ["0.5"],
        "eot_timeout_ms": ["3000"],
        "keyterm": ["Vobiz", "Roma"],
    }
    assert session.headers["authorization"] == f"Token {KEY}"
    assert bytes(session.audio) == silence(0.5)
    assert session.empty_frames == 0
    assert session.frames == 7  # 80 ms messages, the last one short when the audio ends
    assert session.control_types() == ["CloseStream"]
    assert session.close_code == 1005  # Flux closes without a status code
    assert session.sent_types()[0] == "Connected"
    assert events == []


async def test_a_turn_is_started_prepared_for_and_ended_with_the_same_words(autojump_clock):
    events: list = []
    times: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("hello there my friend")
        t0 = trio.current_time()

        async def script(send):
            await play(send, silence(0.2) + tone(1.0) + silence(1.0))

        await run_call(flux(fake, chunk_ms=20), script, events, times)
    assert kinds(events) == ["CallerSpeechStarted", "CallerTurnLikelyOver", "Transcript"]
    # The turn's start is stamped with the call time of its first voiced audio.
    assert events[0] == CallerSpeechStarted(at=pytest.approx(t0 + 0.2), source="stt")
    interims = [e.text for e in events if isinstance(e, Transcript) and not e.is_final]
    assert interims[0] == "hello" and "hello there" in interims
    eager = next(i for i, e in enumerate(events) if isinstance(e, CallerTurnLikelyOver))
    assert events[eager] == CallerTurnLikelyOver("hello there my friend")
    assert events[-1] == final("hello there my friend")
    # The eager end of turn came ahead of the end by the fake's lead (150 ms, in 20 ms windows).
    assert times[-1] - times[eager] == pytest.approx(0.14)


async def test_a_caller_who_goes_on_after_a_pause_voids_the_eager_end_of_turn(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("I need a table | for two")

        async def script(send):
            await play(send, tone(0.8) + silence(0.3) + tone(0.5) + silence(1.0))

        await run_call(flux(fake), script, events)
    turn = [e for e in events if not (isinstance(e, Transcript) and not e.is_final)]
    assert turn == [
        CallerSpeechStarted(at=pytest.approx(0.0, abs=1e-6), source="stt"),
        CallerTurnLikelyOver("I need a table"),
        CallerTurnResumed(),
        CallerTurnLikelyOver("I need a table for two"),
        final("I need a table for two"),
    ]


async def test_without_eager_thresholds_no_reply_is_prepared(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("just the end")

        async def script(send):
            await play(send, tone(0.6) + silence(1.0))

        await run_call(flux(fake, eager_eot_threshold=None), script, events)
        assert "eager_eot_threshold" not in fake.flux_sessions[0].query
    assert kinds(events) == ["CallerSpeechStarted", "Transcript"]
    assert events[-1] == final("just the end")


async def test_a_drop_after_the_eager_end_of_turn_voids_the_prepared_reply(autojump_clock):
    """The recognizer that predicted the end is gone; the replayed audio starts the turn again."""
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.extend(["book it", "book it"])  # the replay is heard as a new turn

        async def script(send):
            await play(send, tone(0.6) + silence(0.32))  # past the eager end, short of the end
            assert await fake.drop_listen() == 1
            await play(send, silence(1.5))

        await run_call(flux(fake), script, events)
    assert kinds(events) == [
        "CallerSpeechStarted",
        "CallerTurnLikelyOver",
        "CallerTurnResumed",
        "SttLost",
        "SttRestored",
        "CallerSpeechStarted",
        "CallerTurnLikelyOver",
        "Transcript",
    ]
    assert events[-1] == final("book it")
    # Both starts are stamped with the same first voiced frame: the replay kept its call time.
    starts = [e.at for e in events if isinstance(e, CallerSpeechStarted)]
    assert starts[0] == pytest.approx(starts[1])


async def test_a_threshold_flux_refuses_is_not_retried(autojump_clock):
    events: list = []
    async with run_fake_deepgram(api_key=KEY) as fake:

        async def script(send):
            await play(send, silence(2.0))

        await run_call(flux(fake, eot_threshold=0.6, eager_eot_threshold=0.8), script, events)
        assert fake.rejected == [("/v2/listen", 400)]
    (lost,) = events
    assert lost.reason.endswith("(eager_eot_threshold must not exceed eot_threshold)")


# -- the fake's own protocol, seen by a bare client ----------------------------


async def converse(fake, query: str, talk) -> list[dict]:
    """Connect to the fake's /v2/listen, run ``talk(ws)``, and collect what it sent until close."""
    received: list[dict] = []
    headers = [(b"Authorization", f"Token {KEY}".encode())]
    async with open_client(f"{fake.url}/v2/listen?{query}", headers) as ws:

        async def read():
            try:
                while True:
                    received.append(json.loads(await ws.get_message()))
            except ConnectionClosed:
                pass

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            await talk(ws)
    return received


RAW = "model=flux-general-en&encoding=mulaw&sample_rate=8000"


async def test_every_message_counts_in_sequence_and_a_forced_end_is_manual(autojump_clock):
    async with run_fake_deepgram(api_key=KEY) as fake:
        fake.transcripts.append("cut me off")

        async def talk(ws):
            await ws.send_message(tone(0.6))
            await ws.send_message(json.dumps({"type": "ForceEndTurn"}))
            await ws.send_message(silence(0.3))
            await ws.send_message(json.dumps({"type": "CloseStream"}))

        received = await converse(fake, RAW, talk)
    assert received[0]["type"] == "Connected"
    assert [m["sequence_id"] for m in received] == list(range(len(received)))
    turn = [m for m in received if m["type"] == "TurnInfo" and m["event"] != "Update"]
    assert [m["event"] for m in turn] == ["StartOfTurn", "EndOfTurn"]
    assert turn[1]["trigger"] == "manual" and turn[1]["transcript"] == "cut me off"
    after = [m for m in received if m["type"] == "TurnInfo"][-1]
    assert after["turn_index"] == 1  # it grows after EndOfTurn


async def test_a_silence_past_eot_timeout_ends_the_turn_as_timeout(autojump_clock):
    async with run_fake_deepgram(api_key=KEY, flux=FluxKnobs(eot_silence=2.0)) as fake:
        fake.transcripts.append("well")

        async def talk(ws):
            await ws.send_message(tone(0.5) + silence(1.0))
            await ws.send_message(json.dumps({"type": "CloseStream"}))

        received = await converse(fake, RAW + "&eot_timeout_ms=600", talk)
    (end,) = [m for m in received if m.get("event") == "EndOfTurn"]
    assert end["trigger"] == "timeout"
    assert end["audio_window_end"] == pytest.approx(1.1)


async def test_configure_is_answered_and_a_keepalive_message_is_refused(autojump_clock):
    async with run_fake_deepgram(api_key=KEY) as fake:

        async def talk(ws):
            configure = {"type": "Configure", "thresholds": {"eager_eot_threshold": 0.4}}
            await ws.send_message(json.dumps(configure))
            bad = {"type": "Configure", "thresholds": {"eot_threshold": 0.2}}
            await ws.send_message(json.dumps(bad))
            await ws.send_message(json.dumps({"type": "KeepAlive"}))
            await trio.sleep(1)

        received = await converse(fake, RAW, talk)
        (session,) = fake.flux_sessions
    types = [m["type"] for m in received]
    assert types == ["Connected", "ConfigureSuccess", "ConfigureFailure", "Error"]
    assert received[1]["thresholds"]["eager_eot_threshold"] == 0.4
    assert received[3]["description"] == "Unknown client message type 'KeepAlive'"
    assert session.close_code == 1008


@pytest.mark.parametrize(
    ("query", "detail"),
    [
        (RAW + "&interim_results=true", "Unknown query parameter(s) for Flux: interim_results"),
        ("model=nova-3&encoding=mulaw&sample_rate=8000", "model must be one of"),
        ("model=flux-general-en&encoding=mulaw", "raw audio needs both encoding and sample_rate"),
        ("model=flux-general-en&encoding=mulaw&sample_rate=22050", "sample_rate must be one of"),
        (RAW + "&eager_eot_threshold=0.2", "eager_eot_threshold must be between 0.3 and 0.9"),
        (RAW + "&eot_timeout_ms=100", "eot_timeout_ms must be between 500 and 60000"),
    ],
)
async def test_the_fake_refuses_what_flux_documents_as_invalid(autojump_clock, query, detail):
    async with run_fake_deepgram(api_key=KEY) as fake:
        with pytest.raises(ConnectionRejected) as refused:
            await converse(fake, query, trio.sleep)
    assert refused.value.status_code == 400
    dg_error = dict(refused.value.headers)[b"dg-error"].decode()
    assert dg_error.startswith(detail)


def test_the_fake_will_not_send_what_flux_promises_never_to_send():
    taker = TurnTaker.for_query(
        {"encoding": ["mulaw"], "sample_rate": ["8000"]}, "r", lambda: "", 500.0, FluxKnobs()
    )
    with pytest.raises(FluxInvariantBroken, match="TurnResumed after nothing"):
        taker._turn_info("TurnResumed", "", 0.1)
    with pytest.raises(FluxInvariantBroken, match="EagerEndOfTurn without words"):
        taker._turn_info("EagerEndOfTurn", "", 0.5)
    taker._turn_info("EagerEndOfTurn", "a table", 0.5)
    with pytest.raises(FluxInvariantBroken, match="EndOfTurn 'a table for two' after"):
        taker._turn_info("EndOfTurn", "a table for two", 0.7)
