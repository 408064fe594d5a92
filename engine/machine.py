"""The phone conversation, declared: states, what moves the call between them, and every rule
that decides which events reach the conversation at all.

Everything that affects the state machine lives in this module, in reading order:

1. :class:`Timer` — every timer the conversation uses, and the machine event it fires.
2. :class:`CallMachine` — the states and, per event, the transitions in priority order.
3. :data:`MACHINE_EVENTS` — which input event becomes which machine event.
4. :func:`dropped` — the rules applied before any transition: events that must never
   reach the conversation (stale replies, stopped timers, anything before the start).
5. :func:`derived` — the one derived event, ``utterance_heard``: after every step the
   engine checks, in one documented loop, whether the agent's utterance is finished.
6. :data:`FAST_PATH` — the plain ``stay`` rules the engine may run without the
   library's dispatch, derived from this declaration.

Guards and actions live on the model, :class:`engine.conversation.Conversation`: this
module says *when*, the model says *what*. Any event not declared for a state is a bug
and raises ``TransitionNotAllowed``. Checked against python-statemachine 3.2 (the
version range is pinned in ``pyproject.toml``).
"""

from __future__ import annotations

import enum
from functools import reduce
from operator import or_
from typing import TYPE_CHECKING, Any

from statemachine import State, StateMachine

from engine import events as ev

if TYPE_CHECKING:
    from engine.conversation import Conversation


class Timer(enum.StrEnum):
    """The conversation's timers (``TimerFired.name``, ``StartTimer.name``)."""

    IDLE = "idle"  # the caller's silence after hearing the agent out: reprompt
    PLAYOUT = "playout"  # a checkpoint's acknowledgement is overdue: take it as played
    BARGE_IN = "barge_in"  # caller speech that was too short to interrupt is now long enough
    FALSE_INTERRUPTION = "false_interruption"  # no words after a barge-in: resume
    CALL_LIMIT = "call_limit"  # the call reached its maximum length: goodbye
    DTMF = "dtmf"  # the gap after the last key: the digits are complete
    THINKING = "thinking"  # the caller has waited in silence: say the filler
    REPLY = "reply"  # the model has not finished its reply: give up and apologize
    DEAF = "deaf"  # the recognizer has been down a while: tell the caller

    @property
    def event(self) -> str:
        """The machine event this timer fires."""
        return TIMER_EVENTS[self]


_PLAIN_STAYS: dict[int, tuple[str, ...]] = {}


def stay(*states: State, on: str | list[str] | None = None) -> Any:
    """In each of ``states`` the event is handled (by ``on``, if given) without a change of state.

    Each such rule is unguarded by construction, so it is also recorded for :data:`FAST_PATH`.
    """
    options = {"on": on} if on else {}
    actions = tuple([on] if isinstance(on, str) else on or ())
    rules = [state.to.itself(internal=True, **options) for state in states]
    for rule in rules:
        for transition in rule.transitions:
            _PLAIN_STAYS[id(transition)] = actions
    return reduce(or_, rules)


