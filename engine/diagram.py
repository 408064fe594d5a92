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


def dot() -> str:
    """The machine in Graphviz DOT: state changes as edges labelled ``event [guards]``.

    Internal self-transitions (events handled without a change of state) are left
    out to keep the picture readable; ``states.md`` lists them.
    """
    lines = [
        "digraph CallMachine {",
        "  rankdir=LR;",
        '  node [shape=box, style="rounded,filled", fillcolor="#f4f4f4", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
        '  start [shape=point, label=""];',
        f"  start -> {CallMachine.initial_state.id};",
    ]
    for state in CallMachine.states:
        if state.final:
            lines.append(f'  {state.id} [shape=doubleoctagon, fillcolor="#e0e0e0"];')
    for state in CallMachine.states:
        for transition in state.transitions:
            if transition.internal:
                continue
            guards = [spec.func for spec in transition.cond if not spec.is_convention]
            label = str(transition.event) + (f" [{', '.join(guards)}]" if guards else "")
            lines.append(f'  {state.id} -> {transition.target.id} [label="{label}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"
