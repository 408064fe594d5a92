"""Golden call logs replay identically, and replay can tell when they do not."""

import json
import pathlib

import pytest

import replay as replay_cli
from engine import events as ev
from engine.calllog import LogError, read_log
from engine.diagram import states_markdown
from engine.replay import replay
from fixtures import golden

CALLS = sorted(pathlib.Path("fixtures/calls").glob("*.jsonl"))


def test_there_is_a_golden_log_per_behaviour():
    assert len(CALLS) >= 10
    assert {p.stem for p in CALLS} == set(golden.SCENARIOS)


@pytest.mark.parametrize("path", CALLS, ids=lambda p: p.stem)
def test_golden_log_replays_identically(path):
    result = replay(path.read_text().splitlines())
    assert result.identical, result.divergence
    assert result.events > 0 and result.records > 0


@pytest.mark.parametrize("name", sorted(golden.SCENARIOS))
def test_golden_log_is_what_the_engine_writes_today(name):
    committed = (golden.CALLS / f"{name}.jsonl").read_text()
    assert committed == golden.render(name), "run: uv run python -m fixtures.golden"


STREAMED = pathlib.Path("fixtures/calls/streamed_reply.jsonl")


def tamper(tmp_path, first, change, path=STREAMED):
    """A copy of ``path`` in ``tmp_path`` with ``change`` made to the first record ``first``
    picks: the copy, and the number of the line changed."""
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        record = json.loads(line)
        if first(record):
            change(record)
            lines[i] = json.dumps(record)
            break
    else:
        raise AssertionError("nothing to tamper with")
    out = tmp_path / path.name
    out.write_text("\n".join(lines) + "\n")
    return out, i + 1


def synthesize(record) -> bool:
    return record.get("command") == "Synthesize"


def test_a_tampered_command_is_reported_with_its_line(tmp_path, capsys):
    said = "Something the engine never said."
    path, line = tamper(tmp_path, synthesize, lambda record: record.update(text=said))
    result = replay(path.read_text().splitlines())
    assert result.divergence.line == line
    assert result.divergence.got["text"] != result.divergence.expected["text"]
    assert replay_cli.main([str(path)]) == 1
    assert f"DIVERGES at line {line}" in capsys.readouterr().out


def test_a_tampered_event_time_changes_the_outcome(tmp_path):
    def later(record):
        record["t"] += 100.0

    path, _ = tamper(tmp_path, lambda record: record.get("event") == "AudioPlayed", later)
    assert not replay(path.read_text().splitlines()).identical


def test_an_unreadable_log_exits_2_and_names_the_line(tmp_path, capsys):
    path = tmp_path / "bad.jsonl"
    good = CALLS[0].read_text().splitlines()
    path.write_text("\n".join([good[0], good[1], "{not json"]) + "\n")
    with pytest.raises(LogError) as info:
        list(read_log(path.read_text().splitlines()))
    assert info.value.line == 3
    assert replay_cli.main([str(path)]) == 2
    assert "line 3" in capsys.readouterr().err


def test_replay_cli_summarises_identical_logs(capsys):
    assert replay_cli.main([str(p) for p in CALLS]) == 0
    assert capsys.readouterr().out.count("identical") == len(CALLS)


def test_timeline_and_latency_views(capsys):
    path = str(pathlib.Path("fixtures/calls/streamed_reply.jsonl"))
    assert replay_cli.main([path, "--timeline", "--latency"]) == 0
    out = capsys.readouterr().out
    assert "caller: Do you have a table for two tonight?" in out
    assert "agent:  Yes we do." in out
    assert "voice-to-voice" in out


def test_the_committed_state_diagram_is_current():
    text = pathlib.Path("docs/states.md").read_text()
    assert text == states_markdown(), "run: uv run voice-agent diagram"
    for state in ["greeting", "listening", "thinking", "speaking", "interrupted", "ended"]:
        assert f'state "{state.capitalize()}" as {state}' in text


def test_the_graphviz_rendering_names_every_state_and_change(tmp_path):
    import shutil
    import subprocess

    from engine.diagram import dot

    text = dot()
    for state in ["greeting", "listening", "thinking", "speaking", "interrupted", "ended"]:
        assert f"{state} ->" in text or f"-> {state} " in text
    assert (
        'speaking -> interrupted [label="caller_speech_started [interruptible, long_enough]"]'
        in text
    )
    if shutil.which("dot"):
        svg = subprocess.run(["dot", "-Tsvg"], input=text, text=True, capture_output=True)
        assert svg.returncode == 0 and "<svg" in svg.stdout


def test_streaming_records_wait_for_the_next_record_that_matters():
    """What the OS has seen is always a whole-line prefix of the log."""
    import io

    from engine.calllog import LogWriter

    class Disk(io.StringIO):
        seen = ""

        def flush(self) -> None:
            self.seen = self.getvalue()

    disk = Disk()
    writer = LogWriter(disk)
    writer.event(1.0, ev.TtsAudio(1, 0, b"\xff" * 160))
    writer.event(1.02, ev.LlmText(1, " six"))
    assert disk.seen == ""
    writer.event(1.04, ev.TtsDone(1, 0))
    assert disk.seen == disk.getvalue() and disk.seen.count("\n") == 3


def test_a_log_without_its_footer_is_incomplete_and_its_prefix_is_checked(tmp_path, capsys):
    lines = CALLS[0].read_text().split("\n")[:-1]
    cut = tmp_path / "killed.jsonl"
    cut.write_text("\n".join(lines[: len(lines) // 2]) + "\n")
    result = replay(cut.read_text().split("\n"))
    assert result.identical and not result.finished
    assert replay_cli.main([str(cut)]) == 3
    out = capsys.readouterr().out
    assert f"incomplete: no footer, {len(lines) // 2} records" in out


def test_a_last_line_cut_mid_write_is_left_out_not_fatal(tmp_path, capsys):
    lines = CALLS[0].read_text().split("\n")[:-1]
    cut = tmp_path / "killed.jsonl"
    cut.write_text("\n".join(lines[:10]) + "\n" + lines[10][: len(lines[10]) // 2])
    assert replay_cli.main([str(cut)]) == 3
    assert "incomplete: no footer, last line cut, 10 records" in capsys.readouterr().out


def test_a_divergence_in_an_incomplete_log_is_still_a_divergence(tmp_path):
    path, _ = tamper(tmp_path, synthesize, lambda record: record.update(text="something else"))
    lines = path.read_text().split("\n")
    path.write_text("\n".join(line for line in lines if '"footer"' not in line))
    assert replay_cli.main([str(path)]) == 1


def test_line_separators_in_caller_text_cannot_split_a_record():
    from engine.calllog import dumps

    record = {"kind": "note", "t": 0.0, "what": "x", "name": "a\u2028b\u2029c\x85d\ne"}
    line = dumps(record)
    assert len(line.splitlines()) == 1 and "\n" not in line
    assert json.loads(line) == record
