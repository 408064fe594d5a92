"""The call engine's behaviour, one rule per test: events in at explicit times, commands out."""

import io
import json

import pytest
from drive import AUDIO, Drive, of
from statemachine.exceptions import TransitionNotAllowed

from engine import commands as cmd
from engine import events as ev
from engine.calllog import LogWriter
from engine.config import AgentConfig


def test_greeting_is_spoken_then_the_call_listens_once_it_was_heard():
    d = Drive()
    out = d(ev.CallStarted("call-1"), 0.0)
    assert of(out, cmd.Synthesize) == [cmd.Synthesize(1, 0, d.core.config.greeting)]
    assert d.state == "greeting"
    out = d(ev.TtsAudio(1, 0, AUDIO), 0.3)
    assert out == [cmd.PlayAudio(1, 0, AUDIO)]
    out = d(ev.TtsDone(1, 0), 0.4)
    assert out[0] == cmd.Checkpoint("1.0")
    assert d.state == "greeting"  # sent is not heard
    out = d(ev.AudioPlayed("1.0"), 2.5)
    assert d.state == "listening"
    assert cmd.StartTimer("idle", 2.5 + d.core.config.idle_timeout) in out


def test_a_final_with_speech_final_ends_the_turn_and_asks_the_model_with_the_history():
    d = Drive()
    d.greet()
    d(ev.Transcript("I'd like", is_final=True), 3.0)
    assert d.state == "listening"
    out = d(ev.Transcript("a table for two.", is_final=True, speech_final=True), 3.5)
    assert d.state == "thinking"
    (start,) = of(out, cmd.StartCompletion)
    assert [m.role for m in start.messages] == ["system", "assistant", "user"]
    assert start.messages[-1].content == "I'd like a table for two."


def test_utterance_end_after_finals_ends_the_turn_but_not_without_words():
    d = Drive()
    d.greet()
    assert d(ev.CallerPaused(), 3.0) == []
    d(ev.Transcript("hello there", is_final=True), 3.2)
    out = d(ev.CallerPaused(), 4.2)
    assert of(out, cmd.StartCompletion)[0].messages[-1].content == "hello there"


def test_each_sentence_goes_to_synthesis_as_soon_as_it_is_complete():
    d = Drive()
    d.greet()
    d.say("Do you have a table?", 3.0)
    assert d(ev.LlmText(2, "Yes, we"), 3.2) == []
    out = d(ev.LlmText(2, " do. For how"), 3.3)
    assert out == [cmd.Synthesize(2, 0, "Yes, we do.")]
    assert d.state == "thinking"
    out = d(ev.TtsAudio(2, 0, AUDIO), 3.4)
    assert out == [cmd.PlayAudio(2, 0, AUDIO)]
    assert d.state == "speaking"
    out = d(ev.LlmText(2, " many people? "), 3.5)
    assert out == [cmd.Synthesize(2, 1, "For how many people?")]
    out = d(ev.TtsDone(2, 0), 3.5)
    assert out[0] == cmd.Checkpoint("2.0")
    out = d.voice(2, 1, 3.6)
    assert of(out, cmd.Checkpoint) == [cmd.Checkpoint("2.1")]


def test_a_sentence_that_ends_a_delta_goes_to_synthesis_with_it():
    d = Drive()
    d.greet()
    d.say("Do you have a table?", 3.0)
    assert d(ev.LlmText(2, "Yes, we do."), 3.2) == [cmd.Synthesize(2, 0, "Yes, we do.")]
    # A number or an abbreviation may go on past the punctuation: those wait for more.
    assert d(ev.LlmText(2, " It costs 3."), 3.3) == []
    assert d(ev.LlmText(2, "5 euros. Ask Dr."), 3.4) == [
        cmd.Synthesize(2, 1, "It costs 3.5 euros.")
    ]
    assert d(ev.LlmText(2, " Rossi!"), 3.5) == [cmd.Synthesize(2, 2, "Ask Dr. Rossi!")]


