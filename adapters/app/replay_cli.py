"""Replay call logs through the engine: ``voice-agent replay LOG [LOG…]`` (or ``python replay.py``).

Exit 0 when every log replays identically (one summary line each), 1 at the
first divergence (line, expected, got), 2 when a log cannot be read, 3 when
every log that replays is identical but one is incomplete (no footer: the
server was killed mid-call; what it holds is checked). ``--timeline`` prints
who said what when; ``--latency`` a per-turn table. Reads schema 2 logs (see ``docs/call-log.md``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from engine.calllog import LogError, read_log, split_log
from engine.replay import replay
from engine.views import latency_table
from engine.views import timeline as timeline_lines

#: Exit statuses. With several logs the worst one decides: a divergence outranks an
#: unreadable log, which outranks an incomplete one.
IDENTICAL, DIVERGED, UNREADABLE, INCOMPLETE = 0, 1, 2, 3
_RANK = {IDENTICAL: 0, INCOMPLETE: 1, UNREADABLE: 2, DIVERGED: 3}


def _lines(path: Path) -> tuple[list[str], bool]:
    return split_log(path.read_text(encoding="utf-8"))


def _records(path: Path) -> list[dict]:
    return [r for _, r in read_log(_lines(path)[0])]


def check(path: Path, timeline: bool = False, latency: bool = False) -> int:
    """Replay one log and print its verdict; returns its exit status."""
    try:
        lines, cut = _lines(path)
        result = replay(lines)
        if timeline:
            print("\n".join(timeline_lines(_records(path))))
        if latency:
            print("\n".join(latency_table(_records(path))))
    except (OSError, UnicodeDecodeError, LogError) as exc:
        print(f"{path}: unreadable: {exc}", file=sys.stderr)
        return UNREADABLE
    summary = f"{result.events} events, {result.records} records"
    if result.divergence is not None:
        d = result.divergence
        print(f"{path}: DIVERGES at line {d.line}")
        print(f"  expected: {json.dumps(d.expected) if d.expected else '(nothing more)'}")
        print(f"  got:      {json.dumps(d.got) if d.got else '(nothing)'}")
        return DIVERGED
    if not result.finished:
        how = "no footer" + (", last line cut" if cut else "")
        print(
            f"{path}: incomplete: {how}, {len(lines) - (lines[-1:] == [''])} records; the prefix is identical ({summary})"
        )
        return INCOMPLETE
    print(f"{path}: identical ({summary})")
    return IDENTICAL


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("logs", nargs="+", type=Path)
    parser.add_argument("--timeline", action="store_true", help="print the call's timeline")
    parser.add_argument("--latency", action="store_true", help="print per-turn latency")


def run(args: argparse.Namespace) -> int:
    status = IDENTICAL
    for path in args.logs:
        outcome = check(path, args.timeline, args.latency)
        status = max(status, outcome, key=_RANK.__getitem__)
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
