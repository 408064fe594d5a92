"""The simulated platform against a tiny fake agent server on loopback, in real time."""

from __future__ import annotations

import base64
import json
import wave
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
from hypercorn.config import Config
from hypercorn.trio import serve
from quart import Response, request, websocket
from quart_trio import QuartTrio
from rich.console import Console

from adapters.simulator.caller import default_speak, print_entry, print_report, simulate
from adapters.simulator.script import CallerLine, CallerScript, heard_part
from adapters.simulator.wire import stream_url
from adapters.vobiz import outbound
from adapters.vobiz import xml as vobiz_xml

SILENT = b"\xff" * 160
LOUD = b"\x00"  # mu-law full scale


def loud(seconds: float) -> bytes:
    return LOUD * int(8000 * seconds)


def speak(text: str) -> bytes:
    return loud(0.3)


@attrs.define
class FakeAgent:
    """Greets, answers each caller utterance, clears on barge-in, says goodbye, stops.

    ``stale`` makes it misbehave: it keeps sending the interrupted reply after clearAudio.
    """

    stale: bool = False
    stop_after: int = 2  # caller utterances before the farewell
    forms: list = attrs.Factory(list)
    received: list = attrs.Factory(list)  # (time, message)
    sent: list = attrs.Factory(list)  # (time, message)

    def app(self) -> QuartTrio:
        app = QuartTrio(__name__)

        @app.post("/answer")
        async def answer():
            self.forms.append(("answer", dict(await request.form)))
            url = f"ws://{request.host}/ws?token=t1&call=x"
            return Response(vobiz_xml.answer_xml(url, None), content_type="application/xml")

        @app.post("/hangup")
        async def hangup():
            self.forms.append(("hangup", dict(await request.form)))
            return ""

        @app.websocket("/ws")
        async def ws():
            await self.talk()

        return app

    async def send(self, text: str) -> None:
        self.sent.append((trio.current_time(), json.loads(text)))
        await websocket.send(text)

    async def play(self, stream: str, seconds: float, name: str) -> None:
        audio = b"\x10" * int(8000 * seconds)
        for i in range(0, len(audio), 160):
            await self.send(outbound.play_audio(stream, audio[i : i + 160]))
        await self.send(outbound.checkpoint(stream, name))

    async def talk(self) -> None:
        stream = ""
        utterances = quiet = 0
        talking = replying = False
        while True:
            msg = json.loads(await websocket.receive())
            self.received.append((trio.current_time(), msg))
            event = msg["event"]
            if event == "start":
                stream = msg["start"]["streamId"]
                await self.play(stream, 0.2, "greeting")
            elif event == "playedStream":
                if msg["name"] == "reply":
                    replying = False
                if msg["name"] == "bye":
                    await self.send(outbound.stop(stream))
                    return
            elif event == "media":
                voiced = base64.b64decode(msg["media"]["payload"]) != SILENT
                if voiced and not talking:
                    talking = True
                    if replying:
                        replying = False
                        await self.send(outbound.clear_audio(stream))
                        if self.stale:
                            for _ in range(3):
                                await self.send(outbound.play_audio(stream, b"\x10" * 160))
                quiet = 0 if voiced else quiet + 1
                if talking and quiet == 5:  # 100 ms of silence ends the utterance
                    talking = False
                    utterances += 1
                    if utterances >= self.stop_after:
                        await self.play(stream, 0.2, "bye")
                    else:
                        replying = True
                        await self.play(stream, 1.0, "reply")

    def times(self, log: list, event: str, **match) -> list[float]:
        return [
            t
            for t, msg in log
            if msg["event"] == event and all(msg.get(k) == v for k, v in match.items())
        ]


@asynccontextmanager
async def serving(agent: FakeAgent):
    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = config.errorlog = None
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(serve, agent.app(), config)
        yield binds[0]
        nursery.cancel_scope.cancel()


BARGE_IN = CallerScript(
    lines=(
        CallerLine("Hello, I need help with my order."),
        CallerLine("Actually, wait.", wait_for_agent=False, barge_in_after=0.3, pause=0.0),
    ),
    hang_up_after=10.0,
)