def test_audio_of_a_later_sentence_waits_for_the_earlier_one():
    d = Drive()
    d.greet()
    d.say("hi", 3.0)
    d(ev.LlmText(2, "One. Two. "), 3.1)
    assert d(ev.TtsAudio(2, 1, b"2" * 80), 3.2) == []
    assert d.state == "thinking"
    out = d.voice(2, 0, 3.3, b"1" * 80)
    assert [type(c).__name__ for c in out] == ["PlayAudio", "Checkpoint", "StartTimer", "PlayAudio"]
    assert out[-1] == cmd.PlayAudio(2, 1, b"2" * 80)
    out = d(ev.TtsDone(2, 1), 3.4)
    assert out[0] == cmd.Checkpoint("2.1")


def test_listening_resumes_when_the_last_sentence_was_heard_and_idle_counts_from_then():
    d = Drive()
    d.greet()
    d.say("hi", 3.0)
    d.reply(2, ["Hello.", "How are you?"], 3.1, heard=False)
    assert d.state == "speaking"
    d(ev.AudioPlayed("2.0"), 4.0)
    assert d.state == "speaking"
    out = d(ev.AudioPlayed("2.1"), 6.0)
    assert d.state == "listening"
    assert cmd.StartTimer("idle", 6.0 + d.core.config.idle_timeout) in out


def test_a_missing_acknowledgement_falls_back_to_the_audio_duration():
    d = Drive(ack_grace=0.5)
    d(ev.CallStarted("c"), 0.0)
    out = d.voice(1, 0, 1.0, b"\xff" * 8000)  # one second of audio sent at t=1
    assert cmd.StartTimer("playout", 2.5) in out
    out = d(ev.TimerFired("playout"), 2.5)
    assert d.state == "listening"
    assert cmd.StartTimer("idle", 2.5 + d.core.config.idle_timeout) in out


def test_idle_reprompts_then_says_goodbye_and_hangs_up_only_after_it_was_heard():
    d = Drive(idle_timeout=5.0, max_reprompts=1)
    d.greet(t_heard=2.0)
    out = d(ev.TimerFired("idle"), 7.0)
    assert out == [cmd.Synthesize(2, 0, d.core.config.reprompt)]
    d.voice(2, 0, 7.1)
    d(ev.AudioPlayed("2.0"), 8.0)
    assert d.state == "listening"
    out = d(ev.TimerFired("idle"), 13.0)
    assert out == [cmd.Synthesize(3, 0, d.core.config.goodbye)]
    out = d.voice(3, 0, 13.1)
    assert not of(out, cmd.Hangup)
    out = d(ev.AudioPlayed("3.0"), 15.0)
    assert of(out, cmd.Hangup) == [cmd.Hangup("agent")]
    assert d.state == "ended"


def speaking_two_sentences(**config):
    """A reply of two sentences: the first heard, the second playing."""
    d = Drive(**config)
    d.greet()
    d.say("What are your hours?", 3.0)
    d(ev.LlmText(2, "We open at nine. We close at ten. And on"), 3.2)
    d.voice(2, 0, 3.3)
    d(ev.AudioPlayed("2.0"), 3.5)
    d.voice(2, 1, 3.6)
    assert d.state == "speaking"
    return d


def test_barge_in_clears_audio_cancels_everything_and_keeps_only_what_was_heard():
    d = speaking_two_sentences()
    out = d(ev.CallerSpeechStarted(at=4.0), 4.15)
    assert d.state == "interrupted"
    assert out[:3] == [cmd.ClearAudio(), cmd.CancelCompletion(2), cmd.CancelSynthesis(2)]
    out = d.say("What about Sunday?", 5.0)
    assert d.state == "thinking"
    (start,) = of(out, cmd.StartCompletion)
    assert [(m.role, m.content) for m in start.messages[-2:]] == [
        ("assistant", "We open at nine."),
        ("user", "What about Sunday?"),
    ]


