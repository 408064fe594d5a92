"""`voice-agent demo` end to end: the offline providers, the real server, the simulated caller."""

import argparse
import json

import trio

from adapters.app import demo


async def test_the_demo_call_books_a_table_barges_in_hangs_up_and_replays(
    tmp_path, monkeypatch, capsys
):
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

    # The live transcript has both sides: the agent's sentences, in order, beside the
    # caller's lines, and the barge-in marked where it cut the opening hours short.
    printed = " ".join(capsys.readouterr().out.split())  # undo the console's wrapping
    live = printed[: printed.index("The call as the agent logged it")]
    assert "(speaking)" not in live
    in_order = [
        "agent Hello, Trattoria Roma, how can I help you?",
        "caller I would like to book a table.",
        "agent Of course.",
        "agent For how many people?",
        "caller What are your opening hours?",
        "agent We are open Tuesday to Sunday,",
        "caller For four people.",
        "clear clearAudio: agent cut off",
        "agent Great, a table for four.",
        "caller Tomorrow at seven.",
        "agent Lovely, a table for four tomorrow at seven is booked.",
        "caller No thank you, goodbye.",
        "agent Goodbye!",
    ]
    positions = [live.find(piece) for piece in in_order]
    assert -1 not in positions, [p for p, at in zip(in_order, positions, strict=True) if at < 0]
    assert positions == sorted(positions)
    assert 'into its sentence, after "We are open' in live
