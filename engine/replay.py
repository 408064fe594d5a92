"""Replaying a call log through a fresh engine, and reporting the first divergence.

Only events are fed; everything the engine produced (transitions, commands,
drops) must come out again, identical in the log's canonical encoding.
Notes and the footer are what the runner saw and are not compared. A log
without its footer (the process was killed) replays as far as it goes: the
result says it is not ``finished``. The engine may have produced a record
the killed process never wrote, so a prefix that ends right after an event
is still identical.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from engine.calllog import LogError, decode_event, read_log, step_records
from engine.config import AgentConfig
from engine.core import Engine

_PRODUCED = {"transition", "command", "dropped"}


@attrs.frozen
class Divergence:
    line: int  # line of the log where the expectation stood (or the event's, if it ran short)
    expected: dict[str, Any] | None
    got: dict[str, Any] | None


@attrs.frozen
class ReplayResult:
    events: int
    records: int
    divergence: Divergence | None = None
    #: The log has its footer: the call finished and every record of it is here.
    finished: bool = True

    @property
    def identical(self) -> bool:
        return self.divergence is None


@attrs.frozen
class Resumed:
    """A call's log replayed to carry the call on: the engine as the log left it.

    ``unwritten``: the records of the last step that the lost process did not
    write before it died (it flushes streaming records in batches); they are
    what the engine decided, so they go into the log before anything new.
    """

    engine: Engine
    lines: tuple[str, ...]
    unwritten: tuple[dict[str, Any], ...]
    #: The call time of the log's last record.
    last_t: float


def resume(lines: Iterable[str]) -> Resumed:
    """Rebuild the engine of an unfinished call from its log; :class:`LogError` when the log
    cannot be read, is finished, or does not replay on this engine (another version)."""
    kept = tuple(lines)
    result, core, unwritten = _replay(kept)
    if result.finished:
        raise LogError(len(kept), "the call has ended")
    if result.divergence is not None:
        raise LogError(result.divergence.line, "the log does not replay on this engine")
    last_t = max((float(r.get("t", 0.0)) for _, r in read_log(kept)), default=0.0)
    return Resumed(core, kept, tuple(unwritten), last_t)


def replay(lines: Iterable[str]) -> ReplayResult:
    """Replay a log given as lines; raises :class:`LogError` when it cannot be read."""
    return _replay(lines)[0]


def _replay(lines: Iterable[str]) -> tuple[ReplayResult, Engine, list[dict[str, Any]]]:
    records = list(read_log(lines))
    if not records:
        raise LogError(1, "empty log")
    header = records[0][1]
    try:
        config = AgentConfig.from_dict(header.get("config", {}))
    except (TypeError, ValueError) as exc:
        raise LogError(1, f"bad config in header: {exc}") from None
    record_audio = bool(header.get("record_audio"))
    core = Engine(config)
    finished = any(r["kind"] == "footer" for _, r in records)
    expected = [(n, r) for n, r in records if r["kind"] in _PRODUCED or r["kind"] == "event"]
    events = compared = 0
    i = 0
    while i < len(expected):
        number, record = expected[i]
        i += 1
        if record["kind"] != "event":
            return (
                ReplayResult(events, compared, Divergence(number, record, None), finished),
                core,
                [],
            )
        try:
            event = decode_event(record)
        except (TypeError, ValueError, KeyError) as exc:
            raise LogError(number, f"bad event fields: {exc}") from None
        events += 1
        got = step_records(record["t"], core.step(event, record["t"]), record_audio)
        for k, produced in enumerate(got):
            if i >= len(expected) and not finished:
                # The log was cut here: what it holds matched.
                return ReplayResult(events, compared, finished=finished), core, got[k:]
            if i >= len(expected) or expected[i][1]["kind"] == "event":
                divergence = Divergence(number, None, produced)
                return ReplayResult(events, compared, divergence, finished), core, []
            want_number, want = expected[i]
            if want != produced:
                divergence = Divergence(want_number, want, produced)
                return ReplayResult(events, compared, divergence, finished), core, []
            compared += 1
            i += 1
    return ReplayResult(events, compared, finished=finished), core, []
