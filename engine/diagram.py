"""The call machine as a Mermaid state diagram, generated from the class itself."""

from __future__ import annotations

from engine.machine import CallMachine


def mermaid() -> str:
    return f"{CallMachine:mermaid}".rstrip() + "\n"


def states_markdown() -> str:
    """``docs/states.md``: rendered by GitHub; regenerate with ``uv run voice-agent diagram``."""
    return (
        "# Call states\n\n"
        "Generated from `engine/machine.py` by `uv run voice-agent diagram`; do not edit.\n"
        "Self-transitions (`state : event / action`) are events handled without a change of state.\n\n"
        "```mermaid\n" + mermaid() + "```\n"
    )
