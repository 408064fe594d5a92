"""Replay call logs through the engine: ``uv run python replay.py LOG [LOG…]``.

Exit 0 when every log replays identically (one summary line each), 1 at the
first divergence (line, expected, got), 2 when a log cannot be read.
``--timeline`` prints who said what when; ``--latency`` a per-turn table.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.calllog import LogError, read_log
from engine.latency import turn_latencies
from engine.replay import replay


def timeline(path: Path) -> list[str]:
    """A readable account of the call: states, the caller's words, the agent's sentences."""
    lines = []
    for _, r in read_log(path.read_text().splitlines()):
        t = r.get("t", 0.0)
        kind = r["kind"]
        if kind == "header":
            lines.append(
                f"call {r.get('call_id', '?')} from {r.get('caller', '?')} to {r.get('callee', '?')}"
            )
        elif kind == "transition":
            lines.append(f"{t:8.3f}  [{r['from']} -> {r['to']}] on {r['trigger']}")
        elif kind == "event" and r["event"] == "Transcript" and r["is_final"] and r["text"]:
            lines.append(f"{t:8.3f}  caller: {r['text']}")
        elif kind == "event" and r["event"] == "DtmfPressed":
            lines.append(f"{t:8.3f}  caller pressed {r['digit']}")
        elif kind == "command" and r["command"] == "Synthesize":
            lines.append(f"{t:8.3f}  agent:  {r['text']}")
        elif kind == "command" and r["command"] in ("ClearAudio", "Hangup", "Transfer"):
            lines.append(
                f"{t:8.3f}  >> {r['command']} {r.get('reason', '') or r.get('to', '')}".rstrip()
            )
        elif kind == "footer":
            lines.append(f"{t:8.3f}  call ended: {r.get('reason', '?')}")
    return lines


def latency_table(path: Path) -> list[str]:
    records = [r for _, r in read_log(path.read_text().splitlines())]
    rows = ["turn  caller stopped  voice-to-voice  llm first text  tts first audio"]

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f} ms"

    for lat in turn_latencies(records):
        d = lat.as_dict()
        rows.append(
            f"{d['turn']:>4}  {d['caller_stopped']:>14.3f}  {ms(d['voice_to_voice']):>14}"
            f"  {ms(d['llm_first_text']):>14}  {ms(d['tts_first_audio']):>15}"
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--timeline", action="store_true", help="print the call's timeline")
    parser.add_argument("--latency", action="store_true", help="print per-turn latency")
    args = parser.parse_args(argv)
    status = 0
    for path in args.logs:
        try:
            result = replay(path.read_text().splitlines())
            if args.timeline:
                print("\n".join(timeline(path)))
            if args.latency:
                print("\n".join(latency_table(path)))
        except (OSError, UnicodeDecodeError, LogError) as exc:
            print(f"{path}: unreadable: {exc}", file=sys.stderr)
            return 2
        if result.identical:
            print(f"{path}: identical ({result.events} events, {result.records} records)")
            continue
        d = result.divergence
        print(f"{path}: DIVERGES at line {d.line}")
        print(f"  expected: {json.dumps(d.expected) if d.expected else '(nothing more)'}")
        print(f"  got:      {json.dumps(d.got) if d.got else '(nothing)'}")
        status = 1
    return status


if __name__ == "__main__":
    sys.exit(main())
