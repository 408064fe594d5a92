"""The engine's one entry point: ``Engine.step(event, now)`` -> what the call must do.

One step, in order (every rule it applies is declared in :mod:`engine.machine`):

1. Nothing reaches an ended call.
2. :func:`engine.machine.dropped` may refuse the event (a stale reply, a stopped
   timer, anything before the start); the step then only records why.
3. A timer that fires stops running.
4. The event becomes its machine event and is handled: directly through the
   declaration's :data:`~engine.machine.FAST_PATH` when its rule is a plain
   ``stay``, else by the machine.
5. The derived loop: while :func:`engine.machine.derived` names an event (the
   agent's utterance was played to the end), the machine handles it too.

It is synchronous and pure: the same events at the same times give the same
commands, which is what makes a call log replayable.
"""

from __future__ import annotations

import inspect
from typing import Any

import attrs

from engine import events as ev
from engine.config import AgentConfig
from engine.conversation import Conversation
from engine.machine import FAST_PATH, CallMachine, Timer, derived, dropped, machine_event

#: A derived event that keeps deriving itself would be a bug in the declaration.
MAX_DERIVED = 4


@attrs.frozen
class Transition:
    """A change of state, as the call log records it."""

    source: str
    target: str
    trigger: str


@attrs.frozen
class Step:
    """Everything one event caused; ``dropped`` says why an event was ignored."""

    commands: tuple[Any, ...] = ()
    transitions: tuple[Transition, ...] = ()
    dropped: str | None = None


def _action_parameters() -> dict[str, tuple[str, ...]]:
    """Which of ``e`` and ``now`` each fast-path action takes (the machine injects by name)."""
    names = {action for actions in FAST_PATH.values() for action in actions}
    return {
        name: tuple(inspect.signature(getattr(Conversation, name)).parameters)[1:] for name in names
    }


_PARAMETERS = _action_parameters()


class Engine:
    """One call's conversation, driven one event at a time."""

    def __init__(self, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()
        self.conversation = Conversation(self.config)
        self._transitions: list[Transition] = []
        self.machine = CallMachine(model=self.conversation, listeners=[self])

    @property
    def state(self) -> str:
        return self.conversation.state  # type: ignore[attr-defined,no-any-return]

    @property
    def ended(self) -> bool:
        return self.state == "ended"

    def handle(self, event: ev.Event, now: float) -> list[Any]:
        """Feed one event that happened at call time ``now``; return the commands it causes."""
        return list(self.step(event, now).commands)

    def step(self, event: ev.Event, now: float) -> Step:
        """Like :meth:`handle`, also returning the transitions and why an event was dropped."""
        if self.ended:
            return Step(dropped="call ended")
        reason = dropped(self.conversation, event)
        if reason is not None:
            return Step(dropped=reason)
        if isinstance(event, ev.TimerFired):
            del self.conversation.timers[Timer(event.name)]
        self._transitions.clear()
        self._fire(machine_event(event), event, now)
        for _ in range(MAX_DERIVED):
            name = derived(self.conversation, self.state)
            if name is None:
                break
            self.machine.send(name, e=event, now=now)
        else:
            raise RuntimeError(f"derived events did not settle after {event!r}")
        commands, self.conversation.outbox = tuple(self.conversation.outbox), []
        return Step(commands, tuple(self._transitions))

    def _fire(self, name: str, event: ev.Event, now: float) -> None:
        actions = FAST_PATH.get((self.state, name))
        if actions is None:
            self.machine.send(name, e=event, now=now)
            return
        args = {"e": event, "now": now}
        for action in actions:
            getattr(self.conversation, action)(**{p: args[p] for p in _PARAMETERS[action]})

    # python-statemachine listener hook
    def after_transition(self, event: str, source: Any, target: Any) -> None:
        if source is not target:
            self._transitions.append(
                Transition(source.id, target.id, str(getattr(event, "id", event)))
            )
