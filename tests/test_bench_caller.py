"""The lean load caller against the real server and the provider fakes, over loopback.

It is a real-time pacing tool, so these calls run in real time; the assertions leave
room for a busy machine but still fail if a reply, the clear or the pacing is missing.
"""

import json

import numpy as np
import trio
from serving import running_server
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage
from wsproto.handshake import H11Handshake

from adapters.app.settings import ServerSettings
from adapters.media.audio import ulaw_encode
from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT
from adapters.providers.interfaces import Providers
from adapters.providers.openai_chat import ChatSettings, OpenAIChat
from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings
from adapters.simulator.script import CallerLine, CallerScript
from adapters.vobiz import outbound
from bench.caller import client_text_frame, played_seconds, run_calls
from engine.config import AgentConfig
from fixtures.fake_deepgram import run_fake_deepgram
from fixtures.fake_openai import FakeOpenAI, Reply, run_fake_openai

LINE = "A table for two"


def loud(text: str) -> bytes:
    seconds = 0.4 + 0.03 * len(text)
    t = np.arange(int(8000 * seconds)) / 8000
    return ulaw_encode((np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16))


def providers(deepgram, openai) -> Providers:
    def stt():
        return DeepgramSTT(
            DeepgramSettings(api_key=deepgram.api_key, url=deepgram.url, endpointing=200)
        )

    return Providers(
        stt=stt,
        llm=OpenAIChat(ChatSettings(base_url=openai.base_url, api_key="test")),
        tts=OpenAISpeech(SpeechSettings(base_url=openai.base_url, api_key="test", model="tts-1")),
        names={"stt": "deepgram", "llm": "openai", "tts": "openai"},
    )


SCRIPT = CallerScript(
    lines=(
        CallerLine(LINE, pause=0.2),
        CallerLine(LINE, wait_for_agent=False, barge_in_after=0.3, pause=0),
    ),
    hang_up_after=5.0,
)


async def test_two_lean_calls_get_replies_and_a_clean_barge_in(tmp_path):
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="k" * 32)
    config = AgentConfig(greeting="Hello, Roma.", idle_timeout=60.0)
    fake = FakeOpenAI(
        script=lambda messages: Reply(
            "Certainly, we have tables at six, seven and eight. The terrace is open too."
        ),
        speech_chunk_delay=0.02,
    )
    async with (
        run_fake_deepgram(transcriber=lambda i: LINE, idle_timeout=60) as deepgram,
        run_fake_openai(fake) as openai,
        running_server(settings, config, providers(deepgram, openai)) as app,
    ):
        with trio.fail_after(20):
            outcomes = await run_calls(app.base_url, SCRIPT, speak=loud, starts=(0.0, 0.1))
        with trio.fail_after(5):  # the server finishes both logs after the hang-ups
            await app.switchboard.idle.wait()
    assert len(outcomes) == 2
    for out in outcomes:
        assert out.error is None, out.error
        assert not out.stopped_by_agent
        assert [t.barge_in for t in out.turns] == [False, True]
        first, barge = out.turns
        assert first.voice_to_voice is not None
        # The fakes answer in well under a second; 3 s leaves room for a busy box.
        assert 0.1 < first.voice_to_voice < 3.0
        assert barge.barge_in_to_clear is not None and 0 < barge.barge_in_to_clear < 2.0
        assert out.cleared >= 1
        assert out.stale_audio_after_clear == 0
        assert out.played_checkpoints >= 1
        # Paced for the whole call, 50 frames a second.
        assert abs(out.frames_sent - SCRIPT.hang_up_after / 0.02) <= 2
        assert out.frames_late < out.frames_sent / 2
    # Both calls reached the server's logs, and ended.
    assert len(app.switchboard.finished_logs) == 2
    for path in app.switchboard.finished_logs:
        records = [json.loads(line) for line in path.read_text().split("\n")[:-1]]
        assert records[-1]["kind"] == "footer"


def test_hand_made_frames_parse_as_client_text_frames():
    """A zero-key masked frame is what a server's WebSocket parser accepts, at every size."""
    server = H11Handshake(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="x", target="/ws")))
    request = next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    assert isinstance(next(client.events()), AcceptConnection)
    conn = server.connection
    assert conn is not None and request.target == "/ws"
    for size in (0, 125, 126, 330, 65535, 65536):
        text = "x" * size
        conn.receive_data(client_text_frame(text.encode()))
        got = "".join(e.data for e in conn.events() if isinstance(e, TextMessage))
        assert got == text


def test_play_audio_duration_comes_from_the_base64_length():
    for n in (1, 2, 3, 160, 4000, 4001):
        frame = outbound.play_audio("stream-1", b"\xff" * n)
        assert played_seconds(frame) == n / 8000
    assert played_seconds(outbound.clear_audio("s")) is None


def test_the_phone_counts_holes_inside_an_utterance_not_between_turns():
    from bench.caller import Playout

    phone = Playout()
    phone.audio(0.0, 0.5)  # utterance 1, sentence 0 ...
    phone.audio(0.6, 0.5)  # ... a 100 ms hole inside the sentence
    phone.checkpoint("1.0")
    phone.audio(1.2, 0.5)  # sentence 1 came 100 ms late: a hole inside the utterance
    phone.checkpoint("1.1")
    phone.phrase()  # the caller answers
    phone.audio(5.0, 1.0)  # utterance 2: a new turn, not a hole
    phone.checkpoint("2.0")
    phone.audio(6.0, 1.0)  # back to back: no hole
    phone.clear(6.5)  # a barge-in cuts half a second
    phone.audio(9.0, 0.5)  # the next reply, after a clear: not a hole
    phone.checkpoint("3.0")
    seconds, holes, dry_utterances, utterances = phone.holes()
    assert holes == 2 and round(seconds, 6) == 0.2
    assert (dry_utterances, utterances) == (1, 3)
    assert phone.played == 0.5 + 0.5 + 0.5 + 1.0 + 0.5 + 0.5


def test_a_hole_before_a_cut_sentence_is_judged_by_whether_the_caller_spoke():
    from bench.caller import Playout

    phone = Playout()
    phone.audio(0.0, 0.5)
    phone.checkpoint("1.0")
    phone.audio(0.7, 0.5)  # sentence 1 late by 200 ms, then cut before its checkpoint
    phone.clear(0.9)
    phone.phrase()
    phone.audio(3.0, 0.5)
    phone.checkpoint("2.0")
    seconds, holes, _, _ = phone.holes()
    assert holes == 1 and round(seconds, 6) == 0.2