def test_speech_shorter_than_the_minimum_does_not_interrupt():
    d = speaking_two_sentences(barge_in_min_speech=0.3)
    out = d(ev.CallerSpeechStarted(at=4.0), 4.1)
    assert out == [cmd.StartTimer("barge_in", 4.3)]
    out = d(ev.CallerSpeechStopped(at=4.2), 4.2)
    assert out == [cmd.CancelTimer("barge_in")]
    assert d.state == "speaking"


def test_speech_that_lasts_the_minimum_interrupts_when_its_timer_fires():
    d = speaking_two_sentences(barge_in_min_speech=0.3)
    d(ev.CallerSpeechStarted(at=4.0), 4.1)
    out = d(ev.TimerFired("barge_in"), 4.3)
    assert d.state == "interrupted"
    assert out[0] == cmd.ClearAudio()


def test_no_words_after_an_interruption_resumes_from_the_first_unheard_sentence():
    d = speaking_two_sentences(false_interruption_timeout=1.0)
    out = d(ev.CallerSpeechStarted(at=4.0), 4.2)
    assert cmd.StartTimer("false_interruption", 5.2) in out
    d(ev.CallerSpeechStopped(at=4.4), 4.4)
    out = d(ev.TimerFired("false_interruption"), 5.2)
    assert d.state == "speaking"
    assert of(out, cmd.Synthesize) == [cmd.Synthesize(3, 0, "We close at ten.")]
    d.voice(3, 0, 5.3)
    d(ev.AudioPlayed("3.0"), 6.0)
    assert d.state == "listening"
    out = d.say("thanks", 7.0)
    assert of(out, cmd.StartCompletion)[0].messages[-2].content == (
        "We open at nine. We close at ten."
    )


def test_backchannels_while_speaking_neither_interrupt_nor_make_a_turn():
    d = speaking_two_sentences()
    assert d(ev.Transcript("uh-huh", is_final=False), 4.0) == []
    assert d(ev.Transcript("Uh-huh.", is_final=True, speech_final=True), 4.1) == []
    assert d(ev.Transcript("okay right", is_final=True, speech_final=True), 4.2) == []
    assert d.state == "speaking"
    d(ev.AudioPlayed("2.1"), 5.0)
    d(ev.LlmText(2, " Sundays we rest."), 5.0)
    d(ev.LlmDone(2), 5.1)
    d.voice(2, 2, 5.2)
    d(ev.AudioPlayed("2.2"), 6.0)
    out = d.say("Great", 7.0)
    user_turns = [m.content for m in of(out, cmd.StartCompletion)[0].messages if m.role == "user"]
    assert user_turns == ["What are your hours?", "Great"]


def test_a_backchannel_after_a_quick_interruption_resumes_at_once():
    d = speaking_two_sentences()
    d(ev.CallerSpeechStarted(at=4.0), 4.2)
    out = d(ev.Transcript("mm-hm", is_final=True, speech_final=True), 4.6)
    assert d.state == "speaking"
    assert cmd.Synthesize(3, 0, "We close at ten.") in out


def test_words_while_speaking_interrupt_even_without_a_vad_event():
    d = speaking_two_sentences()
    out = d(ev.Transcript("wait a second", is_final=False), 4.0)
    assert d.state == "interrupted"
    assert out[0] == cmd.ClearAudio()


def test_caller_talking_on_while_thinking_cancels_and_joins_the_same_turn():
    d = Drive()
    d.greet()
    d.say("I'd like a table", 3.0)
    out = d(ev.CallerSpeechStarted(at=3.3), 3.5)
    assert d.state == "listening"
    assert out[0] == cmd.CancelCompletion(2)
    out = d.say("for four people", 4.5)
    (start,) = of(out, cmd.StartCompletion)
    assert start.utterance == 3
    assert start.messages[-1] == cmd.Message("user", "I'd like a table for four people")
    assert [m.role for m in start.messages].count("user") == 1