class CallMachine(StateMachine):
    """greeting → listening ⇄ thinking → speaking → (interrupted) → … → ended.

    Each attribute below is one event; its rules are tried top to bottom and
    the first whose conditions hold is taken. ``stay`` declares an event that
    matters in a state (it may run an action) without a change of state.
    """

    greeting = State(initial=True)
    listening = State()
    thinking = State()
    speaking = State()
    interrupted = State()
    ended = State(final=True)

    # -- the call opens -------------------------------------------------------
    call_started = stay(greeting, on="say_greeting")

    # -- the caller's voice ---------------------------------------------------
    caller_speech_started = (
        greeting.to(
            interrupted,
            cond=["greeting_interruptible", "long_enough"],
            on=["voice_on", "barge_in"],
        )
        | speaking.to(
            interrupted, cond=["interruptible", "long_enough"], on=["voice_on", "barge_in"]
        )
        | thinking.to(listening, cond="long_enough", on=["voice_on", "hold_reply"])
        | stay(greeting, speaking, thinking, on=["voice_on", "watch_caller_speech"])
        | stay(listening, on=["voice_on", "caller_talking"])
        | stay(interrupted, on=["voice_on", "caller_talking", "hold_resume"])
    )
    barge_in_timer = (
        greeting.to(interrupted, cond="greeting_interruptible", on="barge_in")
        | speaking.to(interrupted, cond="interruptible", on="barge_in")
        | thinking.to(listening, on="hold_reply")
        | stay(greeting, speaking, listening, interrupted)
    )
    caller_speech_stopped = stay(interrupted, on=["caller_quiet", "resume_when_quiet"]) | stay(
        greeting, listening, thinking, speaking, on="caller_quiet"
    )

    # -- the caller's words ---------------------------------------------------
    transcript = (
        greeting.to(
            interrupted,
            cond=["greeting_interruptible", "words"],
            on=["barge_in", "take_caller_words"],
        )
        | stay(greeting, on="take_caller_words")
        # The turn ends with the words a held reply answers: it plays (now, if it is ready).
        | listening.to(
            speaking,
            cond=["confirms_speculation", "ends_turn", "speculation_audible"],
            on=["take_caller_words", "commit_speculation"],
        )
        | listening.to(
            thinking,
            cond=["confirms_speculation", "ends_turn"],
            on=["take_caller_words", "commit_speculation"],
        )
        | listening.to(thinking, cond="ends_turn", on=["take_caller_words", "ask"])
        | listening.to.itself(
            internal=True,
            cond="final_ends_a_sentence",
            on=["take_caller_words", "speculate_on_words"],
        )
        | stay(listening, on="take_caller_words")
        | thinking.to(
            thinking, cond="ends_turn", on=["hold_reply", "take_caller_words", "ask"], internal=True
        )
        | thinking.to(listening, cond="final_words", on=["hold_reply", "take_caller_words"])
        | stay(thinking)
        | speaking.to(
            thinking,
            cond=["interruptible", "ends_turn_with_words"],
            on=["barge_in", "take_caller_words", "ask"],
        )
        | speaking.to(
            interrupted, cond=["interruptible", "words"], on=["barge_in", "take_caller_words"]
        )
        | stay(speaking)
        | interrupted.to(speaking, cond=["backchannel", "resumable"], on="resume")
        | interrupted.to.itself(internal=True, cond="backchannel")
        | interrupted.to.itself(internal=True, cond="no_words", on="resume_soon")
        | interrupted.to(thinking, cond="ends_turn", on=["take_caller_words", "ask"])
        | stay(interrupted, on="take_caller_words")
    )
    caller_paused = (
        listening.to(thinking, cond="turn_pending", on="ask")
        | interrupted.to(thinking, cond="turn_pending", on="ask")
        | stay(interrupted, on="resume_soon")  # a pause with nothing heard: no words came
        | stay(greeting, on="mark_turn_ready")
        | stay(listening, thinking, speaking)
    )
    dtmf_pressed = (
        speaking.to(
            interrupted, cond=["dtmf_enabled", "interruptible"], on=["barge_in", "take_key"]
        )
        | thinking.to(listening, cond="dtmf_enabled", on=["hold_reply", "take_key"])
        | stay(greeting, listening, interrupted, on="take_key")
        | stay(speaking, thinking)
    )
    dtmf_timer = (
        listening.to(thinking, cond="turn_pending", on="ask")
        | interrupted.to(thinking, cond="turn_pending", on="ask")
        | stay(greeting, on="mark_turn_ready")
        | stay(listening, interrupted, thinking, speaking)
    )

    # -- a reply prepared before the caller's turn surely ended ---------------
    caller_turn_likely_over = listening.to.itself(
        internal=True, cond="may_speculate", on="speculate"
    ) | stay(listening, greeting, thinking, speaking, interrupted)
    caller_turn_resumed = stay(listening, on="drop_speculation") | stay(
        greeting, thinking, speaking, interrupted
    )

    # -- the model's reply ----------------------------------------------------
    # In listening, only a held (speculative) reply's completion is not stale.
    llm_text = stay(thinking, speaking, listening, on="take_text")
    llm_tool_call = stay(thinking, speaking, listening, on="take_tool_call")
    llm_done = stay(thinking, speaking, listening, on="take_done")
    llm_failed = stay(thinking, speaking, on="apologize") | stay(listening, on="drop_speculation")

    # -- the agent's voice ----------------------------------------------------
    tts_audio = thinking.to(speaking, cond="audible", on="take_audio") | stay(
        thinking, speaking, greeting, listening, on="take_audio"
    )
    tts_done = thinking.to(speaking, cond="audible", on="take_audio_end") | stay(
        thinking, speaking, greeting, listening, on="take_audio_end"
    )
    tts_failed = (
        greeting.to(speaking, cond="can_apologize", on="apologize_for_voice")
        | thinking.to(speaking, cond="can_apologize", on="apologize_for_voice")
        | speaking.to(speaking, cond="can_apologize", on="apologize_for_voice", internal=True)
        | stay(greeting, thinking, speaking, on="skip_sentence")
        | stay(listening, on="drop_speculation")
    )

    # -- the phone's playback -------------------------------------------------
    audio_played = stay(greeting, listening, thinking, speaking, interrupted, on="mark_played")
    playout_timer = stay(greeting, listening, thinking, speaking, interrupted, on="assume_played")
    audio_cleared = stay(greeting, listening, thinking, speaking, interrupted)
    # Derived (see ``derived`` below): the agent's utterance is complete and was played to the end.
    utterance_heard = (
        greeting.to(thinking, cond="turn_pending", on=["close_utterance", "ask"])
        | greeting.to(listening, on=["close_utterance", "await_caller"])
        | speaking.to(ended, cond="then_hangup", on=["hang_up", "close_utterance"])
        | speaking.to(ended, cond="then_transfer", on=["transfer", "close_utterance"])
        | speaking.to(thinking, cond="turn_pending", on=["close_utterance", "ask"])
        | speaking.to(listening, on=["close_utterance", "await_caller"])
        | thinking.to(ended, cond="then_hangup", on=["hang_up", "close_utterance"])
        | thinking.to(ended, cond="then_transfer", on=["transfer", "close_utterance"])
        | thinking.to(listening, on=["close_utterance", "await_caller"])
    )

    # -- the agent's silence and the recognizer's outages ----------------------
    thinking_timer = stay(thinking, on="fill_silence") | stay(
        greeting, listening, speaking, interrupted
    )
    reply_timer = stay(thinking, speaking, on="give_up_on_reply") | stay(
        greeting, listening, interrupted
    )
    stt_lost = stay(greeting, listening, thinking, speaking, interrupted, on="lose_recognizer")
    stt_restored = stay(listening, on=["restore_recognizer", "resume_idle"]) | stay(
        greeting, thinking, speaking, interrupted, on="restore_recognizer"
    )
    deaf_timer = listening.to(speaking, on="say_deaf_notice") | stay(
        greeting, thinking, speaking, interrupted, on="rearm_deaf_notice"
    )

    # -- silence, limits, the end ---------------------------------------------
    idle_timer = (
        listening.to(speaking, cond="reprompts_left", on="say_reprompt")
        | listening.to(speaking, on="say_goodbye")
        | stay(greeting, thinking, speaking, interrupted)
    )
    false_interruption_timer = (
        interrupted.to(speaking, cond="resumable", on="resume")
        | interrupted.to(listening, on=["close_utterance", "await_caller"])
        | stay(greeting, listening, thinking, speaking)
    )
    call_limit_timer = (
        speaking.to.itself(internal=True, cond="saying_goodbye")
        | greeting.to(speaking, on=["stop_talking", "say_goodbye"])
        | listening.to(speaking, on="say_goodbye")
        | thinking.to(speaking, on=["hold_reply", "say_goodbye"])
        | speaking.to(speaking, on=["stop_talking", "say_goodbye"], internal=True)
        | interrupted.to(speaking, on=["close_utterance", "say_goodbye"])
    )
    # -- another process carries the call on ---------------------------------
    call_taken_over = (
        stay(thinking, on=["rearm_timers", "ask_again"])
        | stay(greeting, speaking, on=["rearm_timers", "revoice"])
        | stay(listening, on=["rearm_timers", "drop_speculation"])
        | stay(interrupted, on="rearm_timers")
    )
    call_ended = (
        greeting.to(ended)
        | listening.to(ended)
        | thinking.to(ended)
        | speaking.to(ended)
        | interrupted.to(ended)
    )


