"""The phone conversation, declared: states, and what moves the call between them.

Read each event as a rule, top to bottom; the first line whose conditions
hold is taken. ``internal`` self-transitions are deliberate: the event
matters (it may emit commands) but the state stays. Any event not declared
for a state is a bug and raises ``TransitionNotAllowed``.

Guards and actions live on the model, :class:`engine.call.Call`; this class
says *when*, the model says *what*.
"""

from __future__ import annotations

from functools import reduce
from operator import or_
from typing import Any

from statemachine import State, StateMachine


def stay(*states: State, on: str | None = None) -> Any:
    """In each of ``states`` the event is handled (by ``on``, if given) without a change of state."""
    options = {"on": on} if on else {}
    return reduce(or_, (state.to.itself(internal=True, **options) for state in states))


class CallMachine(StateMachine):
    """greeting → listening ⇄ thinking → speaking → (interrupted) → … → ended."""

    greeting = State(initial=True)
    listening = State()
    thinking = State()
    speaking = State()
    interrupted = State()
    ended = State(final=True)

    # -- the call opens -------------------------------------------------------
    call_started = stay(greeting, on="say_greeting")

    # -- the caller's voice ---------------------------------------------------
    speech_started = (
        greeting.to(interrupted, cond=["greeting_interruptible", "long_enough"], on="cut_off")
        | speaking.to(interrupted, cond=["interruptible", "long_enough"], on="cut_off")
        | thinking.to(listening, cond="long_enough", on="hold_reply")
        | stay(greeting, speaking, thinking, on="watch_speech")
        | stay(listening, interrupted, on="caller_talking")
    )
    barge_in_timer = (
        greeting.to(interrupted, cond="greeting_interruptible", on="cut_off")
        | speaking.to(interrupted, cond="interruptible", on="cut_off")
        | thinking.to(listening, on="hold_reply")
        | stay(greeting, speaking, listening, interrupted)
    )
    speech_stopped = stay(greeting, listening, thinking, speaking, interrupted, on="caller_quiet")

    # -- the caller's words ---------------------------------------------------
    transcript = (
        greeting.to(interrupted, cond=["greeting_interruptible", "words"], on=["cut_off", "hear"])
        | stay(greeting, on="hear")
        | listening.to(thinking, cond="ends_turn", on=["hear", "ask"])
        | stay(listening, on="hear")
        | thinking.to(thinking, cond="ends_turn", on=["hold_reply", "hear", "ask"], internal=True)
        | thinking.to(listening, cond="final_words", on=["hold_reply", "hear"])
        | stay(thinking)
        | speaking.to(
            thinking, cond=["interruptible", "ends_turn_with_words"], on=["cut_off", "hear", "ask"]
        )
        | speaking.to(interrupted, cond=["interruptible", "words"], on=["cut_off", "hear"])
        | stay(speaking)
        | interrupted.to(speaking, cond=["backchannel", "resumable"], on="resume")
        | interrupted.to.itself(internal=True, cond="backchannel")
        | interrupted.to(thinking, cond="ends_turn", on=["hear", "ask"])
        | stay(interrupted, on="hear")
    )
    utterance_end = (
        listening.to(thinking, cond="turn_pending", on="ask")
        | interrupted.to(thinking, cond="turn_pending", on="ask")
        | stay(greeting, on="mark_turn_ready")
        | stay(listening, interrupted, thinking, speaking)
    )
    dtmf_pressed = (
        speaking.to(interrupted, cond=["dtmf_enabled", "interruptible"], on=["cut_off", "key"])
        | thinking.to(listening, cond="dtmf_enabled", on=["hold_reply", "key"])
        | stay(greeting, listening, interrupted, on="key")
        | stay(speaking, thinking)
    )
    dtmf_timer = (
        listening.to(thinking, cond="turn_pending", on="ask")
        | interrupted.to(thinking, cond="turn_pending", on="ask")
        | stay(greeting, on="mark_turn_ready")
        | stay(listening, interrupted, thinking, speaking)
    )

    # -- the model's reply ----------------------------------------------------
    llm_text = stay(thinking, speaking, on="take_text")
    llm_tool_call = stay(thinking, speaking, on="take_tool_call")
    llm_done = stay(thinking, speaking, on="take_done")
    llm_failed = stay(thinking, speaking, on="apologize")

    # -- the agent's voice ----------------------------------------------------
    tts_audio = thinking.to(speaking, cond="audible", on="take_audio") | stay(
        thinking, speaking, greeting, on="take_audio"
    )
    tts_done = thinking.to(speaking, cond="audible", on="take_audio_end") | stay(
        thinking, speaking, greeting, on="take_audio_end"
    )
    tts_failed = (
        greeting.to(speaking, cond="can_apologize", on="apologize_for_voice")
        | thinking.to(speaking, cond="can_apologize", on="apologize_for_voice")
        | speaking.to(speaking, cond="can_apologize", on="apologize_for_voice", internal=True)
        | stay(greeting, thinking, speaking, on="skip_sentence")
    )

    # -- the phone's playback -------------------------------------------------
    playback_marked = stay(greeting, listening, thinking, speaking, interrupted, on="mark_heard")
    playout_timer = stay(greeting, listening, thinking, speaking, interrupted, on="assume_heard")
    playback_cleared = stay(greeting, listening, thinking, speaking, interrupted)
    # Derived by the core: the agent's speech is complete and was heard to the end.
    speech_heard = (
        greeting.to(thinking, cond="turn_pending", on=["close_speech", "ask"])
        | greeting.to(listening, on=["close_speech", "await_caller"])
        | speaking.to(ended, cond="then_hangup", on=["hang_up", "close_speech"])
        | speaking.to(ended, cond="then_transfer", on=["transfer", "close_speech"])
        | speaking.to(thinking, cond="turn_pending", on=["close_speech", "ask"])
        | speaking.to(listening, on=["close_speech", "await_caller"])
        | thinking.to(ended, cond="then_hangup", on=["hang_up", "close_speech"])
        | thinking.to(ended, cond="then_transfer", on=["transfer", "close_speech"])
        | thinking.to(listening, on=["close_speech", "await_caller"])
    )

    # -- the agent's silence and the recognizer's outages ----------------------
    thinking_timer = thinking.to.itself(internal=True, on="fill_silence") | stay(
        greeting, listening, speaking, interrupted
    )
    reply_timer = stay(thinking, speaking, on="give_up_on_reply") | stay(
        greeting, listening, interrupted
    )
    stt_lost = stay(greeting, listening, thinking, speaking, interrupted, on="lose_recognizer")
    stt_restored = listening.to.itself(
        internal=True, on=["restore_recognizer", "resume_idle"]
    ) | stay(greeting, thinking, speaking, interrupted, on="restore_recognizer")
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
        | interrupted.to(listening, on=["close_speech", "await_caller"])
        | stay(greeting, listening, thinking, speaking)
    )
    call_limit_timer = (
        speaking.to.itself(internal=True, cond="saying_goodbye")
        | greeting.to(speaking, on=["cut_off", "close_speech", "say_goodbye"])
        | listening.to(speaking, on="say_goodbye")
        | thinking.to(speaking, on=["hold_reply", "say_goodbye"])
        | speaking.to(speaking, on=["cut_off", "close_speech", "say_goodbye"], internal=True)
        | interrupted.to(speaking, on=["close_speech", "say_goodbye"])
    )
    call_ended = (
        greeting.to(ended)
        | listening.to(ended)
        | thinking.to(ended)
        | speaking.to(ended)
        | interrupted.to(ended)
    )