def test_a_new_final_while_thinking_restarts_the_completion_with_both_parts():
    d = Drive()
    d.greet()
    d.say("Hi", 3.0)
    out = d.say("I need a taxi", 3.4)
    assert of(out, cmd.CancelCompletion) == [cmd.CancelCompletion(2)]
    assert of(out, cmd.StartCompletion)[0].messages[-1].content == "Hi I need a taxi"
    assert d.state == "thinking"


def test_events_of_a_cancelled_turn_are_dropped():
    d = speaking_two_sentences()
    d(ev.CallerSpeechStarted(at=4.0), 4.2)
    assert d.core.step(ev.TtsAudio(2, 1, AUDIO), 4.3).dropped == "stale utterance 2"
    assert d(ev.LlmText(2, "more"), 4.3) == []
    d.say("Sunday?", 5.0)
    assert d(ev.TtsAudio(2, 2, AUDIO), 5.1) == []
    assert not [c for t, c in d.log if isinstance(c, cmd.PlayAudio) and t > 4.2]


def test_a_failed_completion_is_answered_with_the_apology_then_listening():
    d = Drive()
    d.greet()
    d.say("hello", 3.0)
    out = d(ev.LlmFailed(2, "timeout"), 13.0)
    assert out == [cmd.Synthesize(2, 0, d.core.config.apology)]
    d.voice(2, 0, 13.5)
    d(ev.AudioPlayed("2.0"), 15.0)
    assert d.state == "listening"


def test_failed_speech_is_answered_with_the_apology_in_a_new_turn():
    d = Drive()
    d.greet()
    d.say("hello", 3.0)
    d(ev.LlmText(2, "Hi there. "), 3.2)
    out = d(ev.TtsFailed(2, 0, "500"), 3.4)
    assert out[:2] == [cmd.CancelCompletion(2), cmd.CancelSynthesis(2)]
    assert cmd.Synthesize(3, 0, d.core.config.apology) in out
    assert d.state == "speaking"
    d.voice(3, 0, 3.5)
    d(ev.AudioPlayed("3.0"), 5.0)
    assert d.state == "listening"


def test_a_failed_apology_gives_up_quietly_and_listens():
    d = Drive()
    d.greet()
    d.say("hello", 3.0)
    d(ev.LlmFailed(2, "500"), 3.2)
    d(ev.TtsFailed(2, 0, "500"), 3.3)
    assert d.state == "listening"


def test_end_call_says_goodbye_then_hangs_up_after_it_was_heard():
    d = Drive()
    d.greet()
    d.say("that's all, bye", 3.0)
    d(ev.LlmToolCall(2, "end_call", "{}"), 3.2)
    out = d(ev.LlmDone(2), 3.3)
    assert out == [cmd.Synthesize(2, 0, d.core.config.goodbye)]
    d.voice(2, 0, 3.4)
    assert not of(
        d(ev.CallerSpeechStarted(at=3.5), 3.8), cmd.ClearAudio
    )  # a farewell is not cut off
    out = d(ev.AudioPlayed("2.0"), 5.0)
    assert out[-1] == cmd.Hangup("agent")
    assert d.state == "ended"


def test_transfer_call_transfers_after_the_reply_was_heard():
    d = Drive()
    d.greet()
    d.say("a human please", 3.0)
    d(ev.LlmText(2, "Connecting you now."), 3.1)
    d(ev.LlmToolCall(2, "transfer_call", json.dumps({"to": "+15550100"})), 3.2)
    d(ev.LlmDone(2), 3.2)
    d.voice(2, 0, 3.3)
    out = d(ev.AudioPlayed("2.0"), 4.5)
    assert out[-1] == cmd.Transfer("+15550100", reason="transfer_call")
    assert d.state == "ended"


