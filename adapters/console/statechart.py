"""The call machine as an SVG drawn from its own declaration, for pages that must work offline.

An arc diagram: the states in a row in the order they are declared, each
change of state an arc, above the row when it goes right and below when it
goes left, so no two arcs cross a state box. Events handled without a change
of state are left out (``docs/states.md`` lists them); each arc names its
events in a tooltip. Every state is a ``<g class="state sN" data-state=…>``
and every arc a ``<path class="edge" data-from=… data-to=…>``, so a page can
light the active state and the change just made with a class.
"""

from __future__ import annotations

from collections import defaultdict
from html import escape

from engine.machine import CallMachine

BOX_W, BOX_H, GAP = 104, 34, 36
ARC_BASE, ARC_STEP = 16, 15
PORT = 10  # arcs leave right of a box's centre and arrive left of it (above; mirrored below)


def state_ids() -> list[str]:
    return [state.id for state in CallMachine.states]


def changes() -> dict[tuple[str, str], list[str]]:
    """Each (from, to) pair with a change of state, and the events that make it."""
    pairs: dict[tuple[str, str], set[str]] = defaultdict(set)
    for state in CallMachine.states:
        for transition in state.transitions:
            if transition.internal or transition.target is state:
                continue
            pairs[(state.id, transition.target.id)].add(str(transition.event))
    return {pair: sorted(events) for pair, events in pairs.items()}


def svg() -> str:
    ids = state_ids()
    index = {name: i for i, name in enumerate(ids)}
    edges = changes()
    span = max((abs(index[b] - index[a]) for a, b in edges), default=1)
    rise = ARC_BASE + ARC_STEP * span
    width = 24 + len(ids) * (BOX_W + GAP)
    row_y = rise + 8
    height = row_y + BOX_H + rise + 8

    def centre(name: str) -> float:
        return 24 + index[name] * (BOX_W + GAP) + BOX_W / 2

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="statechart" viewBox="0 0 {width} {height}"'
        f' width="{width}" height="{height}" role="img" aria-label="call states">',
        "<defs><marker id='arrow' viewBox='0 0 10 10' refX='9' refY='5' markerWidth='8'"
        " markerHeight='8' markerUnits='userSpaceOnUse' orient='auto-start-reverse'><path d='M0,0 L10,5 L0,10 z'/></marker></defs>",
    ]
    for (a, b), events in sorted(edges.items(), key=lambda e: abs(index[e[0][1]] - index[e[0][0]])):
        x1, x2 = centre(a), centre(b)
        forward = index[b] > index[a]
        arc = ARC_BASE + ARC_STEP * abs(index[b] - index[a])
        port = min(PORT + 4 * abs(index[b] - index[a]), BOX_W / 2 - 6)  # fan the bundles out
        if forward:
            sx, ex, y, cy = x1 + port, x2 - port, row_y, row_y - arc
        else:
            sx, ex, y, cy = x1 - port, x2 + port, row_y + BOX_H, row_y + BOX_H + arc
        title = escape(f"{a} → {b}: {', '.join(events)}")
        parts.append(
            f'<path class="edge" data-from="{a}" data-to="{b}" marker-end="url(#arrow)"'
            f' d="M{sx:.0f},{y} C{sx:.0f},{cy} {ex:.0f},{cy} {ex:.0f},{y}"><title>{title}</title></path>'
        )
    initial = CallMachine.initial_state.id
    for i, state in enumerate(CallMachine.states):
        x = 24 + i * (BOX_W + GAP)
        classes = f"state s{i}" + (" final" if state.final else "")
        parts.append(
            f'<g class="{classes}" data-state="{state.id}"><title>{escape(state.id)}</title>'
            f'<rect x="{x}" y="{row_y}" width="{BOX_W}" height="{BOX_H}" rx="9"/>'
            f'<text x="{x + BOX_W / 2:.0f}" y="{row_y + BOX_H / 2 + 5:.0f}"'
            f' text-anchor="middle">{escape(state.id)}</text></g>'
        )
        if state.id == initial:
            parts.append(
                f'<path class="initial" marker-end="url(#arrow)"'
                f' d="M4,{row_y + BOX_H / 2:.0f} L{x - 2},{row_y + BOX_H / 2:.0f}"/>'
            )
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
