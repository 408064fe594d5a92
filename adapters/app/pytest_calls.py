"""A pytest plugin: every call log in a configured folder is a test that must replay identically.

Installed with the package (entry point ``pytest11``), so it works wherever
``vobiz-voice-agent`` is installed. Nothing happens until a folder is named,
in the pytest configuration or on the command line::

    [tool.pytest.ini_options]
    call_logs = ["calls/regressions"]

    pytest --call-logs calls/regressions

Each ``*.jsonl`` under those folders becomes one test item; it fails with the
first divergence (line, expected, got), or with why the log cannot be read.
A log cut short by a killed server passes when what it holds replays
identically. When pytest runs from its configured ``testpaths``, the folders
are collected as well, so a plain ``pytest`` runs them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("call logs", "recorded calls as regression tests")
    group.addoption(
        "--call-logs",
        action="append",
        default=[],
        metavar="DIR",
        help="replay every *.jsonl under DIR as a test (repeatable)",
    )
    parser.addini("call_logs", "folders whose *.jsonl call logs must replay identically", "paths")


def _folders(config: pytest.Config) -> list[Path]:
    named = [Path(p) for p in config.getoption("call_logs") or []]
    named = [p if p.is_absolute() else Path(config.invocation_params.dir) / p for p in named]
    return [p.resolve() for p in [*named, *config.getini("call_logs")]]


def pytest_configure(config: pytest.Config) -> None:
    folders = _folders(config)
    config.stash[_FOLDERS] = folders
    if folders and config.args_source == pytest.Config.ArgsSource.TESTPATHS:
        config.args.extend(str(f) for f in folders if f.is_dir() and str(f) not in config.args)


_FOLDERS = pytest.StashKey[list[Path]]()


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if file_path.suffix != ".jsonl":
        return None
    folders = parent.config.stash.get(_FOLDERS, [])
    if any(file_path.resolve().is_relative_to(folder) for folder in folders):
        return CallLogFile.from_parent(parent, path=file_path)
    return None


class CallLogFile(pytest.File):
    def collect(self) -> list[pytest.Item]:
        return [CallLogItem.from_parent(self, name="replays identically")]


class ReplayDiverged(Exception):
    pass


class CallLogItem(pytest.Item):
    def runtest(self) -> None:
        from engine.calllog import LogError, split_log
        from engine.replay import replay

        try:
            lines, _cut = split_log(self.path.read_text(encoding="utf-8"))
            result = replay(lines)
        except (OSError, UnicodeDecodeError, LogError) as exc:
            raise ReplayDiverged(f"{self.path.name}: unreadable: {exc}") from None
        if result.divergence is not None:
            d = result.divergence
            raise ReplayDiverged(
                f"{self.path.name}: DIVERGES at line {d.line}\n"
                f"  expected: {_show(d.expected)}\n"
                f"  got:      {_show(d.got)}"
            )

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> str:
        if isinstance(excinfo.value, ReplayDiverged):
            return str(excinfo.value)
        return str(super().repr_failure(excinfo, style))

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, f"replay {self.path.name}"


def _show(record: dict[str, Any] | None) -> str:
    return json.dumps(record) if record else "(nothing)"
