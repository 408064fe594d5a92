"""Replay speed: events per second, and the time to replay a synthetic 5-minute call.

    uv run python bench/replay_bench.py

The call has a realistic mix: every ~15 s the caller speaks (VAD start/stop,
two interim and one final transcript), the model streams ~25 text deltas, the
voice arrives as 100 ms chunks (OpenAI speech chunk size at 8 kHz), each sentence
is acknowledged, and every fourth reply is barged into.
"""

from __future__ import annotations

import io
import statistics
import time

from engine import events as ev
from engine.calllog import LoggedEngine, LogWriter
from engine.config import AgentConfig
from engine.core import Engine
from engine.replay import replay

CHUNK = b"\x7f" * 800  # 100 ms of mu-law


def five_minute_call() -> str:
    config = AgentConfig(max_call_seconds=3600, idle_timeout=30)
    out = io.StringIO()
    writer = LogWriter(out)
    writer.header(call_id="bench", config=config.to_dict())
    call = LoggedEngine(Engine(config), writer)
    t = 0.0
    call.handle(ev.CallStarted("bench"), t)
    for _ in range(20):
        call.handle(ev.TtsAudio(call.core.conversation.last_id, 0, CHUNK), t + 0.2)
        break
    call.handle(ev.TtsDone(1, 0), 0.3)
    call.handle(ev.AudioPlayed("1.0"), 2.0)
    t = 3.0
    utterance = 1
    n = 0
    while t < 300:
        n += 1
        call.handle(ev.CallerSpeechStarted(at=t), t + 0.1)
        call.handle(ev.Transcript("I would like", is_final=False), t + 0.6)
        call.handle(ev.Transcript("I would like to know", is_final=False), t + 1.0)
        call.handle(ev.CallerSpeechStopped(at=t + 1.5), t + 1.5)
        call.handle(ev.Transcript("I would like to know more.", True, True), t + 1.8)
        utterance = call.core.conversation.last_id
        words = ("Sure thing. " * 2 + "Here is what we can do for you today. ").split(" ")
        for i, w in enumerate(words[:25]):
            call.handle(ev.LlmText(utterance, w + " "), t + 2.0 + 0.02 * i)
        call.handle(ev.LlmDone(utterance), t + 2.6)
        sentences = len(call.core.call.speech.sentences) if call.core.call.speech else 0
        tt = t + 2.2
        for seq in range(sentences):
            for _ in range(15):
                call.handle(ev.TtsAudio(utterance, seq, CHUNK), tt)
                tt += 0.03
            call.handle(ev.TtsDone(utterance, seq), tt)
        if n % 4 == 0:
            call.handle(ev.CallerSpeechStarted(at=tt), tt + 0.15)
            call.handle(ev.Transcript("wait", True, True), tt + 0.8)
            call.handle(ev.LlmFailed(call.core.conversation.last_id, "bench"), tt + 0.9)
        else:
            for seq in range(sentences):
                call.handle(ev.AudioPlayed(f"{utterance}.{seq}"), tt + 1.5 * (seq + 1))
        t = tt + 8.0
    call.handle(ev.CallEnded("bench"), t)
    return out.getvalue()


def main() -> None:
    text = five_minute_call()
    lines = text.splitlines()
    events = sum(1 for line in lines if '"kind":"event"' in line)
    timings = []
    for _ in range(15):
        start = time.perf_counter()
        result = replay(lines)
        timings.append(time.perf_counter() - start)
        assert result.identical, result.divergence
    median = statistics.median(timings)
    print(f"synthetic 5-minute call: {len(lines)} log lines, {events} events")
    print(f"replay time: median {median * 1000:.1f} ms (min {min(timings) * 1000:.1f} ms, 15 runs)")
    print(f"replay throughput: {events / median:,.0f} events/s")


if __name__ == "__main__":
    main()
