"""Invariants of the engine under random event sequences (Hypothesis)."""

import ast
import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import commands as cmd
from engine import events as ev
from engine.config import AgentConfig
from engine.conversation import Conversation
from engine.core import Engine, Step, Transition
from engine.machine import FAST_PATH, CallMachine, Timer, derived, dropped, machine_event

turns = st.integers(0, 6)
seqs = st.integers(0, 3)
texts = st.sampled_from(["", "uh-huh", "okay", "yes please", "a table for two", "stop"])
timers = st.sampled_from(
    [
        "idle",
        "playout",
        "barge_in",
        "false_interruption",
        "call_limit",
        "dtmf",
        "thinking",
        "reply",
        "deaf",
        "bogus",
    ]
)

events = st.one_of(
    st.builds(ev.CallStarted, st.just("c")),
    st.builds(ev.CallerSpeechStarted, at=st.floats(0, 1)),
    st.builds(ev.CallerSpeechStopped, at=st.floats(0, 1)),
    st.builds(ev.Transcript, texts, st.booleans(), st.booleans()),
    st.builds(ev.CallerPaused),
    st.builds(ev.LlmText, turns, st.sampled_from(["Hi. ", "there", "! How ", "?"])),
    st.builds(
        ev.LlmToolCall,
        turns,
        st.sampled_from(["end_call", "transfer_call", "lookup"]),
        st.sampled_from(["{}", '{"to": "+1555"}', "not json", "[]"]),
    ),
    st.builds(ev.LlmDone, turns),
    st.builds(ev.LlmFailed, turns, st.just("500")),
    st.builds(ev.TtsAudio, turns, seqs, st.binary(min_size=0, max_size=4)),
    st.builds(ev.TtsDone, turns, seqs),
    st.builds(ev.TtsFailed, turns, seqs, st.just("err")),
    st.builds(ev.AudioPlayed, st.builds("{}.{}".format, turns, seqs)),
    st.builds(ev.AudioCleared),
    st.builds(ev.TimerFired, timers),
    st.builds(ev.DtmfPressed, st.sampled_from(["1", "#"])),
    st.builds(ev.SttLost, st.just("dropped")),
    st.builds(ev.CallerTurnLikelyOver, texts),
    st.builds(ev.CallerTurnResumed),
    st.builds(ev.SttRestored),
    st.builds(ev.CallTakenOver),
    st.builds(ev.CallEnded, st.just("stop")),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(events, st.floats(0, 2)), max_size=60),
    st.booleans(),
)
def test_random_event_sequences_keep_the_invariants(sequence, greeting_interruptible):
    core = Engine(AgentConfig(greeting_interruptible=greeting_interruptible))
    now = 0.0
    cancelled: set[int] = set()
    active: int | None = None
    held: set[int] = set()  # speculative replies not confirmed by the turn's end
    for event, gap in sequence:
        now += gap
        was_ended = core.ended
        step = core.step(event, now)  # never raises
        if was_ended:
            assert step.commands == ()
        if (
            isinstance(event, ev.LlmDone | ev.LlmFailed)
            and step.dropped is None
            and event.utterance == active
        ):
            active = None
        if any(t.source == "listening" for t in step.transitions):
            held.clear()  # the turn ended: a held reply was confirmed (or dropped)
        for command in step.commands:
            if isinstance(command, cmd.PlayAudio):
                assert command.utterance not in cancelled, "audio of a cancelled turn"
                assert command.utterance not in held, "audio of an unconfirmed speculation"
            elif isinstance(command, cmd.CancelSynthesis | cmd.CancelCompletion):
                cancelled.add(command.utterance)
            if isinstance(command, cmd.CancelCompletion):
                assert command.utterance == active
                active = None
            elif isinstance(command, cmd.StartCompletion):
                assert active is None, "two completions at once"
                active = command.utterance
                if command.speculative:
                    held.add(command.utterance)


FORBIDDEN = {"trio", "httpx", "httpx2", "quart", "quart_trio", "hypercorn", "trio_websocket"}
FORBIDDEN |= {"openai", "socket", "adapters", "asyncio", "time", "threading", "requests"}


def test_the_engine_imports_no_io():
    for path in pathlib.Path("engine").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            for name in names:
                assert name.split(".")[0] not in FORBIDDEN, f"{path} imports {name}"


