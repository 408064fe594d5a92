"""``/metrics``: scraped over a real socket and read with prometheus-client's own parser, after
real calls (the simulated caller, the Deepgram and OpenAI fakes); the multiprocess mode with
real processes; the figures it takes from call logs against the logs' own footers."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import textwrap
from collections import deque
from pathlib import Path

import httpx
import pytest
import trio
import trio_websocket
from prometheus_client.parser import text_string_to_metric_families
from serving import finished, running_server, start, wait_live
from stand_ins import Ear, quiet
from test_call_e2e import BARGE_IN, brain, loud, providers

from adapters.app.settings import ServerSettings
from adapters.console.callview import call_view
from adapters.ops import metrics
from adapters.providers.wsclient import open_client
from adapters.simulator.caller import simulate
from adapters.simulator.wire import stream_url
from engine.calllog import read_log, split_log
from engine.config import AgentConfig
from engine.latency import BargeInLatency, LatencyTracker, TurnLatency
from fixtures.fake_deepgram import run_fake_deepgram
from fixtures.fake_openai import FakeOpenAI, run_fake_openai

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = sorted((ROOT / "fixtures" / "calls").glob("*.jsonl"))

Samples = dict[tuple[str, frozenset], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


async def scrape(base: str) -> Samples:
    async with httpx.AsyncClient() as client:
        reply = await client.get(f"{base}/metrics")
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(reply.text)


class Change:
    """What a metric sample gained between two scrapes (the figures are the process's, and
    other tests ran before)."""

    def __init__(self, before: Samples, after: Samples) -> None:
        self.before, self.after = before, after

    def __call__(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        return self.after.get(key, 0.0) - self.before.get(key, 0.0)


def log_records(path: Path) -> list[dict]:
    return [r for _, r in read_log(split_log(path.read_text())[0])]


# -- after a whole simulated call ---------------------------------------------------------------


async def test_metrics_after_a_simulated_call_with_a_barge_in(tmp_path):
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="m" * 32)
    config = AgentConfig(greeting="Hello, Roma restaurant.", false_interruption_timeout=3.0)
    fake = FakeOpenAI(script=brain, speech_chunk_delay=0.02)
    transcripts = deque(["I would like a table tonight", "Actually what about Sunday"])
    async with (
        run_fake_deepgram(transcripts=transcripts) as deepgram,
        run_fake_openai(fake) as openai,
        running_server(settings, config, providers(deepgram, openai)) as app,
    ):
        before = await scrape(app.base_url)
        result = await simulate(app.base_url, BARGE_IN, speak=loud)
        (path,) = await finished(app, within=30)
        change = Change(before, await scrape(app.base_url))
    assert result.cleared >= 1
    records = log_records(path)
    footer = records[-1]

    assert change("voice_agent_calls_started_total") == 1
    assert change("voice_agent_calls_ended_total", reason=footer["reason"]) == 1
    assert footer["reason"] == "hangup (agent)"
    assert change("voice_agent_calls_live") == 0

    # Every turn of the footer, observed as it happened: the same count and the same sum.
    turns = [t["voice_to_voice"] for t in footer["turns"] if t["voice_to_voice"] is not None]
    assert len(turns) >= 2
    assert change("voice_agent_voice_to_voice_seconds_count") == len(turns)
    assert abs(change("voice_agent_voice_to_voice_seconds_sum") - sum(turns)) < 1e-3
    # Every barge-in the inspector draws, with its reaction.
    barge_ins = call_view(list(read_log(split_log(path.read_text())[0])))["barge_ins"]
    assert len(barge_ins) >= 1
    assert change("voice_agent_barge_in_reaction_seconds_count") == len(barge_ins)
    reactions = sum(b["latency"] for b in barge_ins)
    assert abs(change("voice_agent_barge_in_reaction_seconds_sum") - reactions) < 1e-3

    latency = "voice_agent_provider_latency_seconds_count"
    assert change(latency, provider="deepgram", kind="stt_connect") == 1
    # One figure per request that got its first text or audio (a sentence said again after
    # an interruption is a request again).
    asked = [r for r in records if r.get("command") == "StartCompletion"]
    answered = {r["utterance"] for r in records if r.get("event") == "LlmText"}
    assert 1 <= len(answered) <= change(latency, provider="openai", kind="llm_first_token")
    assert change(latency, provider="openai", kind="llm_first_token") <= len(asked)
    synthesized = [r for r in records if r.get("command") == "Synthesize"]
    voiced = {(r["utterance"], r["seq"]) for r in records if r.get("event") == "TtsAudio"}
    assert 1 <= len(voiced) <= change(latency, provider="openai", kind="tts_first_byte")
    assert change(latency, provider="openai", kind="tts_first_byte") <= len(synthesized)
    assert change("voice_agent_provider_errors_total", provider="openai", kind="llm") == 0
    # The call took seconds: the loop's lag was sampled meanwhile.
    assert change("voice_agent_event_loop_lag_seconds_count") >= 1


# -- refusals, bad frames, a recognizer too slow --------------------------------------------------


def server_settings(tmp_path: Path, **kw) -> ServerSettings:
    base = {"call_log_dir": tmp_path / "calls", "stream_secret": "n" * 32}
    return ServerSettings.from_env({}, **(base | kw))


async def post_answer(base: str, call_id: str) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{base}/answer", data={"CallUUID": call_id})


async def test_refusals_are_counted_by_stage_and_reason_and_a_full_server_is_not_ready(tmp_path):
    async with running_server(
        server_settings(tmp_path, max_calls=1), AgentConfig(), quiet()
    ) as app:
        before = await scrape(app.base_url)
        url = stream_url((await post_answer(app.base_url, "first")).text)
        busy = await post_answer(app.base_url, "second")
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{app.base_url}/health")
        for bad in (url.split("=")[0] + "=v1.not-a-token", url.split("?")[0]):
            with pytest.raises(trio_websocket.HandshakeError):  # refused before accept
                async with open_client(bad):
                    pass
        change = Change(before, await scrape(app.base_url))
    assert "<Hangup" in busy.text
    assert health.status_code == 503 and health.json()["status"] == "full"
    refusals = "voice_agent_admission_refusals_total"
    assert change(refusals, stage="answer", reason="full") == 1
    assert change(refusals, stage="socket", reason="token malformed") == 1
    assert change(refusals, stage="socket", reason="token missing") == 1


SILENCE = base64.b64encode(b"\xff" * 160).decode()
MEDIA = json.dumps({"event": "media", "media": {"payload": SILENCE}})


async def test_bad_frames_and_dropped_audio_are_counted_as_the_footer_counts_them(tmp_path):
    from adapters.call.runner import STT_BUFFER_FRAMES

    async with running_server(server_settings(tmp_path), AgentConfig(), quiet(Ear(False))) as app:
        before = await scrape(app.base_url)
        url = stream_url((await post_answer(app.base_url, "flood")).text)
        async with open_client(url) as ws:
            await ws.send_message("{")  # before start: not a call's error yet, still counted
            await ws.send_message(start("flood"))
            await wait_live(app, "flood")
            for frame in ["{", '{"event": "nonsense"}'] + [MEDIA] * (STT_BUFFER_FRAMES + 50):
                await ws.send_message(frame)
            await ws.send_message(json.dumps({"event": "stop"}))
            (path,) = await finished(app)
        change = Change(before, await scrape(app.base_url))
    footer = log_records(path)[-1]
    assert footer["protocol_errors"] == {"malformed_json": 1, "unknown_event": 1}
    assert change("voice_agent_protocol_errors_total", kind="malformed_json") == 2
    assert change("voice_agent_protocol_errors_total", kind="unknown_event") == 1
    assert footer["dropped_audio_frames"] >= 50
    assert change("voice_agent_dropped_audio_frames_total") == footer["dropped_audio_frames"]
    assert change("voice_agent_calls_ended_total", reason="stop") == 1


# -- the figures taken from call logs -------------------------------------------------------------


def test_each_record_completes_the_figures_the_footer_and_the_inspector_show():
    """Per record, the tracker hands out each turn at its first audio and each barge-in at its
    clear: over every golden log, exactly the footer's turns and the inspector's barge-ins."""
    for path in GOLDEN:
        numbered = list(read_log(split_log(path.read_text())[0]))
        tracker = LatencyTracker()
        figures = [f for _, r in numbered if (f := tracker.add(r)) is not None]
        turns = [f for f in figures if isinstance(f, TurnLatency)]
        played = [t for t in tracker.turns() if t.first_audio is not None]
        assert turns == played, path.name
        reactions = [round(f.reaction, 4) for f in figures if isinstance(f, BargeInLatency)]
        assert reactions == [b["latency"] for b in call_view(numbered)["barge_ins"]], path.name


def test_end_reasons_become_a_few_labels_and_never_a_number_or_an_error_text():
    assert metrics.end_reason("hangup (agent)") == "hangup (agent)"
    assert metrics.end_reason("transfer to +919876543210") == "transfer"
    assert metrics.end_reason("error: OSError(28, 'No space left on device')") == "error"
    assert metrics.end_reason("something new") == "other"


# -- the event loop's lag -------------------------------------------------------------------------


async def test_the_loop_lag_is_how_late_the_watcher_woke(autojump_clock):
    seen: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(metrics.watch_loop_lag, seen.append, 0.25)
        await trio.sleep(0.6)  # two on-time wake-ups (0.25, 0.5)
        autojump_clock.jump(0.4)  # the loop held for 0.4 s: the next one (due 0.75) wakes at 1.0
        await trio.sleep(0.1)
        nursery.cancel_scope.cancel()
    assert seen == pytest.approx([0.0, 0.0, 0.25], abs=1e-9)


# -- several worker processes: any one's /metrics shows them all ----------------------------------

WORKER = textwrap.dedent(
    """
    import sys
    from adapters.ops import metrics

    live, started = int(sys.argv[1]), int(sys.argv[2])
    metrics.CALLS_LIVE.inc(live)
    metrics.CALLS_STARTED.inc(started)
    metrics.VOICE_TO_VOICE.observe(0.5 * started)
    metrics.refused("answer", "full")
    print("ready", flush=True)
    sys.stdin.read()  # until the test lets it go
    """
)


def worker(directory: Path, live: int, started: int) -> subprocess.Popen:
    env = os.environ | {metrics.MULTIPROC_ENV: str(directory), "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", WORKER, str(live), str(started)],
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None and process.stdout.readline() == "ready\n"
    return process


def exit_cleanly(process: subprocess.Popen) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.close()
    assert process.wait(timeout=30) == 0
    process.stdout.close()


def test_two_worker_processes_are_read_as_one_server_and_a_leaving_one_takes_its_live_calls(
    tmp_path,
):
    a, b = worker(tmp_path, live=2, started=3), worker(tmp_path, live=1, started=1)
    try:
        both = parse(metrics.exposition(str(tmp_path))[0].decode())
        exit_cleanly(a)
        after_a = parse(metrics.exposition(str(tmp_path))[0].decode())
    finally:
        exit_cleanly(b)
    none = frozenset()
    assert both[("voice_agent_calls_live", none)] == 3
    assert both[("voice_agent_calls_started_total", none)] == 4
    assert both[("voice_agent_voice_to_voice_seconds_count", none)] == 2
    assert both[("voice_agent_voice_to_voice_seconds_sum", none)] == 2.0
    full = frozenset({"stage": "answer", "reason": "full"}.items())
    assert both[("voice_agent_admission_refusals_total", full)] == 2
    # A's calls are gone with it; what it counted stays counted.
    assert after_a[("voice_agent_calls_live", none)] == 1
    assert after_a[("voice_agent_calls_started_total", none)] == 4


async def test_the_metrics_route_reads_the_multiprocess_directory_when_it_is_set(
    tmp_path, monkeypatch
):
    figures = tmp_path / "figures"
    figures.mkdir()
    process = worker(figures, live=5, started=7)
    try:
        monkeypatch.setenv(metrics.MULTIPROC_ENV, str(figures))
        async with running_server(server_settings(tmp_path), AgentConfig(), quiet()) as app:
            samples = await scrape(app.base_url)
    finally:
        exit_cleanly(process)
    assert samples[("voice_agent_calls_live", frozenset())] == 5
    assert samples[("voice_agent_calls_started_total", frozenset())] == 7


# -- a call log that cannot be written ------------------------------------------------------------

FULL_DISK = textwrap.dedent(
    """
    import datetime, resource, signal, sys
    from pathlib import Path
    from prometheus_client import REGISTRY
    from adapters.call.record import create_log

    # Files may not grow past 4 KiB here: a write past it fails as on a full disk.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))
    _, log = create_log(Path(sys.argv[1]), "call-1", datetime.datetime.now(datetime.UTC))
    try:
        log.write("x" * 10_000)
        log.flush()
    except OSError as exc:
        errors = REGISTRY.get_sample_value("voice_agent_call_log_write_errors_total")
        print(type(exc).__name__, int(errors))
    """
)


def test_a_call_log_write_that_fails_is_counted_and_still_raised(tmp_path):
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    env.pop(metrics.MULTIPROC_ENV, None)
    done = subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout.split() == ["OSError", "1"]
