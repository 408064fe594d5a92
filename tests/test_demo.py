"""`voice-agent demo` end to end: the offline providers, the real server, the simulated caller."""

import argparse
import json

import trio

from adapters.app import demo


async def test_the_demo_call_books_a_table_barges_in_hangs_up_and_replays(tmp_path, monkeypatch):
    monkeypatch.setenv("CALL_LOG_DIR", str(tmp_path))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("DEEPGRAM_API_KEY", raising=False)
    wav = tmp_path / "call.wav"
    with trio.fail_after(150):
        status = await demo.demo_main(argparse.Namespace(wav=str(wav)))
    # 0: the agent hung up, the barge-in was cleared, no stale audio, the log replayed identically
    assert status == 0
    (log,) = tmp_path.glob("*.jsonl")
    records = [json.loads(line) for line in log.read_text().split("\n")[:-1]]
    commands = [r for r in records if r["kind"] == "command"]
    said = " ".join(r["text"] for r in commands if r["command"] == "Synthesize")
    assert "For how many people?" in said
    assert commands[-1]["command"] == "Hangup"
    assert any(r["command"] == "ClearAudio" for r in commands)
    assert wav.stat().st_size > 44 + 8000 * 4 * 10  # > 10 s of 8 kHz 16-bit stereo
