"""The pytest plugin: recorded calls in a folder are tests that must replay identically."""

import json
import shutil
from pathlib import Path

from adapters.app.cli import main as voice_agent

GOLDEN = Path("fixtures/calls/streamed_reply.jsonl").resolve()


def _tamper(source: Path, target: Path) -> int:
    """A copy of ``source`` with one Synthesize text changed; returns that line's number."""
    lines = source.read_text().splitlines()
    for number, line in enumerate(lines, start=1):
        record = json.loads(line)
        if record.get("command") == "Synthesize" and record["utterance"] == 2:
            record["text"] = "A sentence the engine never said."
            lines[number - 1] = json.dumps(record, separators=(",", ":"))
            target.write_text("\n".join(lines) + "\n")
            return number
    raise AssertionError("no reply to tamper with")


def _folder(pytester) -> int:
    regressions = pytester.path / "calls" / "regressions"
    regressions.mkdir(parents=True)
    shutil.copy(GOLDEN, regressions / "good_call.jsonl")
    return _tamper(GOLDEN, regressions / "bad_call.jsonl")


def test_one_identical_and_one_tampered_log_one_pass_one_failure_naming_the_line(pytester):
    line = _folder(pytester)
    pytester.makeini("[pytest]\ncall_logs = calls/regressions\ntestpaths = tests\n")
    (pytester.path / "tests").mkdir()
    # A plain `pytest` runs its testpaths and the configured folder; the plugin is found through
    # its entry point, as after `pip install`, in a separate process.
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            f"*bad_call.jsonl: DIVERGES at line {line}*",
            '*expected: *"A sentence the engine never said."*',
            "*got: *",
            "FAILED calls/regressions/bad_call.jsonl::replays identically*",
        ]
    )


def test_the_folder_can_be_named_on_the_command_line(pytester):
    _folder(pytester)
    result = pytester.runpytest_subprocess("--call-logs", "calls/regressions", "calls/regressions")
    result.assert_outcomes(passed=1, failed=1)


def test_without_a_configured_folder_logs_are_not_collected(pytester):
    _folder(pytester)
    result = pytester.runpytest_subprocess("calls/regressions")
    assert result.ret == 5  # no tests ran
    result.assert_outcomes()


def test_an_unreadable_log_fails_saying_why(pytester):
    regressions = pytester.path / "regressions"
    regressions.mkdir()
    (regressions / "cut.jsonl").write_text('{"kind":"header","schema":2}\n{not json\n')
    result = pytester.runpytest_subprocess("--call-logs", "regressions", "regressions")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*cut.jsonl: unreadable: line 2: not JSON*"])


def test_voice_agent_replay_has_the_exit_codes_of_replay_py(tmp_path, capsys):
    good = tmp_path / "good.jsonl"
    shutil.copy(GOLDEN, good)
    bad = tmp_path / "bad.jsonl"
    line = _tamper(GOLDEN, bad)
    assert voice_agent(["replay", str(good)]) == 0
    assert voice_agent(["replay", str(good), str(bad)]) == 1
    assert f"DIVERGES at line {line}" in capsys.readouterr().out
    unreadable = tmp_path / "unreadable.jsonl"
    unreadable.write_text("{not json\n")
    assert voice_agent(["replay", str(unreadable)]) == 2
    cut = tmp_path / "cut.jsonl"
    cut.write_text("\n".join(GOLDEN.read_text().splitlines()[:20]) + "\n")
    assert voice_agent(["replay", str(cut)]) == 3