def test_dtmf_digits_reach_the_model_as_a_user_message():
    d = Drive(dtmf_gap=1.0)
    d.greet()
    d(ev.DtmfPressed("4"), 3.0)
    out = d(ev.DtmfPressed("2"), 3.5)
    assert cmd.StartTimer("dtmf", 4.5) in out
    out = d(ev.TimerFired("dtmf"), 4.5)
    assert of(out, cmd.StartCompletion)[0].messages[-1].content == (
        "(The caller pressed the keys: 42)"
    )


def test_hash_sends_the_digits_at_once_and_dtmf_can_be_switched_off():
    d = Drive()
    d.greet()
    d(ev.DtmfPressed("7"), 3.0)
    out = d(ev.DtmfPressed("#"), 3.1)
    assert cmd.StartTimer("dtmf", 3.1) in out
    assert of(d(ev.TimerFired("dtmf"), 3.1), cmd.StartCompletion)
    off = Drive(dtmf_to_llm=False)
    off.greet()
    assert off(ev.DtmfPressed("7"), 3.0) == []


def test_the_call_length_limit_says_goodbye_and_hangs_up():
    d = Drive(max_call_seconds=60)
    d.greet()
    d.say("tell me a long story", 58.0)
    d(ev.LlmText(2, "Once upon a time. "), 58.5)
    d.voice(2, 0, 58.6)
    out = d(ev.TimerFired("call_limit"), 60.0)
    assert out[0] == cmd.ClearAudio()
    assert cmd.Synthesize(3, 0, d.core.config.goodbye) in out
    d.voice(3, 0, 60.1)
    out = d(ev.AudioPlayed("3.0"), 62.0)
    assert out[-1] == cmd.Hangup("agent")


@pytest.mark.parametrize("state", ["greeting", "listening", "thinking", "speaking", "interrupted"])
def test_call_ended_in_any_state_ends_and_nothing_follows(state):
    d = speaking_two_sentences()
    if state == "greeting":
        d = Drive()
        d(ev.CallStarted("c"), 0.0)
    elif state == "listening":
        d = Drive()
        d.greet()
    elif state == "thinking":
        d = Drive()
        d.greet()
        d.say("hi", 3.0)
    elif state == "interrupted":
        d(ev.CallerSpeechStarted(at=4.0), 4.2)
    assert d.state == state
    assert d(ev.CallEnded("socket closed"), 9.0) == []
    assert d.state == "ended"
    for later in [
        ev.TtsAudio(2, 1, AUDIO),
        ev.TimerFired("idle"),
        ev.Transcript("hello", True, True),
    ]:
        assert d(later, 10.0) == []


def test_a_stray_event_is_a_bug_the_machine_refuses():
    d = Drive()
    d(ev.CallStarted("call-1", "stream-1"), 0.0)  # greeting: no completion can be streaming
    with pytest.raises(TransitionNotAllowed):
        d.core.machine.send("llm_text", e=ev.LlmText(9, "x"), now=3.0)


def test_a_long_first_sentence_is_voiced_from_its_first_clause():
    d = Drive(first_clause_chars=30)
    d.greet()
    d.say("Any tables tonight?", 3.0)
    out = d(ev.LlmText(2, "Certainly, we have tables at six, seven"), 3.2)
    assert out == [cmd.Synthesize(2, 0, "Certainly, we have tables at six,")]
    out = d(ev.LlmText(2, " and eight. Which one, six or seven? "), 3.4)
    assert [c.text for c in of(out, cmd.Synthesize)] == [
        "seven and eight.",
        "Which one, six or seven?",
    ]


def test_short_first_sentences_and_disabled_clause_cutting_wait_for_the_full_stop():
    d = Drive(first_clause_chars=0)
    d.greet()
    d.say("Any tables tonight?", 3.0)
    assert d(ev.LlmText(2, "Certainly, we have tables at six, seven"), 3.2) == []
    short = Drive()
    short.greet()
    short.say("Thanks", 3.0)
    assert short(ev.LlmText(2, "You're welcome, goodbye"), 3.2) == []


