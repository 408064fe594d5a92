"""Invariants of the engine under random event sequences (Hypothesis)."""

import ast
import pathlib

from hypothesis import given, settings
from hypothesis import strategies as st

from engine import commands as cmd
from engine import events as ev
from engine.config import AgentConfig
from engine.core import CallCore

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
    st.builds(ev.SpeechStarted, at=st.floats(0, 1)),
    st.builds(ev.SpeechStopped, at=st.floats(0, 1)),
    st.builds(ev.Transcript, texts, st.booleans(), st.booleans()),
    st.builds(ev.UtteranceEnd),
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
    st.builds(ev.PlaybackMarked, st.builds("{}.{}".format, turns, seqs)),
    st.builds(ev.PlaybackCleared),
    st.builds(ev.TimerFired, timers),
    st.builds(ev.DtmfPressed, st.sampled_from(["1", "#"])),
    st.builds(ev.SttLost, st.just("dropped")),
    st.builds(ev.SttRestored),
    st.builds(ev.CallEnded, st.just("stop")),
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(st.tuples(events, st.floats(0, 2)), max_size=60),
    st.booleans(),
)
def test_random_event_sequences_keep_the_invariants(sequence, greeting_interruptible):
    core = CallCore(AgentConfig(greeting_interruptible=greeting_interruptible))
    now = 0.0
    cancelled: set[int] = set()
    active: int | None = None
    for event, gap in sequence:
        now += gap
        was_ended = core.ended
        step = core.step(event, now)  # never raises
        if was_ended:
            assert step.commands == ()
        if (
            isinstance(event, ev.LlmDone | ev.LlmFailed)
            and step.dropped is None
            and event.turn == active
        ):
            active = None
        for command in step.commands:
            if isinstance(command, cmd.PlayAudio):
                assert command.turn not in cancelled, "audio of a cancelled turn"
            elif isinstance(command, cmd.CancelSynthesis | cmd.CancelCompletion):
                cancelled.add(command.turn)
            if isinstance(command, cmd.CancelCompletion):
                assert command.turn == active
                active = None
            elif isinstance(command, cmd.StartCompletion):
                assert active is None, "two completions at once"
                active = command.turn


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


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(events, st.floats(0, 2)), max_size=60))
def test_the_compiled_shortcuts_behave_exactly_like_the_machine(sequence):
    fast, slow = CallCore(), CallCore(shortcuts=False)
    now = 0.0
    for event, gap in sequence:
        now += gap
        assert fast.step(event, now) == slow.step(event, now)
        assert fast.state == slow.state
