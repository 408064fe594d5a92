"""Replay call logs through the engine: ``uv run python replay.py LOG [LOG…]``.

The same as ``voice-agent replay`` (``adapters/app/replay_cli.py``), kept for the
scripts and habits that call it by this name. Exit 0 identical, 1 diverged,
2 unreadable, 3 incomplete.
"""

import sys

from adapters.app.replay_cli import DIVERGED, IDENTICAL, INCOMPLETE, UNREADABLE, check, main

__all__ = ["DIVERGED", "IDENTICAL", "INCOMPLETE", "UNREADABLE", "check", "main"]

if __name__ == "__main__":
    sys.exit(main())
