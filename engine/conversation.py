"""The model behind :class:`engine.machine.CallMachine`: a call's data, its guards, its actions.

The machine says *when*; this module says *what*. Guards answer questions
about the conversation and the event at hand; actions change it and append
commands to ``outbox``. Nothing here reads a clock: the event's time arrives
as ``now``. Names say whose voice: the *caller* speaks words and pauses; the
*agent* speaks utterances made of sentences, which the phone *plays*.
"""

from __future__ import annotations

import json
from typing import Any

from engine import commands as cmd
from engine.audio import duration
from engine.config import AgentConfig
from engine.history import History
from engine.machine import Timer
from engine.sentences import SentenceSplitter
from engine.turns import is_backchannel, normalize
from engine.utterance import AgentUtterance


class Conversation:
    """One phone call's conversation: what was said, what is being said, what is awaited."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.history = History(config.system_prompt)
        self.outbox: list[Any] = []
        self.last_id = 0  # id of the newest utterance (and its completion)
        self.utterance: AgentUtterance | None = None  # what the agent is saying now
        self.interrupted: AgentUtterance | None = None  # what an interruption cut off
        self.completion: int | None = None  # the completion streaming now
        self.splitter = self.new_splitter()
        self.caller_words: list[str] = []  # the caller's turn so far
        self.turn_ready = False  # the caller finished a turn we have not answered
        self.digits = ""
        self.reprompts = 0
        self.playout_end = 0.0  # when the phone will have played all it was sent
        self.checkpoints: dict[str, tuple[int, int]] = {}
        self.timers: dict[Timer, float] = {}  # running timers and when they fire
        self.caller_voice = False  # the local VAD hears the caller now
        self.caller_quiet_since = 0.0  # when the local VAD last heard the caller stop
        self.heard_nothing = False  # the recognizer said the interrupting sound had no words
        self.speculated = ""  # the caller's words a held (speculative) reply answers
        self.recognizer_down = False  # the caller's words cannot be heard (an outage)
        self.deaf_notice_given = False  # said once per outage

    # -- small helpers ---------------------------------------------------------
    def new_splitter(self) -> SentenceSplitter:
        return SentenceSplitter(self.config.first_clause_chars)

    def emit(self, command: Any) -> None:
        self.outbox.append(command)

    def start_timer(self, name: Timer, at: float) -> None:
        self.timers[name] = at
        self.emit(cmd.StartTimer(name, at))

    def cancel_timer(self, name: Timer) -> None:
        if self.timers.pop(name, None) is not None:
            self.emit(cmd.CancelTimer(name))

    def start_utterance(self, kind: str, texts: list[str], **kw: Any) -> AgentUtterance:
        self.drop_speculation()
        self.last_id += 1
        utterance = AgentUtterance(id=self.last_id, kind=kind, text_done=True, **kw)
        self.utterance = utterance
        for text in texts:
            self.emit(cmd.Synthesize(utterance.id, utterance.add(text).seq, text))
        return utterance

    def add_sentence(self, text: str) -> None:
        utterance = self.utterance
        assert utterance is not None
        sentence = utterance.add(text)
        if utterance.held and sentence.seq >= self.config.speculative_sentences:
            sentence.requested = False  # synthesized only if the speculation is confirmed
            return
        self.emit(cmd.Synthesize(utterance.id, sentence.seq, text))

    def stop_completion(self) -> None:
        if self.completion is not None:
            self.emit(cmd.CancelCompletion(self.completion))
            self.completion = None
            self.splitter = self.new_splitter()

    def caller_text(self) -> str:
        return " ".join(self.caller_words).strip()

    # -- guards ----------------------------------------------------------------
    def greeting_interruptible(self) -> bool:
        return self.config.greeting_interruptible

    def interruptible(self) -> bool:
        return self.utterance is None or self.utterance.interruptible

    def long_enough(self, e: Any, now: float) -> bool:
        at = getattr(e, "at", now)
        return now - at >= self.config.barge_in_min_speech - 1e-9  # float slack

    def words(self, e: Any) -> bool:
        text = e.text.strip()
        return bool(text) and not is_backchannel(text, self.config.backchannels)

    def final_words(self, e: Any) -> bool:
        return e.is_final and self.words(e)

    def may_speculate(self, e: Any) -> bool:
        return self.config.speculate and bool(e.text.strip())

    def final_ends_a_sentence(self, e: Any) -> bool:
        """Nova's speculation point: a final (not yet the turn's end) that ends a sentence."""
        text = e.text.strip()
        return (
            self.config.speculate
            and self.config.speculate_on_final
            and e.is_final
            and not e.speech_final
            and text[-1:] in ".?!"
        )

    def confirms_speculation(self, e: Any) -> bool:
        """The turn ended with the very words the held reply answers."""
        if self.utterance is None or not self.utterance.held:
            return False
        said = normalize(f"{self.caller_text()} {e.text}")
        return bool(said) and said == self.speculated

    def speculation_audible(self) -> bool:
        utterance = self.utterance
        if utterance is None or not utterance.sentences:
            return False
        first = utterance.sentences[0]
        return bool(first.queued) or first.synthesized

    def no_words(self, e: Any) -> bool:
        """A final that ends speech with nothing in it, and nothing heard since the barge-in."""
        return bool(e.is_final and e.speech_final and not e.text.strip() and not self.caller_text())

    def backchannel(self, e: Any) -> bool:
        return e.is_final and is_backchannel(e.text, self.config.backchannels)

    def ends_turn(self, e: Any) -> bool:
        """A final with speech_final closes the turn if anything was said in it."""
        if not (e.is_final and e.speech_final):
            return False
        return bool(self.caller_text()) or bool(e.text.strip())

    def ends_turn_with_words(self, e: Any) -> bool:
        """While the agent talks, only real words (not "uh-huh") end a turn."""
        return self.words(e) and self.ends_turn(e)

    def saying_goodbye(self) -> bool:
        return self.utterance is not None and self.utterance.kind == "goodbye"

    def turn_pending(self) -> bool:
        return self.turn_ready or bool(self.caller_text()) or bool(self.digits)

    def dtmf_enabled(self) -> bool:
        return self.config.dtmf_to_llm

    def audible(self, e: Any) -> bool:
        """This audio goes to the caller at once (it is for the sentence playing next)."""
        return self.utterance is not None and e.seq == self.utterance.next_play

    def can_apologize(self, e: Any) -> bool:
        """Say sorry for a failed sentence, unless the sorry itself (or a goodbye) failed."""
        utterance = self.utterance
        if utterance is None or utterance.kind in ("apology", "goodbye"):
            return False
        sentence = utterance.get(e.seq)
        return sentence is not None and sentence.text != self.config.apology

    def reprompts_left(self) -> bool:
        return self.reprompts < self.config.max_reprompts

    def resumable(self) -> bool:
        return self.interrupted is not None and bool(self.interrupted.unplayed)

    def then_hangup(self) -> bool:
        return self.utterance is not None and self.utterance.then == "hangup"

    def then_transfer(self) -> bool:
        return self.utterance is not None and self.utterance.then == "transfer"

    # -- actions: speaking -----------------------------------------------------
    def say_greeting(self) -> None:
        self.start_timer(Timer.CALL_LIMIT, self.config.max_call_seconds)
        self.start_utterance("greeting", [self.config.greeting], interruptible=False)

    def say_reprompt(self) -> None:
        self.reprompts += 1
        self.start_utterance("reprompt", [self.config.reprompt])

    def say_goodbye(self) -> None:
        self.cancel_timer(Timer.IDLE)
        self.cancel_timer(Timer.FALSE_INTERRUPTION)
        self.start_utterance("goodbye", [self.config.goodbye], interruptible=False, then="hangup")

    def apologize(self) -> None:
        """The model failed: end the reply with an apology instead of going silent."""
        assert self.utterance is not None
        self.completion = None
        self.splitter = self.new_splitter()
        self.utterance.text_done = True
        self.add_sentence(self.config.apology)

    def apologize_for_voice(self) -> None:
        """The voice failed: drop this utterance and say sorry in a fresh one."""
        assert self.utterance is not None
        self.stop_completion()
        self.emit(cmd.CancelSynthesis(self.utterance.id))
        self.close_utterance()
        self.start_utterance("apology", [self.config.apology])

    def skip_sentence(self, e: Any) -> None:
        """An apology that cannot be voiced is given up; the call goes on."""
        assert self.utterance is not None
        sentence = self.utterance.get(e.seq)
        if sentence is not None:
            sentence.queued.clear()
            sentence.synthesized = True
            sentence.sent = sentence.played = True
        self.utterance.text_done = self.utterance.text_done or self.completion is None
        self.pump(None)

    # -- actions: the model's reply ----------------------------------------------
    def ask(self, now: float) -> None:
        """The caller's turn is complete: ask the model for the reply."""
        self.drop_speculation()
        self.close_utterance()
        self.stop_completion()
        self._caller_turn_taken()
        self.last_id += 1
        self.utterance = AgentUtterance(id=self.last_id, kind="reply")
        self.splitter = self.new_splitter()
        self.completion = self.last_id
        self.emit(cmd.StartCompletion(self.last_id, self.history.for_model()))
        # Neither timer is ever cancelled: they matter only in the states they are declared
        # for (a filler while still thinking, a give-up while the model still writes), and
        # the next turn's ask restarts both.
        self.start_timer(Timer.THINKING, now + self.config.filler_after)
        if self.config.reply_deadline > 0:
            self.start_timer(Timer.REPLY, now + self.config.reply_deadline)

    def speculate(self, e: Any) -> None:
        """The caller may be done: ask for the reply now, and hold it until the turn ends."""
        self._speculate(f"{self.caller_text()} {e.text}".strip())

    def speculate_on_words(self) -> None:
        self._speculate(self.caller_text())

    def _speculate(self, text: str) -> None:
        self.drop_speculation()
        self.last_id += 1
        self.utterance = AgentUtterance(id=self.last_id, kind="reply", held=True)
        self.splitter = self.new_splitter()
        self.completion = self.last_id
        self.speculated = normalize(text)
        messages = (*self.history.for_model(), cmd.Message("user", text))
        self.emit(cmd.StartCompletion(self.last_id, messages, speculative=True))

    def drop_speculation(self) -> None:
        """The caller went on (or said something else): the held reply is never played."""
        utterance = self.utterance
        if utterance is None or not utterance.held:
            return
        if self.completion == utterance.id:
            self.emit(cmd.CancelCompletion(utterance.id))
            self.completion = None
            self.splitter = self.new_splitter()
        self.emit(cmd.CancelSynthesis(utterance.id))
        self.utterance = None
        self.speculated = ""

    def commit_speculation(self, now: float) -> None:
        """The turn ended as foreseen: the held reply is the answer; what is ready plays now."""
        utterance = self.utterance
        assert utterance is not None and utterance.held
        self._caller_turn_taken()
        self.speculated = ""
        utterance.held = False
        for sentence in utterance.sentences:
            if not sentence.requested:
                sentence.requested = True
                self.emit(cmd.Synthesize(utterance.id, sentence.seq, sentence.text))
        self.start_timer(Timer.THINKING, now + self.config.filler_after)
        if self.config.reply_deadline > 0 and self.completion is not None:
            self.start_timer(Timer.REPLY, now + self.config.reply_deadline)
        self.pump(now)

    def _caller_turn_taken(self) -> None:
        """The caller's words (and keys) become one user message; their silence stops counting."""
        self._digits_done()
        self.cancel_timer(Timer.IDLE)
        self.cancel_timer(Timer.DTMF)
        self.history.add("user", self.caller_text())
        self.caller_words.clear()
        self.turn_ready = False
        self.reprompts = 0

    def hold_reply(self) -> None:
        """The caller kept talking before we said anything: drop the reply, keep their words."""
        self.stop_completion()
        self.cancel_timer(Timer.BARGE_IN)
        if self.utterance is not None:
            self.emit(cmd.CancelSynthesis(self.utterance.id))
            self.utterance = None
        taken_back = self.history.take_back_user()
        if taken_back:
            self.caller_words.insert(0, taken_back)

    def take_text(self, e: Any) -> None:
        for sentence in self.splitter.push(e.text):
            self.add_sentence(sentence)

    def take_tool_call(self, e: Any) -> None:
        assert self.utterance is not None
        try:
            args = json.loads(e.arguments or "{}")
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {}
        if e.name == "end_call":
            self.utterance.then = "hangup"
            self.utterance.interruptible = False
        elif e.name == "transfer_call" and args.get("to"):
            self.utterance.then = "transfer"
            self.utterance.transfer_to = str(args["to"])

    def take_done(self) -> None:
        assert self.utterance is not None
        rest = self.splitter.flush()
        if rest:
            self.add_sentence(rest)
        if self.utterance.then == "hangup" and not self.utterance.sentences:
            self.add_sentence(self.config.goodbye)
        self.completion = None
        self.utterance.text_done = True

    # -- actions: audio to the caller ----------------------------------------------
    def take_audio(self, e: Any, now: float) -> None:
        assert self.utterance is not None
        sentence = self.utterance.get(e.seq)
        if sentence is not None and not sentence.synthesized and len(e.audio):
            sentence.queued.append(e.audio)
            self.pump(now)

    def take_audio_end(self, e: Any, now: float) -> None:
        assert self.utterance is not None
        sentence = self.utterance.get(e.seq)
        if sentence is not None:
            sentence.synthesized = True
            self.pump(now)

    def pump(self, now: float | None) -> None:
        """Send, in order, all audio whose earlier sentences are out; checkpoint each sentence."""
        utterance = self.utterance
        assert utterance is not None
        if utterance.held:
            return  # a speculative reply waits for the caller's turn to end
        while (sentence := utterance.get(utterance.next_play)) is not None:
            for audio in sentence.queued:
                if now is not None:
                    self.playout_end = max(self.playout_end, now) + duration(audio)
                self.emit(cmd.PlayAudio(utterance.id, sentence.seq, audio))
            sentence.queued.clear()
            if not sentence.synthesized:
                return
            if not sentence.sent:
                sentence.sent = True
                name = f"{utterance.id}.{sentence.seq}"
                self.checkpoints[name] = (utterance.id, sentence.seq)
                self.emit(cmd.Checkpoint(name))
                if now is not None:
                    self.start_timer(
                        Timer.PLAYOUT, max(self.playout_end, now) + self.config.ack_grace
                    )
            utterance.next_play += 1

    def mark_played(self, e: Any) -> None:
        where = self.checkpoints.pop(e.name, None)
        if where is not None:
            self._played(*where)
        if not self.checkpoints:
            self.cancel_timer(Timer.PLAYOUT)

    def assume_played(self) -> None:
        """No acknowledgement came in time (the phone does not promise one): take it as heard."""
        for utterance_id, seq in self.checkpoints.values():
            self._played(utterance_id, seq)
        self.checkpoints.clear()

    def _played(self, utterance_id: int, seq: int) -> None:
        utterance = self.utterance
        if (
            utterance is not None
            and utterance.id == utterance_id
            and (s := utterance.get(seq)) is not None
        ):
            s.played = True

    def close_utterance(self) -> None:
        """Write what the caller heard of the agent's utterance into the history."""
        for utterance in (self.interrupted, self.utterance):
            if utterance is not None:
                self.history.add("assistant", utterance.played_text)
        self.interrupted = self.utterance = None

    # -- actions: turn-taking ------------------------------------------------------
    def watch_caller_speech(self, e: Any) -> None:
        """Caller speech too short to interrupt yet: check again when it is long enough."""
        self.start_timer(Timer.BARGE_IN, e.at + self.config.barge_in_min_speech)

    def caller_talking(self) -> None:
        self.cancel_timer(Timer.IDLE)

    def voice_on(self, e: Any) -> None:
        """The local VAD is the authority on silence (the recognizer's onsets have no end)."""
        if e.source == "vad":
            self.caller_voice = True

    def caller_quiet(self, e: Any, now: float) -> None:
        if e.source == "vad":
            self.caller_voice = False
            self.caller_quiet_since = e.at
        self.cancel_timer(Timer.BARGE_IN)
        idle = self.utterance is None and self.interrupted is None and self.completion is None
        # While the recognizer is down the caller may be talking to no one: their silence
        # after speaking is not idleness.
        idle = idle and not self.recognizer_down
        if idle and not self.turn_pending() and Timer.IDLE not in self.timers:
            self.start_timer(Timer.IDLE, now + self.config.idle_timeout)

    def barge_in(self, now: float) -> None:
        """The caller talks over the agent: silence the phone, stop the reply, keep what was
        played, and give the caller ``false_interruption_timeout`` to say real words."""
        self.emit(cmd.ClearAudio())
        self.stop_completion()
        if self.utterance is not None:
            self.emit(cmd.CancelSynthesis(self.utterance.id))
            if self.interrupted is not None:
                self.utterance.played_before[:0] = [self.interrupted.played_text]
            self.interrupted, self.utterance = self.utterance, None
        self.cancel_timer(Timer.BARGE_IN)
        self.cancel_timer(Timer.PLAYOUT)
        self.checkpoints.clear()
        self.playout_end = now
        self.heard_nothing = False
        self.start_timer(Timer.FALSE_INTERRUPTION, now + self.config.false_interruption_timeout)

    def resume_soon(self, now: float) -> None:
        """The recognizer says the interruption had no words: resume once the line is quiet.

        The false-interruption timer is brought forward to ``resume_after_silence``
        after the VAD heard silence; while the VAD still hears the caller it waits
        for their silence (:meth:`resume_when_quiet`). The timer stays the fallback.
        """
        self.heard_nothing = True
        if not self.caller_voice:
            at = max(now, self.caller_quiet_since + self.config.resume_after_silence)
            self._bring_resume_forward(at)

    def resume_when_quiet(self, e: Any, now: float) -> None:
        if self.heard_nothing and e.source == "vad":
            self._bring_resume_forward(max(now, e.at + self.config.resume_after_silence))

    def hold_resume(self, now: float) -> None:
        """New sound after the verdict: it needs a verdict of its own, and the full wait."""
        if self.heard_nothing:
            self.heard_nothing = False
            self.start_timer(Timer.FALSE_INTERRUPTION, now + self.config.false_interruption_timeout)

    def _bring_resume_forward(self, at: float) -> None:
        due = self.timers.get(Timer.FALSE_INTERRUPTION)
        if due is not None and at < due:
            self.start_timer(Timer.FALSE_INTERRUPTION, at)

    def stop_talking(self, now: float) -> None:
        """The call's time is up: silence the phone and drop the reply for good (nothing to
        resume), keeping what was played."""
        self.emit(cmd.ClearAudio())
        self.stop_completion()
        if self.utterance is not None:
            self.emit(cmd.CancelSynthesis(self.utterance.id))
        self.cancel_timer(Timer.BARGE_IN)
        self.cancel_timer(Timer.PLAYOUT)
        self.checkpoints.clear()
        self.playout_end = now
        self.close_utterance()

    def resume(self) -> None:
        """A false interruption (a cough, a door, an "uh-huh"): pick up where the caller stopped hearing."""
        held = self.interrupted
        assert held is not None
        self.cancel_timer(Timer.FALSE_INTERRUPTION)
        self.interrupted = None
        self._say_the_rest(held)

    # -- actions: another process takes the call over ------------------------------
    def rearm_timers(self) -> None:
        """The new process runs none of the old one's timers: start each again, as due."""
        for name, at in list(self.timers.items()):
            self.emit(cmd.StartTimer(name, at))

    def ask_again(self, now: float) -> None:
        """The reply's completion died with the old process before anything played: ask again."""
        self.hold_reply()
        self.ask(now)

    def revoice(self) -> None:
        """What the phone had not confirmed playing is said again, on the new stream.

        The old stream's queue died with it; a sentence sent but not acknowledged
        may or may not have reached the caller, and saying it twice beats losing
        it. A reply the model was still writing ends with what was written.
        """
        utterance = self.utterance
        if utterance is None:
            return
        self.stop_completion()
        self.emit(cmd.CancelSynthesis(utterance.id))
        self.cancel_timer(Timer.PLAYOUT)
        self.checkpoints.clear()
        self.utterance = None
        self._say_the_rest(utterance, interruptible=utterance.interruptible)

    def _say_the_rest(self, cut: Any, **extra: Any) -> None:
        """A new utterance of what ``cut`` had not played, going on to what it led to."""
        played_before = [cut.played_text] if cut.played_text else []
        self.start_utterance(
            cut.kind,
            cut.unplayed,
            then=cut.then,
            transfer_to=cut.transfer_to,
            played_before=played_before,
            **extra,
        )

    def take_caller_words(self, e: Any) -> None:
        """Collect the caller's final words into their turn."""
        text = e.text.strip()
        if not text:
            return
        self.cancel_timer(Timer.IDLE)
        if self.words(e):
            self.cancel_timer(Timer.FALSE_INTERRUPTION)
        if e.is_final:
            self.caller_words.append(text)
            if e.speech_final:
                self.turn_ready = True

    def mark_turn_ready(self) -> None:
        if self.caller_text():
            self.turn_ready = True

    def take_key(self, e: Any, now: float) -> None:
        if not self.config.dtmf_to_llm:
            return
        self.cancel_timer(Timer.IDLE)
        if e.digit == "#":
            self.start_timer(Timer.DTMF, now)
        else:
            self.digits += e.digit
            self.start_timer(Timer.DTMF, now + self.config.dtmf_gap)

    def _digits_done(self) -> None:
        if self.digits:
            self.caller_words.append(self.config.dtmf_template.format(digits=self.digits))
            self.digits = ""

    def await_caller(self, now: float) -> None:
        """The caller heard us out: now their silence counts."""
        self.start_timer(Timer.IDLE, now + self.config.idle_timeout)

    # -- actions: the agent's silence, the recognizer's outages -------------------
    def fill_silence(self, now: float) -> None:
        """The caller has waited ``filler_after`` in silence: say the filler, if the model has
        not written a sentence yet (the line is never dead while it thinks)."""
        utterance = self.utterance
        if utterance is not None and not utterance.sentences:
            self.add_sentence(self.config.filler)

    def give_up_on_reply(self) -> None:
        """The model has not finished by ``reply_deadline``: stop waiting and apologize."""
        if self.completion is None or self.utterance is None:
            return
        self.emit(cmd.CancelCompletion(self.completion))
        self.apologize()

    def lose_recognizer(self, now: float) -> None:
        if self.recognizer_down:
            return
        self.recognizer_down = True
        self.start_timer(Timer.DEAF, now + self.config.deaf_notice_after)

    def restore_recognizer(self) -> None:
        self.recognizer_down = False
        self.deaf_notice_given = False
        self.cancel_timer(Timer.DEAF)

    def resume_idle(self, now: float) -> None:
        """Listening with the recognizer back: the caller's silence counts again."""
        if Timer.IDLE not in self.timers and self.utterance is None and not self.turn_pending():
            self.start_timer(Timer.IDLE, now + self.config.idle_timeout)

    def say_deaf_notice(self) -> None:
        self.deaf_notice_given = True
        self.cancel_timer(Timer.IDLE)
        self.start_utterance("notice", [self.config.deaf_notice])

    def rearm_deaf_notice(self, now: float) -> None:
        """The agent is busy talking: tell the caller later, if the outage lasts."""
        if not self.deaf_notice_given:
            self.start_timer(Timer.DEAF, now + self.config.deaf_notice_after)

    # -- actions: the end ----------------------------------------------------------
    def hang_up(self) -> None:
        self.emit(cmd.Hangup("agent"))

    def transfer(self) -> None:
        assert self.utterance is not None
        self.emit(cmd.Transfer(self.utterance.transfer_to, reason="transfer_call"))