async def test_a_call_with_barge_in_follows_the_protocol_and_is_measured(tmp_path):
    agent = FakeAgent()
    entries = []
    async with serving(agent) as url:
        result = await simulate(url, BARGE_IN, speak=speak, call_id="c-1", on_event=entries.append)

    # Webhooks: answer first with the call fields, hang-up last with Event=Hangup.
    assert [kind for kind, _ in agent.forms] == ["answer", "hangup"]
    assert agent.forms[0][1]["CallUUID"] == "c-1"
    assert agent.forms[0][1]["Direction"] == "inbound"
    assert agent.forms[1][1]["Event"] == "Hangup"
    assert agent.forms[1][1]["CallUUID"] == "c-1"

    # start, nested ids, then 20 ms media frames numbered in order.
    first = agent.received[0][1]
    assert first["event"] == "start"
    assert first["start"]["callId"] == "c-1"
    assert first["start"]["mediaFormat"] == {"encoding": "audio/x-mulaw", "sampleRate": 8000}
    media = [m["media"] for _, m in agent.received if m["event"] == "media"]
    assert [m["chunk"] for m in media] == list(range(len(media)))
    assert all(len(base64.b64decode(m["payload"])) == 160 for m in media)
    assert media[3]["timestamp"] == "60"

    # The greeting's playedStream comes once its 200 ms could have played out.
    (greeted,) = agent.times(agent.sent, "checkpoint", name="greeting")
    (played,) = agent.times(agent.received, "playedStream", name="greeting")
    assert played - greeted >= 0.18
    # The interrupted reply is never confirmed; clearAudio is answered by clearedAudio.
    assert agent.times(agent.received, "playedStream", name="reply") == []
    (cleared,) = agent.times(agent.sent, "clearAudio")
    (answered,) = agent.times(agent.received, "clearedAudio")
    assert answered > cleared
    assert agent.times(agent.received, "playedStream", name="bye")

    assert result.stopped_by_agent
    assert result.call_id == "c-1"
    assert result.stale_audio_after_clear == 0
    assert result.cleared == 1
    assert [c for _, c in result.played_checkpoints] == ["greeting", "bye"]
    whos = [e.who for e in result.transcript]
    assert whos == ["agent", "caller", "agent", "caller", "clear", "agent"]
    assert entries == list(result.transcript)

    first_turn, barge = result.turns
    assert not first_turn.barge_in and barge.barge_in
    assert 0 < first_turn.voice_to_voice < 1.0  # 100 ms endpointing + loopback
    assert 0 <= barge.barge_in_to_clear < 0.5
    assert barge.started >= first_turn.ended
    assert barge.voice_to_voice > 0

    # The reply is cut at the clear: only ~0.3 s of its 1 s was heard, then nothing until "bye".
    reply = [(s, a) for s, a in result.agent_segments if first_turn.ended < s < barge.ended]
    assert 0.2 * 8000 < sum(len(a) for _, a in reply) < 0.6 * 8000
    assert all(s + len(a) / 8000 <= cleared - agent.received[0][0] + 0.05 for s, a in reply)

    path = tmp_path / "call.wav"
    result.write_wav(path)
    with wave.open(str(path)) as wav:
        assert wav.getnchannels() == 2
        assert wav.getsampwidth() == 2
        assert wav.getframerate() == 8000
        assert abs(wav.getnframes() - result.duration * 8000) <= 2 * 160

    samples = result.stereo_samples()
    caller, agent_track = samples[:, 0], samples[:, 1]
    start = round(first_turn.started * 8000)
    assert abs(int(caller[start + 10])) > 8000 and caller[start - 10] == 0
    # The greeting plays as soon as it arrives (a loopback hop after the stream's start),
    # at its place in the agent's track.
    greeting_at = result.agent_segments[0][0]
    assert greeting_at < 0.1 and abs(int(agent_track[round(greeting_at * 8000) + 10])) > 0

    console = Console(record=True, width=120)
    print_report(result, console)
    print_entry(result.transcript[0], console)
    text = console.export_text()
    assert "voice-to-voice" in text and "Actually, wait." in text