# -- the agent's silence and the recognizer's outages -------------------------------------------


def test_a_silent_model_gets_a_filler_after_four_seconds_and_an_apology_at_the_deadline():
    d = Drive()
    d.greet()
    out = d.say("Can I book a table?", 4.0)
    assert cmd.StartTimer("thinking", 8.0) in out and cmd.StartTimer("reply", 16.0) in out
    assert d(ev.TimerFired("thinking"), 8.0) == [cmd.Synthesize(2, 0, "One moment, please.")]
    d.voice(2, 0, 8.2)
    assert d.state == "speaking"
    out = d(ev.TimerFired("reply"), 16.0)
    assert out[0] == cmd.CancelCompletion(2)
    assert cmd.Synthesize(2, 1, AgentConfig().apology) in out
    assert d(ev.LlmText(2, "Too late."), 16.5) == []  # the given-up completion is stale


def test_no_filler_once_the_model_has_written_a_sentence_and_no_apology_once_it_is_done():
    d = Drive()
    d.greet()
    d.say("Hello?", 4.0)
    d(ev.LlmText(2, "Hi there. "), 4.5)
    d(ev.LlmDone(2), 4.6)
    assert d(ev.TimerFired("thinking"), 8.0) == []
    assert d(ev.TimerFired("reply"), 16.0) == []


def test_while_the_recognizer_is_down_a_talking_callers_silence_is_not_idleness():
    d = Drive()
    d.greet()
    assert d(ev.SttLost("dropped"), 3.0) == [cmd.StartTimer("deaf", 8.0)]
    d(ev.CallerSpeechStarted(at=3.4), 3.5)
    assert d(ev.CallerSpeechStopped(at=5.5), 5.5) == []  # no idle timer: they spoke, unheard
    out = d(ev.TimerFired("deaf"), 8.0)
    assert d.state == "speaking"
    assert out == [cmd.Synthesize(2, 0, AgentConfig().deaf_notice)]


def test_the_deaf_notice_waits_while_the_agent_talks_and_is_dropped_when_the_recognizer_is_back():
    d = Drive()
    d(ev.CallStarted("call-1", "stream-1"), 0.0)
    d(ev.SttLost("dropped"), 0.5)
    assert d(ev.TimerFired("deaf"), 5.5) == [cmd.StartTimer("deaf", 10.5)]  # greeting playing
    assert d(ev.SttRestored(), 6.0) == [cmd.CancelTimer("deaf")]
    assert d(ev.TimerFired("deaf"), 10.5) == []  # stale: not running


def test_a_recognizer_back_while_listening_lets_the_idle_timer_run_again():
    d = Drive()
    d.greet()
    d(ev.CallerSpeechStarted(at=2.4), 2.5)  # the caller talks: the idle timer stops
    d(ev.SttLost("dropped"), 3.0)
    d(ev.CallerSpeechStopped(at=4.0), 4.0)
    out = d(ev.SttRestored(), 4.5)
    assert out == [cmd.CancelTimer("deaf"), cmd.StartTimer("idle", 12.5)]


# -- false interruptions end as soon as the recognizer says there were no words ------------------


def interrupted_by_a_cough(d: Drive, stop_reported_at: float = 4.4) -> None:
    """Two sentences playing; a 200 ms sound from 4.0 s interrupts; the VAD reports its end."""
    d.greet()
    d.say("Tell me about the menu", 3.0)
    d(ev.LlmText(2, "We have pasta. And we have pizza. "), 3.2)
    d(ev.LlmDone(2), 3.3)
    d.voice(2, 0, 3.4)
    d(ev.CallerSpeechStarted(at=4.0), 4.1)
    assert d.state == "interrupted"
    d(ev.CallerSpeechStopped(at=4.2), stop_reported_at)