class MachineOnly:
    """A reference stepper: the declared rules, every event through ``CallMachine.send``.

    It applies the same documented steps as the engine (drop rules, a fired timer
    stops, the derived loop) but never the fast path, so the two must agree.
    """

    def __init__(self) -> None:
        self.conversation = Conversation(AgentConfig())
        self.transitions: list[Transition] = []
        self.machine = CallMachine(model=self.conversation, listeners=[self])

    def after_transition(self, event, source, target):
        if source is not target:
            self.transitions.append(Transition(source.id, target.id, str(event)))

    def step(self, event, now) -> Step:
        if self.conversation.state == "ended":
            return Step(dropped="call ended")
        if (reason := dropped(self.conversation, event)) is not None:
            return Step(dropped=reason)
        if isinstance(event, ev.TimerFired):
            del self.conversation.timers[Timer(event.name)]
        self.transitions = []
        self.machine.send(machine_event(event), e=event, now=now)
        while (name := derived(self.conversation, self.conversation.state)) is not None:
            self.machine.send(name, e=event, now=now)
        commands, self.conversation.outbox = tuple(self.conversation.outbox), []
        return Step(commands, tuple(self.transitions))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(events, st.floats(0, 2)), max_size=60))
def test_the_fast_path_behaves_exactly_like_the_machine(sequence):
    fast, slow = Engine(), MachineOnly()
    now = 0.0
    for event, gap in sequence:
        now += gap
        assert fast.step(event, now) == slow.step(event, now)
        assert fast.state == slow.conversation.state


def test_the_fast_path_covers_the_frequent_events_while_the_agent_talks():
    for state in ("thinking", "speaking"):
        for event in ("llm_text", "tts_audio", "audio_played", "caller_speech_stopped"):
            assert (state, event) in FAST_PATH or (state, event) == ("thinking", "tts_audio")


flux_texts = st.sampled_from(["I need a table", "I need a table for two", "for two", "cancel"])
flux_events = st.one_of(
    st.builds(ev.CallerTurnLikelyOver, flux_texts),
    st.builds(ev.CallerTurnResumed),
    st.builds(ev.Transcript, flux_texts, st.just(True), st.just(True)),
    st.builds(ev.Transcript, flux_texts, st.just(False), st.just(False)),
    st.builds(ev.CallerSpeechStarted, at=st.floats(0, 1), source=st.just("stt")),
    st.builds(ev.LlmText, st.integers(2, 8), st.sampled_from(["Sure. ", "We do", " have one. "])),
    st.builds(ev.LlmDone, st.integers(2, 8)),
    st.builds(ev.TtsAudio, st.integers(2, 8), st.integers(0, 1), st.just(b"\x7f" * 8)),
    st.builds(ev.TtsDone, st.integers(2, 8), st.integers(0, 1)),
    st.builds(ev.AudioPlayed, st.builds("{}.{}".format, st.integers(2, 8), st.integers(0, 1))),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(flux_events, max_size=40))
def test_whatever_the_order_of_flux_events_no_unconfirmed_speculation_is_played(sequence):
    core = Engine(AgentConfig(greeting="Hi."))
    core.step(ev.CallStarted("c"), 0.0)
    core.step(ev.TtsAudio(1, 0, b"\x7f" * 8), 0.1)
    core.step(ev.TtsDone(1, 0), 0.1)
    core.step(ev.AudioPlayed("1.0"), 0.2)
    assert core.state == "listening"
    held: set[int] = set()
    dropped: set[int] = set()
    now = 1.0
    for event in sequence:
        now += 0.1
        step = core.step(event, now)
        if any(t.source == "listening" for t in step.transitions):
            held.clear()
        for command in step.commands:
            if isinstance(command, cmd.StartCompletion) and command.speculative:
                held.add(command.utterance)
            elif isinstance(command, cmd.CancelCompletion | cmd.CancelSynthesis):
                if command.utterance in held:
                    dropped.add(command.utterance)
                    held.discard(command.utterance)
            elif isinstance(command, cmd.PlayAudio):
                assert command.utterance not in held, "audio of an unconfirmed speculation"
                assert command.utterance not in dropped, "audio of a cancelled speculation"
    for message in core.conversation.history.messages:
        assert message.role != "user" or message.content, "an empty user turn"