SENTENCES = {
    "greeting": "Hello there.",
    "reply": "Let me tell you about every one of our fine products.",
    "bye": "Goodbye.",
}


async def test_with_agent_text_the_transcript_shows_each_sentence_and_where_it_was_cut():
    entries = []
    asked = []

    def agent_text(call_id: str, name: str) -> str | None:
        asked.append((call_id, name))
        return SENTENCES.get(name)

    async with serving(FakeAgent()) as url:
        result = await simulate(
            url,
            BARGE_IN,
            speak=speak,
            call_id="c-2",
            on_event=entries.append,
            agent_text=agent_text,
        )

    assert entries == list(result.transcript)
    assert [(e.who, e.what) for e in result.transcript if e.who != "clear"] == [
        ("agent", "Hello there."),
        ("caller", "Hello, I need help with my order."),
        ("agent", SENTENCES["reply"]),
        ("caller", "Actually, wait."),
        ("agent", "Goodbye."),
    ]
    assert asked == [("c-2", "greeting"), ("c-2", "reply"), ("c-2", "bye")]
    (clear,) = [e for e in result.transcript if e.who == "clear"]
    (reply,) = [e for e in result.transcript if e.what == SENTENCES["reply"]]
    # The caller barged in 0.3 s into the 1 s reply; the fake clears on the first loud frame.
    into = clear.t - reply.t
    assert 0.25 <= into < 0.6
    said = clear.what.split('after "')[1].rstrip('"')
    assert SENTENCES["reply"].startswith(said) and said.startswith("Let me")
    assert said == heard_part(SENTENCES["reply"], into / 1.0)
    assert [e.t for e in result.transcript] == sorted(e.t for e in result.transcript)


HEARD_PART_CASES = [
    ("One two three four.", 0.0, ""),
    ("One two three four.", 0.2, "One"),
    ("One two three four.", 0.5, "One two"),
    ("One two three four.", 0.99, "One two three"),  # the last word is not over yet
    ("One two three four.", 1.0, "One two three four."),
    ("Hi.", 0.5, ""),
]


@pytest.mark.parametrize(("text", "fraction", "said"), HEARD_PART_CASES)
def test_heard_part_spreads_the_characters_evenly_over_the_audio(text, fraction, said):
    assert heard_part(text, fraction) == said


async def test_stale_audio_after_clear_is_reported():
    agent = FakeAgent(stale=True)
    async with serving(agent) as url:
        result = await simulate(url, BARGE_IN, speak=speak)
    assert result.cleared == 1
    assert result.stale_audio_after_clear == 3


async def test_caller_hangs_up_when_the_agent_never_stops():
    agent = FakeAgent(stop_after=99)
    script = CallerScript(lines=(CallerLine("Hi.", dtmf="1#"),), hang_up_after=3.0)
    async with serving(agent) as url:
        result = await simulate(url, script, speak=speak)
    assert not result.stopped_by_agent
    assert 3.0 <= result.duration < 3.5
    assert [kind for kind, _ in agent.forms] == ["answer", "hangup"]
    assert [e.what for e in result.transcript if e.who == "caller"] == ["Hi.", "[DTMF 1#]"]
    assert [e.who for e in result.transcript].count("agent") == 2
    digits = [m["dtmf"]["digit"] for _, m in agent.received if m["event"] == "dtmf"]
    assert digits == ["1", "#"]
    (turn,) = result.turns
    assert turn.ended - turn.started >= 0.3 + 0.1  # speech, then the keys 100 ms apart


def test_the_default_caller_voice_is_phone_audio():
    audio = default_speak()("Hello there.")
    assert len(audio) > 2000  # a quarter second or more of 8 kHz mu-law
    assert set(audio) != {0xFF}


def test_stream_url_is_the_unescaped_element_text():
    xml = vobiz_xml.answer_xml("ws://h:1/ws?token=a&b=c", None)
    assert stream_url(xml) == "ws://h:1/ws?token=a&b=c"
