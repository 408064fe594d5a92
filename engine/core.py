"""The engine's one entry point: ``CallCore.handle(event, now) -> commands``.

The core filters what must never reach the conversation (events of a turn
that was cancelled, timers that were replaced, anything after the call
ended), turns each remaining event into a machine event, and returns the
commands the call's model queued. It is synchronous and pure: the same
events at the same times give the same commands, which is what makes a
call log replayable.
"""

from __future__ import annotations

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
    ev.CallEnded: "call_ended",
}
_LLM_EVENTS = (ev.LlmText, ev.LlmToolCall, ev.LlmDone, ev.LlmFailed)
_TTS_EVENTS = (ev.TtsAudio, ev.TtsDone, ev.TtsFailed)
_SPEAKING_STATES = frozenset({"greeting", "thinking", "speaking"})


class CallCore:
    """One call's conversation, driven one event at a time."""

    def __init__(self, config: AgentConfig | None = None) -> None:
        self.config = config or AgentConfig()
        self.call = Call(self.config)
        self._transitions: list[Transition] = []
        self.machine = CallMachine(model=self.call, listeners=[self])

    @property
    def state(self) -> str:
        return self.machine.current_state_value

    @property
    def ended(self) -> bool:
        return self.machine.is_terminated

    def handle(self, event: ev.Event, now: float) -> list[Any]:
        """Feed one event that happened at call time ``now``; return the commands it causes."""
        return list(self.step(event, now).commands)

    def step(self, event: ev.Event, now: float) -> Step:
        """Like :meth:`handle`, also returning the transitions and why an event was dropped."""
        if self.ended:
            return Step(dropped="call ended")
        name, dropped = self._route(event, now)
        if dropped:
            return Step(dropped=dropped)
        self._transitions.clear()
        self.machine.send(name, e=event, now=now)
        if self._speech_complete():
            self.machine.send("speech_heard", e=event, now=now)
        commands, self.call.outbox = tuple(self.call.outbox), []
        return Step(commands, tuple(self._transitions))

    def _route(self, event: ev.Event, now: float) -> tuple[str, str | None]:
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
