"""Whole calls over real loopback sockets: the simulated Vobiz caller, our server, and the
provider fakes (Deepgram listen, OpenAI chat and speech). Nothing of our own is mocked."""

import json
from collections import deque

import numpy as np
import trio
from serving import running_server

from adapters.app.settings import ServerSettings
from adapters.media.audio import ulaw_encode
from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT
from adapters.providers.interfaces import Providers
from adapters.providers.openai_chat import ChatSettings, OpenAIChat
from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings
from adapters.simulator.caller import simulate
from adapters.simulator.script import CallerLine, CallerScript
from engine.config import AgentConfig
from engine.replay import replay
from fixtures.fake_deepgram import run_fake_deepgram
from fixtures.fake_openai import FakeOpenAI, Reply, ToolCall, run_fake_openai


def loud(text: str) -> bytes:
    """Stand-in caller speech: a tone the fake recognizer hears, longer for longer lines."""
    seconds = 0.6 + 0.03 * len(text)
    t = np.arange(int(8000 * seconds)) / 8000
    return ulaw_encode((np.sin(2 * np.pi * 300 * t) * 8000).astype(np.int16))


def brain(messages):
    last = [m for m in messages if m["role"] == "user"][-1]["content"]
    if "Sunday" in last:
        return Reply(
            "Sorry, on Sunday we are closed. Goodbye!", (ToolCall("end_call", "{}", "c1"),)
        )
    return Reply(
        "Certainly. We have tables at six, seven and eight. "
        "The terrace is open too. Which would you like?"
    )


def providers(deepgram, openai, **options) -> Providers:
    def stt():
        return DeepgramSTT(DeepgramSettings(api_key=deepgram.api_key, url=deepgram.url))

    return Providers(
        stt=stt,
        llm=OpenAIChat(ChatSettings(base_url=openai.base_url, api_key="test")),
        tts=OpenAISpeech(SpeechSettings(base_url=openai.base_url, api_key="test", model="tts-1")),
        names={"stt": "deepgram", "llm": "openai", "tts": "openai"},
        **options,
    )


async def run_call(tmp_path, script, provider_options=None, speak=loud, **fake_knobs):
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="k" * 32)
    config = AgentConfig(greeting="Hello, Roma restaurant.", false_interruption_timeout=3.0)
    fake = FakeOpenAI(script=brain, speech_chunk_delay=0.02, **fake_knobs)
    transcripts = deque(["I would like a table tonight", "Actually what about Sunday"])
    async with (
        run_fake_deepgram(transcripts=transcripts) as deepgram,
        run_fake_openai(fake) as openai,
        running_server(
            settings, config, providers(deepgram, openai, **(provider_options or {}))
        ) as app,
    ):
        result = await simulate(app.base_url, script, speak=speak)
        for _ in range(100):
            if app.switchboard.finished_logs:
                break
            await trio.sleep(0.05)
        return result, app.switchboard.finished_logs, openai


BARGE_IN = CallerScript(
    lines=(
        CallerLine("I would like a table tonight"),
        CallerLine("Actually what about Sunday", wait_for_agent=False, barge_in_after=0.4),
    ),
    hang_up_after=30.0,
)


async def test_a_call_is_answered_interrupted_and_hung_up_with_a_replayable_log(tmp_path):
    result, logs, openai = await run_call(tmp_path, BARGE_IN)
    assert result.stopped_by_agent, result.transcript
    assert result.cleared >= 1
    assert result.stale_audio_after_clear == 0
    (log,) = logs
    lines = log.read_text().split("\n")[:-1]
    records = [json.loads(line) for line in lines]
    assert records[0]["kind"] == "header" and records[-1]["kind"] == "footer"
    commands = [r["command"] for r in records if r["kind"] == "command"]
    assert "ClearAudio" in commands and commands[-1] == "Hangup"
    outcome = replay(lines)
    assert outcome.identical, outcome.divergence
    # The model heard only what the caller heard of the interrupted reply.
    second = openai.bodies("/v1/chat/completions")[-1]["messages"]
    assert second[-1]["content"] == "Actually what about Sunday"
    interrupted = second[-2]
    assert interrupted["role"] == "assistant"
    assert "Which would you like?" not in interrupted["content"]


async def test_the_caller_hanging_up_mid_reply_leaves_a_complete_log(tmp_path):
    script = CallerScript(lines=(CallerLine("I would like a table tonight"),), hang_up_after=4.0)
    result, logs, _ = await run_call(tmp_path, script)
    assert not result.stopped_by_agent
    (log,) = logs
    lines = log.read_text().split("\n")[:-1]
    footer = json.loads(lines[-1])
    assert footer["kind"] == "footer"
    assert footer["reason"] == "socket closed"
    assert replay(lines).identical