def test_an_empty_final_resumes_at_once_when_the_line_is_already_quiet():
    d = Drive()
    interrupted_by_a_cough(d)
    out = d(ev.Transcript("", is_final=True, speech_final=True), 4.48)
    assert out == [cmd.StartTimer("false_interruption", 4.48)]  # brought forward from 5.6
    out = d(ev.TimerFired("false_interruption"), 4.48)
    assert d.state == "speaking"
    assert of(out, cmd.Synthesize)[0].text == "We have pasta."


def test_a_pause_with_nothing_heard_counts_as_no_words_too():
    d = Drive()
    interrupted_by_a_cough(d)
    assert d(ev.CallerPaused(), 5.2) == [cmd.StartTimer("false_interruption", 5.2)]


def test_the_verdict_waits_for_the_vads_silence_and_its_hold():
    d = Drive()
    d.greet()
    d.say("Tell me about the menu", 3.0)
    d(ev.LlmText(2, "We have pasta. "), 3.2)
    d(ev.LlmDone(2), 3.3)
    d.voice(2, 0, 3.4)
    d(ev.CallerSpeechStarted(at=4.0), 4.1)
    # The recognizer's verdict comes while the VAD still hears the caller: no resume yet.
    assert d(ev.Transcript("", is_final=True, speech_final=True), 4.3) == []
    # The VAD's silence began at 4.35: resume 150 ms later.
    out = d(ev.CallerSpeechStopped(at=4.35), 4.45)
    assert out == [cmd.StartTimer("false_interruption", 4.5)]


def test_new_sound_after_the_verdict_gets_the_full_wait_again():
    d = Drive()
    interrupted_by_a_cough(d)
    d(ev.Transcript("", is_final=True, speech_final=True), 4.3)
    out = d(ev.CallerSpeechStarted(at=4.32), 4.34)
    assert cmd.StartTimer("false_interruption", 4.34 + 1.5) in out


def test_words_after_all_still_start_a_new_turn():
    d = Drive()
    interrupted_by_a_cough(d)
    d(ev.Transcript("", is_final=True, speech_final=True), 4.3)
    out = d.say("actually what about dessert", 4.35)
    assert d.state == "thinking" and of(out, cmd.StartCompletion)


# -- speculative replies ---------------------------------------------------------------------------


def test_a_speculative_reply_is_prepared_held_and_played_the_moment_the_turn_ends():
    d = Drive()
    d.greet()
    out = d(ev.CallerTurnLikelyOver("I need a table"), 3.0)
    (start,) = of(out, cmd.StartCompletion)
    assert start.speculative and start.messages[-1] == cmd.Message("user", "I need a table")
    out = d(ev.LlmText(2, "Sure. We have one at eight. "), 3.1)
    assert out == [cmd.Synthesize(2, 0, "Sure.")]  # only the first sentence is prepared
    d(ev.LlmDone(2), 3.2)
    assert d.voice(2, 0, 3.3) == []  # held: nothing plays while the caller may go on
    assert d.state == "listening"
    out = d.say("I need a table", 3.5)
    assert d.state == "speaking"
    assert of(out, cmd.PlayAudio) and cmd.Synthesize(2, 1, "We have one at eight.") in out
    assert not of(out, cmd.StartCompletion)  # the prepared reply is the answer
    assert d.core.conversation.history.messages[-1] == cmd.Message("user", "I need a table")


def test_a_resumed_turn_voids_the_speculation_and_its_text_never_reaches_the_history():
    d = Drive()
    d.greet()
    d(ev.CallerTurnLikelyOver("I need a table"), 3.0)
    d(ev.LlmText(2, "Sure. "), 3.1)
    out = d(ev.CallerTurnResumed(), 3.2)
    assert out == [cmd.CancelCompletion(2), cmd.CancelSynthesis(2)]
    assert d.voice(2, 0, 3.3) == []  # stale: dropped
    out = d.say("I need a table for two", 4.0)
    (start,) = of(out, cmd.StartCompletion)
    assert not start.speculative and start.utterance == 3
    assert [m.content for m in start.messages if m.role == "user"] == ["I need a table for two"]