#: Timer -> the machine event it fires (declared above as ``<timer>_timer``).
TIMER_EVENTS: dict[Timer, str] = {
    Timer.IDLE: "idle_timer",
    Timer.PLAYOUT: "playout_timer",
    Timer.BARGE_IN: "barge_in_timer",
    Timer.FALSE_INTERRUPTION: "false_interruption_timer",
    Timer.CALL_LIMIT: "call_limit_timer",
    Timer.DTMF: "dtmf_timer",
    Timer.THINKING: "thinking_timer",
    Timer.REPLY: "reply_timer",
    Timer.DEAF: "deaf_timer",
}

#: Input event type -> machine event (timers: :data:`TIMER_EVENTS`).
MACHINE_EVENTS: dict[type, str] = {
    ev.CallStarted: "call_started",
    ev.CallerSpeechStarted: "caller_speech_started",
    ev.CallerSpeechStopped: "caller_speech_stopped",
    ev.Transcript: "transcript",
    ev.CallerPaused: "caller_paused",
    ev.LlmText: "llm_text",
    ev.LlmToolCall: "llm_tool_call",
    ev.LlmDone: "llm_done",
    ev.LlmFailed: "llm_failed",
    ev.TtsAudio: "tts_audio",
    ev.TtsDone: "tts_done",
    ev.TtsFailed: "tts_failed",
    ev.AudioPlayed: "audio_played",
    ev.AudioCleared: "audio_cleared",
    ev.DtmfPressed: "dtmf_pressed",
    ev.CallerTurnLikelyOver: "caller_turn_likely_over",
    ev.CallerTurnResumed: "caller_turn_resumed",
    ev.SttLost: "stt_lost",
    ev.SttRestored: "stt_restored",
    ev.CallTakenOver: "call_taken_over",
    ev.CallEnded: "call_ended",
}

