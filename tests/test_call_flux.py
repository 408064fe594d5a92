"""Whole calls with Deepgram Flux and speculative replies, over real loopback sockets.

The simulated Vobiz caller, our server, the Flux adapter against the fake Deepgram's
``/v2/listen``, OpenAI chat and speech against their fake: nothing of our own is
mocked. The reply is asked for at Flux's eager end of turn, held, and played the
moment the turn ends with the same words; a caller who goes on voids it, and
none of its audio reaches the phone.
"""

from __future__ import annotations

import json
from collections import deque

import trio
from serving import running_server

from adapters.app.settings import ServerSettings
from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings
from adapters.providers.interfaces import Providers
from adapters.providers.openai_chat import ChatSettings, OpenAIChat
from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings
from adapters.simulator.caller import simulate
from adapters.simulator.script import CallerLine, CallerScript
from engine.config import AgentConfig
from engine.replay import replay
from fixtures.fake_deepgram import run_fake_deepgram
from fixtures.fake_flux import spoken
from fixtures.fake_openai import FakeOpenAI, Reply, run_fake_openai

REPLY = "Certainly, a table for two at eight. Shall I book it?"


async def call(tmp_path, lines: list[str]) -> tuple[list[dict], list[str], object]:
    """One call: the caller says ``lines`` (each after the agent), then hangs up."""
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="k" * 32)
    config = AgentConfig(greeting="Hello, Roma restaurant.")
    script = CallerScript(lines=tuple(CallerLine(line) for line in lines), hang_up_after=12.0)
    fake_openai = FakeOpenAI(script=lambda messages: Reply(REPLY))
    async with (
        run_fake_deepgram(transcripts=deque(lines)) as deepgram,
        run_fake_openai(fake_openai) as openai,
    ):
        listen = FluxSettings(api_key=deepgram.api_key, url=deepgram.url)
        providers = Providers(
            stt=lambda: DeepgramFlux(listen),
            llm=OpenAIChat(ChatSettings(base_url=openai.base_url, api_key="test")),
            tts=OpenAISpeech(SpeechSettings(base_url=openai.base_url, api_key="test")),
            names={"stt": "deepgram-flux", "llm": "openai", "tts": "openai"},
        )
        async with running_server(settings, config, providers) as app:
            result = await simulate(app.base_url, script, speak=spoken)
            with trio.fail_after(30):
                while not app.switchboard.finished_logs:
                    await trio.sleep(0.05)
            (log,) = app.switchboard.finished_logs
    lines_ = log.read_text().split("\n")[:-1]
    return [json.loads(line) for line in lines_], lines_, result


def commands(records: list[dict], name: str) -> list[dict]:
    return [r for r in records if r.get("command") == name]


async def test_a_reply_prepared_at_the_eager_end_of_turn_is_played_when_the_turn_ends(
    tmp_path, autojump_clock
):
    records, lines, result = await call(tmp_path, ["I would like a table for two tonight"])
    assert replay(lines).identical
    (asked,) = [r for r in commands(records, "StartCompletion") if r["utterance"] > 1]
    assert asked["speculative"] is True
    assert asked["messages"][-1] == {
        "role": "user",
        "content": "I would like a table for two tonight",
    }
    events = [r["event"] for r in records if r["kind"] == "event"]
    eager = events.index("CallerTurnLikelyOver")
    assert events.index("CallerSpeechStarted") < eager
    assert "CallerTurnResumed" not in events
    played = [r for r in commands(records, "PlayAudio") if r["utterance"] == asked["utterance"]]
    assert played and played[0]["t"] > asked["t"]
    assert not commands(records, "CancelCompletion")
    (footer,) = [r for r in records if r["kind"] == "footer"]
    assert footer["reason"] == "socket closed"
    (turn,) = result.turns
    assert turn.voice_to_voice is not None and turn.voice_to_voice > 0
    assert result.violations == ()


async def test_a_caller_who_goes_on_voids_the_prepared_reply_and_none_of_it_is_heard(
    tmp_path, autojump_clock
):
    records, lines, result = await call(tmp_path, ["I need a table | for two tonight"])
    assert replay(lines).identical
    asked = [r for r in commands(records, "StartCompletion") if r["utterance"] > 1]
    assert [r["speculative"] for r in asked] == [True, True]
    void, kept = asked[0]["utterance"], asked[1]["utterance"]
    assert asked[0]["messages"][-1]["content"] == "I need a table"
    assert asked[1]["messages"][-1]["content"] == "I need a table for two tonight"
    events = [r["event"] for r in records if r["kind"] == "event"]
    assert events.count("CallerTurnLikelyOver") == 2 and events.count("CallerTurnResumed") == 1
    # The void reply had its first sentence's audio ready; none of it was ever played.
    held = [r for r in records if r.get("event") == "TtsAudio" and r["utterance"] == void]
    assert held, "the speculation got as far as audio before the caller went on"
    assert [r["utterance"] for r in commands(records, "CancelSynthesis")] == [void]
    played = {r["utterance"] for r in commands(records, "PlayAudio")}
    assert void not in played and kept in played
    # The phone heard the agent only after the caller's last word.
    (turn,) = result.turns
    assert turn.voice_to_voice is not None and turn.voice_to_voice > 0
    assert result.violations == ()
