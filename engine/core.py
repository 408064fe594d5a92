"""The engine's one entry point: ``CallCore.handle(event, now) -> commands``.

The core filters what must never reach the conversation (events of a turn
that was cancelled, timers that were replaced, anything after the call
ended), turns each remaining event into a machine event, and returns the
commands the call's model queued. It is synchronous and pure: the same
events at the same times give the same commands, which is what makes a
call log replayable.
"""

from __future__ import annotations

import inspect
from typing import Any

import attrs

from engine import events as ev
from engine.call import Call
from engine.config import AgentConfig
from engine.machine import CallMachine


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


_MACHINE_EVENT = {
    ev.CallStarted: "call_started",
    ev.SpeechStarted: "speech_started",
    ev.SpeechStopped: "speech_stopped",
    ev.Transcript: "transcript",
    ev.UtteranceEnd: "utterance_end",
    ev.LlmText: "llm_text",
    ev.LlmToolCall: "llm_tool_call",
    ev.LlmDone: "llm_done",
    ev.LlmFailed: "llm_failed",
    ev.TtsAudio: "tts_audio",
    ev.TtsDone: "tts_done",
    ev.TtsFailed: "tts_failed",
    ev.PlaybackMarked: "playback_marked",
    ev.PlaybackCleared: "playback_cleared",
    ev.DtmfPressed: "dtmf_pressed",
    ev.SttLost: "stt_lost",
    ev.SttRestored: "stt_restored",
    ev.CallEnded: "call_ended",
}
_LLM_EVENTS = (ev.LlmText, ev.LlmToolCall, ev.LlmDone, ev.LlmFailed)
_TTS_EVENTS = (ev.TtsAudio, ev.TtsDone, ev.TtsFailed)
_SPEAKING_STATES = frozenset({"greeting", "thinking", "speaking"})


def _internal_shortcuts() -> dict[tuple[str, str], tuple[tuple[str, tuple[str, ...]], ...]]:
    """Compile the machine's unconditional self-transitions into direct action calls.

    A python-statemachine ``send`` costs ~100 µs, most of it spent selecting
    among transitions; audio chunks and text deltas arrive by the dozen per
    second and, in the states where they are frequent, their first declared
    transition is an unguarded internal one. For those (state, event) pairs
    the machine would always pick that transition, so the core runs its
    actions directly. The table is derived from the declaration, so the
    machine stays the one place that says what happens.
    """
    table = {}
    for state in CallMachine.states:
        seen: set[str] = set()
        for transition in state.transitions:
            for event in transition.events:
                if event in seen:
                    continue
                seen.add(event)
                guarded = any(not spec.is_convention for spec in transition.cond)
                if transition.internal and transition.is_self and not guarded:
                    actions = tuple(
                        (
                            spec.func,
                            tuple(inspect.signature(getattr(Call, spec.func)).parameters)[1:],
                        )
                        for spec in transition.on
                        if not spec.is_convention
                    )
                    table[(state.id, str(event))] = actions
    return table


_SHORTCUTS = _internal_shortcuts()


class CallCore:
    """One call's conversation, driven one event at a time."""

    def __init__(self, config: AgentConfig | None = None, *, shortcuts: bool = True) -> None:
        self.config = config or AgentConfig()
        self.call = Call(self.config)
        self._transitions: list[Transition] = []
        self.machine = CallMachine(model=self.call, listeners=[self])
        self._shortcuts = _SHORTCUTS if shortcuts else {}

    @property
    def state(self) -> str:
        return self.call.state  # the machine keeps its state on its model

    @property
    def ended(self) -> bool:
        return self.call.state == "ended"

    def handle(self, event: ev.Event, now: float) -> list[Any]:
        """Feed one event that happened at call time ``now``; return the commands it causes."""
        return list(self.step(event, now).commands)

    def step(self, event: ev.Event, now: float) -> Step:
        """Like :meth:`handle`, also returning the transitions and why an event was dropped."""
        if self.ended:
            return Step(dropped="call ended")
        name, dropped = self._route(event)
        if dropped:
            return Step(dropped=dropped)
        self._transitions.clear()
        actions = self._shortcuts.get((self.state, name))
        if actions is not None:
            args = {"e": event, "now": now}
            for action, params in actions:
                getattr(self.call, action)(**{p: args[p] for p in params})
        else:
            self.machine.send(name, e=event, now=now)
        if self._speech_complete():
            self.machine.send("speech_heard", e=event, now=now)
        commands, self.call.outbox = tuple(self.call.outbox), []
        return Step(commands, tuple(self._transitions))

    def _route(self, event: ev.Event) -> tuple[str, str | None]:
        call = self.call
        if isinstance(event, _LLM_EVENTS) and event.turn != call.llm_turn:
            return "", f"stale turn {event.turn}"
        if isinstance(event, _TTS_EVENTS):
            speech = call.speech
            if speech is None or event.turn != speech.turn:
                return "", f"stale turn {event.turn}"
            if speech.get(event.seq) is None:
                return "", f"unknown sentence {event.turn}.{event.seq}"
        if isinstance(event, ev.TimerFired):
            if call.timers.get(event.name) is None:
                return "", f"timer {event.name} not running"
            del call.timers[event.name]
            return f"{event.name}_timer", None
        if isinstance(event, ev.CallStarted) and call.turn:
            return "", "call already started"
        if not call.turn and not isinstance(event, ev.CallStarted | ev.CallEnded):
            return "", "call not started"
        return _MACHINE_EVENT[type(event)], None

    def _speech_complete(self) -> bool:
        speech = self.call.speech
        return (
            self.state in _SPEAKING_STATES
            and speech is not None
            and self.call.llm_turn is None
            and speech.finished
        )

    # python-statemachine listener hook
    def after_transition(self, event: str, source: Any, target: Any) -> None:
        if source is not target:
            self._transitions.append(
                Transition(source.id, target.id, str(getattr(event, "id", event)))
            )