def test_a_turn_that_ends_with_other_words_asks_again():
    d = Drive()
    d.greet()
    d(ev.CallerTurnLikelyOver("I need a table"), 3.0)
    out = d.say("I need a table for two", 3.4)
    assert cmd.CancelCompletion(2) in out and cmd.CancelSynthesis(2) in out
    (start,) = of(out, cmd.StartCompletion)
    assert not start.speculative and start.messages[-1].content == "I need a table for two"


def test_with_nova_a_final_that_ends_a_sentence_starts_the_speculation():
    d = Drive(speculate_on_final=True)
    d.greet()
    out = d(ev.Transcript("I need a table.", is_final=True, speech_final=False), 3.0)
    (start,) = of(out, cmd.StartCompletion)
    assert start.speculative
    d(ev.LlmText(2, "Sure. "), 3.1)
    d(ev.LlmDone(2), 3.1)
    d.voice(2, 0, 3.2)
    out = d(ev.Transcript("", is_final=True, speech_final=True), 3.4)
    assert d.state == "speaking" and of(out, cmd.PlayAudio)


# -- another process takes the call over ----------------------------------------------------------


def test_a_taken_over_call_restarts_its_timers_where_they_stood():
    d = Drive()
    d.greet()  # listening: the idle timer runs until 10.0, the call limit until 600
    out = d(ev.CallTakenOver("worker-2"), 4.0)
    assert set(out) == {cmd.StartTimer("idle", 10.0), cmd.StartTimer("call_limit", 600.0)}
    assert d.state == "listening"


def test_a_reply_being_thought_about_is_asked_for_again():
    d = Drive()
    d.greet()
    d.say("Do you open on Sundays?", 3.0)
    d(ev.LlmText(2, "We do"), 3.1)
    out = d(ev.CallTakenOver(), 3.5)
    assert cmd.CancelCompletion(2) in out
    (start,) = of(out, cmd.StartCompletion)
    assert start.utterance == 3 and start.messages[-1].content == "Do you open on Sundays?"
    assert [m.content for m in start.messages if m.role == "user"] == ["Do you open on Sundays?"]


def test_what_the_phone_had_not_confirmed_is_said_again_on_the_new_stream():
    d = Drive()
    d.greet()
    d.say("Tell me about the menu", 3.0)
    d(ev.LlmText(2, "We have pasta. And we have pizza. "), 3.1)
    d(ev.LlmDone(2), 3.2)
    d.voice(2, 0, 3.3)
    d.voice(2, 1, 3.3)
    d(ev.AudioPlayed("2.0"), 4.0)  # the first sentence was heard; the second's ack never came
    out = d(ev.CallTakenOver(), 4.5)
    assert d.state == "speaking"
    assert of(out, cmd.Synthesize) == [cmd.Synthesize(3, 0, "And we have pizza.")]
    assert d.core.conversation.utterance.played_before == ["We have pasta."]


def test_a_speculation_voided_after_its_completion_finished_counts_as_wasted():
    """The footer's ``speculation``: only the synthesis is left to cancel, and it is a waste."""
    writer = LogWriter(io.StringIO())
    d = Drive(writer)
    d.greet()
    d(ev.CallerTurnLikelyOver("I need a table"), 3.0)
    d(ev.LlmText(2, "Sure. "), 3.1)
    d(ev.LlmDone(2), 3.15)
    out = d(ev.CallerTurnResumed(), 3.2)
    assert list(out) == [cmd.CancelSynthesis(2)]
    assert writer.latency.speculation() == {"started": 1, "wasted": 1}
    assert [turn.utterance for turn in writer.latency.turns()] == []
