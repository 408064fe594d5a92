"""The JSONL call log: every event, transition and command of a call, one line each.

A log is a regression test: :mod:`replay` feeds its events back to a fresh
engine and expects the very same transitions and commands. So each record
is written the moment it happens (a crash loses nothing said before it) and
encodes values in one canonical form. Audio is logged as length + sha256
unless recording is on, in which case the bytes are kept too (base64).

The schema is documented in ``docs/call-log.md``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

import attrs

from engine import commands as cmd
from engine import events as ev
from engine.audio import AudioDigest, digest
from engine.core import Engine, Step
from engine.latency import LatencyTracker

#: The log format. 2: names say whose voice (``CallerSpeechStarted``, ``AudioPlayed``,
#: ``utterance`` ids, ``utterance_heard``…) and the engine has the thinking, reply and deaf
#: timers; logs of schema 1 were written by an engine with other rules and are not read.
SCHEMA = 2

_EVENTS = {cls.__name__: cls for cls in ev.EVENT_TYPES}
_COMMANDS = {cls.__name__: cls for cls in cmd.COMMAND_TYPES}


class LogError(ValueError):
    """A log line that cannot be read; carries its line number."""

    def __init__(self, line: int, message: str) -> None:
        super().__init__(f"line {line}: {message}")
        self.line = line
        self.message = message


def encode_audio(audio: Any, record: bool) -> dict[str, Any]:
    d = digest(audio)
    out: dict[str, Any] = {"bytes": d.length, "sha256": d.sha256}
    if record and isinstance(audio, bytes):
        out["b64"] = base64.b64encode(audio).decode("ascii")
    return out


def decode_audio(value: dict[str, Any]) -> bytes | AudioDigest:
    if "b64" in value:
        return base64.b64decode(value["b64"])
    return AudioDigest(int(value["bytes"]), str(value["sha256"]))


def encode_value(obj: Any, record_audio: bool = False) -> dict[str, Any]:
    """An event or command as a flat dict of its fields."""
    out: dict[str, Any] = {}
    for field in attrs.fields(type(obj)):
        value = getattr(obj, field.name)
        if field.name == "audio":
            value = encode_audio(value, record_audio)
        elif field.name == "messages":
            value = [{"role": m.role, "content": m.content} for m in value]
        out[field.name] = value
    return out


def _decode_fields(cls: type, fields: dict[str, Any]) -> Any:
    kwargs = dict(fields)
    if "audio" in kwargs:
        kwargs["audio"] = decode_audio(kwargs["audio"])
    if "messages" in kwargs:
        kwargs["messages"] = tuple(cmd.Message(**m) for m in kwargs["messages"])
    return cls(**kwargs)


def event_record(t: float, event: Any, record_audio: bool = False) -> dict[str, Any]:
    return {"kind": "event", "t": t, "event": type(event).__name__} | encode_value(
        event, record_audio
    )


def step_records(t: float, step: Step, record_audio: bool = False) -> list[dict[str, Any]]:
    """The consequences of one event, in the order they are logged and replayed."""
    if step.dropped is not None:
        return [{"kind": "dropped", "t": t, "reason": step.dropped}]
    records: list[dict[str, Any]] = [
        {"kind": "transition", "t": t, "from": tr.source, "to": tr.target, "trigger": tr.trigger}
        for tr in step.transitions
    ]
    records += [
        {"kind": "command", "t": t, "command": type(c).__name__} | encode_value(c, record_audio)
        for c in step.commands
    ]
    return records


def decode_event(record: dict[str, Any]) -> Any:
    fields = {k: v for k, v in record.items() if k not in ("kind", "t", "event")}
    return _decode_fields(_EVENTS[record["event"]], fields)


#: Characters that some line readers (Python's ``str.splitlines`` among them) take as line
#: breaks. JSON leaves them raw when ``ensure_ascii`` is off, so a caller-controlled string
#: holding one would split a record in two for such a reader; they are written escaped.
_LINE_BREAKS = str.maketrans({"\u0085": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"})


def dumps(record: dict[str, Any]) -> str:
    """One record as one line: no raw line break of any kind can appear inside it."""
    return json.dumps(record, ensure_ascii=False, separators=(",", ":")).translate(_LINE_BREAKS)


def split_log(text: str) -> tuple[list[str], bool]:
    """A log's whole lines (split at ``\\n`` only, as written), and whether a cut last line was left out.

    A process killed mid-write leaves its last line without its newline: that
    line is not a record, but everything before it still is.
    """
    lines = text.split("\n")
    tail = lines.pop()  # "" when the log ends with a newline
    return lines, bool(tail)


#: The streaming records: many per second while the agent talks, each one a delta.
#: They wait in the file's buffer for the next record that is not one of them.
BULK = frozenset({"TtsAudio", "LlmText", "PlayAudio"})


class LogWriter:
    """Writes one call's records to a text stream.

    Every record is flushed to the OS except the streaming ones (:data:`BULK`,
    most of a call's lines), which go with the next record that matters, so
    the file on disk is always a prefix of the log and a crash loses at most
    the audio and text deltas since the last decision; a write system call per
    line was a measurable share of a busy server's CPU (``docs/load.md``).
    """

    def __init__(
        self,
        stream: IO[str],
        record_audio: bool = False,
        listener: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.stream = stream
        self.record_audio = record_audio
        self.latency = LatencyTracker()  # the footer's per-turn figures
        #: Sees each record once it is written (a live view); it must not raise or block.
        self.listener = listener

    def write(self, record: dict[str, Any]) -> None:
        self.stream.write(dumps(record) + "\n")
        if (record.get("event") or record.get("command")) not in BULK:
            self.stream.flush()
        self.latency.add(record)
        if self.listener is not None:
            self.listener(record)

    def header(self, **fields: Any) -> None:
        self.write({"kind": "header", "schema": SCHEMA, "record_audio": self.record_audio} | fields)

    def event(self, t: float, event: Any) -> None:
        self.write(event_record(t, event, self.record_audio))

    def step(self, t: float, step: Step) -> None:
        for record in step_records(t, step, self.record_audio):
            self.write(record)

    def note(self, t: float, what: str, **fields: Any) -> None:
        """Something the runner saw that the engine did not (acks, protocol errors, webhooks)."""
        self.write({"kind": "note", "t": t, "what": what} | fields)

    def footer(self, t: float, **fields: Any) -> None:
        self.write({"kind": "footer", "t": t} | fields)


_KINDS = {"header", "event", "transition", "command", "dropped", "note", "footer"}


def read_log(lines: Iterable[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line number, record)``; a malformed line raises :class:`LogError`."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            raise LogError(number, f"not JSON ({exc})") from None
        if not isinstance(record, dict) or record.get("kind") not in _KINDS:
            raise LogError(number, "not a call-log record (missing or unknown 'kind')")
        if number == 1 and record["kind"] != "header":
            raise LogError(number, "the first line must be the header")
        if record["kind"] == "header" and record.get("schema") != SCHEMA:
            raise LogError(number, f"unsupported schema {record.get('schema')!r}")
        if record["kind"] == "event" and record.get("event") not in _EVENTS:
            raise LogError(number, f"unknown event {record.get('event')!r}")
        if record["kind"] == "command" and record.get("command") not in _COMMANDS:
            raise LogError(number, f"unknown command {record.get('command')!r}")
        yield number, record


class LoggedEngine:
    """An engine whose every event and consequence goes to a call log as it happens."""

    def __init__(self, core: Engine, writer: LogWriter) -> None:
        self.core = core
        self.writer = writer

    def handle(self, event: Any, now: float) -> tuple[Any, ...]:
        self.writer.event(now, event)
        step: Step = self.core.step(event, now)
        self.writer.step(now, step)
        return step.commands