_MODEL_EVENTS = (ev.LlmText, ev.LlmToolCall, ev.LlmDone, ev.LlmFailed)
_VOICE_EVENTS = (ev.TtsAudio, ev.TtsDone, ev.TtsFailed)


def machine_event(event: ev.Event) -> str:
    if isinstance(event, ev.TimerFired):
        return Timer(event.name).event
    return MACHINE_EVENTS[type(event)]


def dropped(conversation: Conversation, event: ev.Event) -> str | None:
    """Why ``event`` must not reach the conversation, or None when it may.

    These rules come before any transition, in this order (the engine has
    already dropped everything after the call ended):

    1. The model's and the voice's events belong to one utterance: those of any
       other (a reply cancelled by a barge-in) are stale, so no audio of a
       cancelled reply can ever play.
    2. A voice event for a sentence the utterance does not have.
    3. A timer that is not running (cancelled, replaced, unknown) is stale.
    4. A second ``CallStarted``; anything but the end before the first.
    """
    if isinstance(event, _MODEL_EVENTS) and event.utterance != conversation.completion:
        return f"stale utterance {event.utterance}"
    if isinstance(event, _VOICE_EVENTS):
        utterance = conversation.utterance
        if utterance is None or event.utterance != utterance.id:
            return f"stale utterance {event.utterance}"
        if utterance.get(event.seq) is None:
            return f"unknown sentence {event.utterance}.{event.seq}"
    if isinstance(event, ev.TimerFired):
        if event.name not in conversation.timers:
            return f"timer {event.name} not running"
    elif isinstance(event, ev.CallStarted) and conversation.last_id:
        return "call already started"
    elif not conversation.last_id and not isinstance(event, ev.CallStarted | ev.CallEnded):
        return "call not started"
    return None


_SPEAKING = frozenset({"greeting", "thinking", "speaking"})


def derived(conversation: Conversation, state: str) -> str | None:
    """The machine event a step leads to by itself, if any.

    ``utterance_heard``: the agent is speaking (or greeting, or thinking after a
    filler), its utterance is complete (the model is done) and every sentence of
    it was played. The rules of ``utterance_heard`` in :class:`CallMachine` say
    what follows: the caller's turn, listening, the hang-up or the transfer.
    """
    utterance = conversation.utterance
    if (
        state in _SPEAKING
        and utterance is not None
        and conversation.completion is None
        and utterance.finished
    ):
        return "utterance_heard"
    return None


def _fast_path() -> dict[tuple[str, str], tuple[str, ...]]:
    """(state, machine event) -> actions, where the first rule declared is a plain ``stay``.

    For those pairs the machine would always take that rule, so the engine may
    run its actions directly (a ``send`` is costly, mostly choosing among rules,
    and audio chunks and text deltas come by the dozen per second:
    ``docs/benchmarks.md``). Built
    from the declaration through the library's public ``State.transitions`` and
    ``Transition.events``; a property test checks it against the machine.
    """
    table: dict[tuple[str, str], tuple[str, ...]] = {}
    for state in CallMachine.states:
        first_seen: set[str] = set()
        for transition in state.transitions:
            for event in transition.events:
                name = str(event)
                if name in first_seen:
                    continue
                first_seen.add(name)
                actions = _PLAIN_STAYS.get(id(transition))
                if actions is not None:
                    table[(state.id, name)] = actions
    return table


FAST_PATH = _fast_path()