async def test_the_local_vad_alone_drives_barge_in_beside_a_cloud_recognizer(tmp_path):
    from adapters.media.vad import LocalVad
    from adapters.offline.espeak import Espeak

    voice = Espeak(voice="en-us+f2").synthesize_ulaw8k
    options = {"vad": LocalVad(), "stt_speech_events": False}
    result, logs, _ = await run_call(tmp_path, BARGE_IN, options, speak=voice)
    assert result.cleared >= 1
    assert result.stale_audio_after_clear == 0
    (log,) = logs
    records = [json.loads(line) for line in log.read_text().split("\n")[:-1]]
    sources = {r["source"] for r in records if r.get("event") == "CallerSpeechStarted"}
    assert sources == {"vad"}
    assert replay(log.read_text().split("\n")[:-1]).identical


async def test_a_failing_model_is_answered_with_the_apology_and_the_call_goes_on(tmp_path):
    from fixtures.fake_openai import Fault

    faults = deque([Fault("server_error"), Fault("server_error")])  # the one retry fails too
    script = CallerScript(lines=(CallerLine("I would like a table tonight"),), hang_up_after=9.0)
    _, logs, _ = await run_call(tmp_path, script, chat_faults=faults)
    (log,) = logs
    lines = log.read_text().split("\n")[:-1]
    records = [json.loads(line) for line in lines]
    failed = [r for r in records if r.get("event") == "LlmFailed"]
    assert failed and failed[0]["reason"].startswith("server_error 500")
    said = [r["text"] for r in records if r.get("command") == "Synthesize"]
    assert AgentConfig().apology in said
    moves = [(r["from"], r["to"]) for r in records if r["kind"] == "transition"]
    assert moves[-2:] == [("speaking", "listening"), ("listening", "ended")]
    assert replay(lines).identical


def cough_or_loud(text: str) -> bytes:
    """A 200 ms burst of noise for ``(cough)``: sound without words; other lines as ``loud``."""
    if text != "(cough)":
        return loud(text)
    noise = np.random.default_rng(7).normal(0, 6000, 1600).clip(-32000, 32000)
    return ulaw_encode(noise.astype(np.int16))


async def test_a_cough_in_the_simulator_resumes_the_reply_within_150_ms_of_the_empty_final(
    tmp_path, autojump_clock
):
    """The simulated caller coughs into the agent's reply over real sockets: the reply is
    cleared, the recognizer's empty final comes, and the reply resumes at once."""
    first_byte = 0.05
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="k" * 32)
    config = AgentConfig(greeting="Hello, Roma restaurant.")
    fake = FakeOpenAI(script=brain, speech_first_byte_delay=first_byte, speech_chunk_delay=0.02)
    script = CallerScript(
        lines=(
            CallerLine("I would like a table tonight"),
            CallerLine("(cough)", wait_for_agent=False, barge_in_after=1.0),
        ),
        hang_up_after=14.0,
    )
    async with (
        run_fake_deepgram(transcripts=deque(["I would like a table tonight", ""])) as deepgram,
        run_fake_openai(fake) as openai,
        running_server(settings, config, providers(deepgram, openai)) as app,
    ):
        result = await simulate(app.base_url, script, speak=cough_or_loud)
        with trio.fail_after(10):
            while not app.switchboard.finished_logs:
                await trio.sleep(0.05)
        (log,) = app.switchboard.finished_logs
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert replay(log.read_text().splitlines()).identical
    cleared = next(r["t"] for r in records if r.get("command") == "ClearAudio")
    empty_final = next(
        r["t"]
        for r in records
        if r.get("event") == "Transcript" and r["t"] > cleared and r["is_final"] and not r["text"]
    )
    resumed = next(r["t"] for r in records if r.get("command") == "PlayAudio" and r["t"] > cleared)
    assert resumed - empty_final <= 0.15 + first_byte + 0.02, resumed - empty_final
    assert resumed - cleared < config.false_interruption_timeout  # the timer only a fallback
    # The phone heard the reply go on after the cut, and nothing stale.
    assert result.cleared == 1 and result.stale_audio_after_clear == 0
    cut = next(entry.t for entry in result.transcript if entry.who == "clear")
    assert any(start > cut for start, _audio in result.agent_segments)
