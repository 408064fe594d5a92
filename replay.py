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
from engine.replay import replay
from engine.views import latency_table, timeline


def _records(path: Path) -> list[dict]:
    return [r for _, r in read_log(path.read_text().splitlines())]


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
                print("\n".join(timeline(_records(path))))
            if args.latency:
                print("\n".join(latency_table(_records(path))))
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
