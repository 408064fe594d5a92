"""The model behind :class:`engine.machine.CallMachine`: a call's data, its guards, its actions.

Guards answer questions about the call and the event at hand; actions change
the call and append commands to ``outbox``. Nothing here reads a clock: the
time of the event arrives as ``now``.
"""

from __future__ import annotations

import json
from typing import Any

from engine import commands as cmd
from engine.audio import duration
from engine.config import AgentConfig
from engine.conversation import History, Speech
from engine.sentences import SentenceSplitter
from engine.turns import is_backchannel

#: Timer names (``TimerFired.name``).
IDLE, PLAYOUT, BARGE_IN, FALSE_INTERRUPTION, CALL_LIMIT, DTMF = (
    "idle",
    "playout",
    "barge_in",
    "false_interruption",
    "call_limit",
    "dtmf",
)
THINKING, REPLY, DEAF = "thinking", "reply", "deaf"


class Call:
    """One phone call's conversation state."""

    def __init__(self, config: AgentConfig) -> None:
        self.config = config
        self.history = History(config.system_prompt)
        self.outbox: list[Any] = []
        self.turn = 0  # id of the newest speech (and its completion)
        self.speech: Speech | None = None  # what the agent is saying now
        self.held: Speech | None = None  # what an interruption cut off
        self.llm_turn: int | None = None  # the completion streaming now
        self.splitter = self.new_splitter()
        self.user_words: list[str] = []  # the caller's turn so far
        self.turn_ready = False  # the caller finished a turn we have not answered
        self.digits = ""
        self.reprompts = 0
        self.playout_end = 0.0  # when the phone will have played all it was sent
        self.checkpoints: dict[str, tuple[int, int]] = {}
        self.timers: dict[str, float] = {}
        self.recognizer_down = False  # the caller's words cannot be heard (an outage)
        self.deaf_notice_given = False  # said once per outage

    # -- small helpers ---------------------------------------------------------
    def new_splitter(self) -> SentenceSplitter:
        return SentenceSplitter(self.config.first_clause_chars)

    def emit(self, command: Any) -> None:
        self.outbox.append(command)

    def start_timer(self, name: str, at: float) -> None:
        self.timers[name] = at
        self.emit(cmd.StartTimer(name, at))

    def cancel_timer(self, name: str) -> None:
        if self.timers.pop(name, None) is not None:
            self.emit(cmd.CancelTimer(name))

    def new_speech(self, kind: str, texts: list[str], **kw: Any) -> Speech:
        self.turn += 1
        speech = Speech(turn=self.turn, kind=kind, text_done=True, **kw)
        self.speech = speech
        for text in texts:
            self.emit(cmd.Synthesize(speech.turn, speech.add(text).seq, text))
        return speech

    def add_sentence(self, text: str) -> None:
        assert self.speech is not None
        self.emit(cmd.Synthesize(self.speech.turn, self.speech.add(text).seq, text))

    def stop_completion(self) -> None:
        if self.llm_turn is not None:
            self.emit(cmd.CancelCompletion(self.llm_turn))
            self.llm_turn = None
            self.splitter = self.new_splitter()

    def user_text(self) -> str:
        return " ".join(self.user_words).strip()

    # -- guards ----------------------------------------------------------------
    def greeting_interruptible(self) -> bool:
        return self.config.greeting_interruptible

    def interruptible(self) -> bool:
        return self.speech is None or self.speech.interruptible

    def long_enough(self, e: Any, now: float) -> bool:
        at = getattr(e, "at", now)
        return now - at >= self.config.barge_in_min_speech - 1e-9  # float slack

    def words(self, e: Any) -> bool:
        text = e.text.strip()
        return bool(text) and not is_backchannel(text, self.config.backchannels)

    def final_words(self, e: Any) -> bool:
        return e.is_final and self.words(e)

    def backchannel(self, e: Any) -> bool:
        return e.is_final and is_backchannel(e.text, self.config.backchannels)

    def ends_turn(self, e: Any) -> bool:
        """A final with speech_final closes the turn if anything was said in it."""
        if not (e.is_final and e.speech_final):
            return False
        return bool(self.user_text()) or bool(e.text.strip())

    def ends_turn_with_words(self, e: Any) -> bool:
        """While the agent talks, only real words (not "uh-huh") end a turn."""
        return self.words(e) and self.ends_turn(e)

    def saying_goodbye(self) -> bool:
        return self.speech is not None and self.speech.kind == "goodbye"

    def turn_pending(self) -> bool:
        return self.turn_ready or bool(self.user_text()) or bool(self.digits)

    def dtmf_enabled(self) -> bool:
        return self.config.dtmf_to_llm

    def audible(self, e: Any) -> bool:
        """This audio goes to the caller at once (it is for the sentence playing next)."""
        return self.speech is not None and e.seq == self.speech.next_play

    def can_apologize(self, e: Any) -> bool:
        """Say sorry for a failed sentence, unless the sorry itself (or a goodbye) failed."""
        speech = self.speech
        if speech is None or speech.kind in ("apology", "goodbye"):
            return False
        sentence = speech.get(e.seq)
        return sentence is not None and sentence.text != self.config.apology

    def reprompts_left(self) -> bool:
        return self.reprompts < self.config.max_reprompts

    def resumable(self) -> bool:
        return self.held is not None and bool(self.held.unheard)

    def then_hangup(self) -> bool:
        return self.speech is not None and self.speech.then == "hangup"

    def then_transfer(self) -> bool:
        return self.speech is not None and self.speech.then == "transfer"

    # -- actions: speaking -----------------------------------------------------
    def say_greeting(self) -> None:
        self.start_timer(CALL_LIMIT, self.config.max_call_seconds)
        self.new_speech("greeting", [self.config.greeting], interruptible=False)

    def say_reprompt(self) -> None:
        self.reprompts += 1
        self.new_speech("reprompt", [self.config.reprompt])

    def say_goodbye(self) -> None:
        self.cancel_timer(IDLE)
        self.new_speech("goodbye", [self.config.goodbye], interruptible=False, then="hangup")

    def apologize(self) -> None:
        """The model failed: end the reply with an apology instead of going silent."""
        assert self.speech is not None
        self.llm_turn = None
        self.splitter = self.new_splitter()
        self.speech.text_done = True
        self.add_sentence(self.config.apology)

    def apologize_for_voice(self) -> None:
        """The voice failed: drop this speech and say sorry in a fresh one."""
        assert self.speech is not None
        self.stop_completion()
        self.emit(cmd.CancelSynthesis(self.speech.turn))
        self.close_speech()
        self.new_speech("apology", [self.config.apology])

    def skip_sentence(self, e: Any) -> None:
        """An apology that cannot be voiced is given up; the call goes on."""
        assert self.speech is not None
        sentence = self.speech.get(e.seq)
        if sentence is not None:
            sentence.queued.clear()
            sentence.synthesized = True
            sentence.sent = sentence.heard = True
        self.speech.text_done = self.speech.text_done or self.llm_turn is None
        self.pump(None)

    # -- actions: the model's reply ----------------------------------------------
    def ask(self, now: float) -> None:
        """The caller's turn is complete: ask the model for the reply."""
        self.close_speech()
        self._digits_done()
        self.stop_completion()
        self.cancel_timer(IDLE)
        self.cancel_timer(DTMF)
        self.history.add("user", self.user_text())
        self.user_words.clear()
        self.turn_ready = False
        self.reprompts = 0
        self.turn += 1
        self.speech = Speech(turn=self.turn, kind="reply")
        self.splitter = self.new_splitter()
        self.llm_turn = self.turn
        self.emit(cmd.StartCompletion(self.turn, self.history.for_model()))
        # Neither timer is ever cancelled: they matter only in the states they are declared
        # for (a filler while still thinking, a give-up while the model still writes), and
        # the next turn's ask restarts both.
        self.start_timer(THINKING, now + self.config.filler_after)
        if self.config.reply_deadline > 0:
            self.start_timer(REPLY, now + self.config.reply_deadline)

    def hold_reply(self) -> None:
        """The caller kept talking before we said anything: drop the reply, keep their words."""
        self.stop_completion()
        self.cancel_timer(BARGE_IN)
        if self.speech is not None:
            self.emit(cmd.CancelSynthesis(self.speech.turn))
            self.speech = None
        taken_back = self.history.take_back_user()
        if taken_back:
            self.user_words.insert(0, taken_back)

    def take_text(self, e: Any) -> None:
        for sentence in self.splitter.push(e.text):
            self.add_sentence(sentence)

    def take_tool_call(self, e: Any) -> None:
        assert self.speech is not None
        try:
            args = json.loads(e.arguments or "{}")
        except ValueError:
            args = {}
        if not isinstance(args, dict):
            args = {}
        if e.name == "end_call":
            self.speech.then = "hangup"
            self.speech.interruptible = False
        elif e.name == "transfer_call" and args.get("to"):
            self.speech.then = "transfer"
            self.speech.transfer_to = str(args["to"])

    def take_done(self) -> None:
        assert self.speech is not None
        rest = self.splitter.flush()
        if rest:
            self.add_sentence(rest)
        if self.speech.then == "hangup" and not self.speech.sentences:
            self.add_sentence(self.config.goodbye)
        self.llm_turn = None
        self.speech.text_done = True

    # -- actions: audio to the caller ----------------------------------------------
    def take_audio(self, e: Any, now: float) -> None:
        assert self.speech is not None
        sentence = self.speech.get(e.seq)
        if sentence is not None and not sentence.synthesized and len(e.audio):
            sentence.queued.append(e.audio)
            self.pump(now)

    def take_audio_end(self, e: Any, now: float) -> None:
        assert self.speech is not None
        sentence = self.speech.get(e.seq)
        if sentence is not None:
            sentence.synthesized = True
            self.pump(now)

    def pump(self, now: float | None) -> None:
        """Send, in order, all audio whose earlier sentences are out; checkpoint each sentence."""
        speech = self.speech
        assert speech is not None
        while (sentence := speech.get(speech.next_play)) is not None:
            for audio in sentence.queued:
                if now is not None:
                    self.playout_end = max(self.playout_end, now) + duration(audio)
                self.emit(cmd.PlayAudio(speech.turn, sentence.seq, audio))
            sentence.queued.clear()
            if not sentence.synthesized:
                return
            if not sentence.sent:
                sentence.sent = True
                name = f"{speech.turn}.{sentence.seq}"
                self.checkpoints[name] = (speech.turn, sentence.seq)
                self.emit(cmd.Checkpoint(name))
                if now is not None:
                    self.start_timer(PLAYOUT, max(self.playout_end, now) + self.config.ack_grace)
            speech.next_play += 1

    def mark_heard(self, e: Any) -> None:
        where = self.checkpoints.pop(e.name, None)
        if where is not None:
            self._heard(*where)
        if not self.checkpoints:
            self.cancel_timer(PLAYOUT)

    def assume_heard(self) -> None:
        """No acknowledgement came in time (the phone does not promise one): take it as heard."""
        for turn, seq in self.checkpoints.values():
            self._heard(turn, seq)
        self.checkpoints.clear()

    def _heard(self, turn: int, seq: int) -> None:
        speech = self.speech
        if speech is not None and speech.turn == turn and (s := speech.get(seq)) is not None:
            s.heard = True

    def close_speech(self) -> None:
        """Write what the caller heard of the agent's speech into the history."""
        for speech in (self.held, self.speech):
            if speech is not None:
                self.history.add("assistant", speech.heard_text)
        self.held = self.speech = None

    # -- actions: turn-taking ------------------------------------------------------
    def watch_speech(self, e: Any) -> None:
        """Speech too short to interrupt yet: check again when it is long enough."""
        self.start_timer(BARGE_IN, e.at + self.config.barge_in_min_speech)

    def caller_talking(self) -> None:
        self.cancel_timer(IDLE)

    def caller_quiet(self, now: float) -> None:
        self.cancel_timer(BARGE_IN)
        idle = self.speech is None and self.held is None and self.llm_turn is None
        # While the recognizer is down the caller may be talking to no one: their silence
        # after speech is not idleness.
        idle = idle and not self.recognizer_down
        if idle and not self.turn_pending() and IDLE not in self.timers:
            self.start_timer(IDLE, now + self.config.idle_timeout)

    def cut_off(self, now: float) -> None:
        """Barge-in: silence the phone, stop the reply, keep only what was heard."""
        self.emit(cmd.ClearAudio())
        self.stop_completion()
        if self.speech is not None:
            self.emit(cmd.CancelSynthesis(self.speech.turn))
            if self.held is not None:
                self.speech.heard_before[:0] = [self.held.heard_text]
            self.held, self.speech = self.speech, None
        self.cancel_timer(BARGE_IN)
        self.cancel_timer(PLAYOUT)
        self.checkpoints.clear()
        self.playout_end = now
        self.start_timer(FALSE_INTERRUPTION, now + self.config.false_interruption_timeout)

    def resume(self) -> None:
        """A false interruption (a cough, a door, an "uh-huh"): pick up where the caller stopped hearing."""
        held = self.held
        assert held is not None
        self.cancel_timer(FALSE_INTERRUPTION)
        self.held = None
        self.new_speech(
            held.kind,
            held.unheard,
            then=held.then,
            transfer_to=held.transfer_to,
            heard_before=[t for t in [held.heard_text] if t],
        )

    def hear(self, e: Any) -> None:
        """Collect the caller's final words into their turn."""
        text = e.text.strip()
        if not text:
            return
        self.cancel_timer(IDLE)
        if self.words(e):
            self.cancel_timer(FALSE_INTERRUPTION)
        if e.is_final:
            self.user_words.append(text)
            if e.speech_final:
                self.turn_ready = True

    def mark_turn_ready(self) -> None:
        if self.user_text():
            self.turn_ready = True

    def key(self, e: Any, now: float) -> None:
        if not self.config.dtmf_to_llm:
            return
        self.cancel_timer(IDLE)
        if e.digit == "#":
            self.start_timer(DTMF, now)
        else:
            self.digits += e.digit
            self.start_timer(DTMF, now + self.config.dtmf_gap)

    def _digits_done(self) -> None:
        if self.digits:
            self.user_words.append(self.config.dtmf_template.format(digits=self.digits))
            self.digits = ""

    def await_caller(self, now: float) -> None:
        """The caller heard us out: now their silence counts."""
        self.start_timer(IDLE, now + self.config.idle_timeout)

    # -- actions: the agent's silence, the recognizer's outages -------------------
    def fill_silence(self, now: float) -> None:
        """The caller has waited ``filler_after`` in silence: say the filler, if the model has
        not written a sentence yet (the line is never dead while it thinks)."""
        speech = self.speech
        if speech is not None and not speech.sentences:
            self.add_sentence(self.config.filler)

    def give_up_on_reply(self) -> None:
        """The model has not finished by ``reply_deadline``: stop waiting and apologize."""
        if self.llm_turn is None or self.speech is None:
            return
        self.emit(cmd.CancelCompletion(self.llm_turn))
        self.apologize()

    def lose_recognizer(self, now: float) -> None:
        if self.recognizer_down:
            return
        self.recognizer_down = True
        self.start_timer(DEAF, now + self.config.deaf_notice_after)

    def restore_recognizer(self) -> None:
        self.recognizer_down = False
        self.deaf_notice_given = False
        self.cancel_timer(DEAF)

    def resume_idle(self, now: float) -> None:
        """Listening with the recognizer back: the caller's silence counts again."""
        if IDLE not in self.timers and self.speech is None and not self.turn_pending():
            self.start_timer(IDLE, now + self.config.idle_timeout)

    def say_deaf_notice(self) -> None:
        self.deaf_notice_given = True
        self.cancel_timer(IDLE)
        self.new_speech("notice", [self.config.deaf_notice])

    def rearm_deaf_notice(self, now: float) -> None:
        """The agent is busy talking: tell the caller later, if the outage lasts."""
        if not self.deaf_notice_given:
            self.start_timer(DEAF, now + self.config.deaf_notice_after)

    # -- actions: the end ----------------------------------------------------------
    def hang_up(self) -> None:
        self.emit(cmd.Hangup("agent"))

    def transfer(self) -> None:
        assert self.speech is not None
        self.emit(cmd.Transfer(self.speech.transfer_to, reason="transfer_call"))
