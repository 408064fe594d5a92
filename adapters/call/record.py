"""A call's log file: opened once per call, never shared, never truncated, always finished.

The header says what the call ran with (config, providers, formats, versions),
the engine's steps are written as they happen (see :mod:`engine.calllog`), the
runner adds notes of what the engine does not see, and the footer closes the
story. A webhook that arrives after the footer is told to the console instead.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import io
import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from adapters.call.recording import Recording
from adapters.ops import metrics
from adapters.vobiz.protocol import Start
from engine import commands as cmd
from engine.calllog import LoggedEngine, LogWriter
from engine.core import Engine

logger = logging.getLogger("voice_agent.call")


def call_logger(call_id: str) -> logging.LoggerAdapter:
    """The console logger of one call: every line carries its id, as the field ``call_id``
    (the formatters of :mod:`adapters.ops.logs` show it)."""
    return logging.LoggerAdapter(logger, {"call_id": call_id})


def log_path(log_dir: Path, call_id: str, wall: datetime.datetime) -> Path:
    """A name that says when and which call, and that two call ids never share.

    The readable part squashes the id to file-name-safe characters, so ``a/b``
    and ``a.b`` would look alike: a hash of the whole id tells them apart.
    """
    safe = "".join(c if c.isascii() and (c.isalnum() or c in "-_") else "_" for c in call_id)
    tag = hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]
    return log_dir / f"{wall:%Y%m%dT%H%M%S}_{safe[:60]}_{tag}.jsonl"


def create_log(log_dir: Path, call_id: str, wall: datetime.datetime) -> tuple[Path, IO[str]]:
    """Open a new call log, never an existing one: a log is never truncated or shared."""
    log_dir.mkdir(parents=True, exist_ok=True)
    path = log_path(log_dir, call_id, wall)
    for n in range(2, 1000):
        try:
            return path, _LogFile(path.open("xb"), encoding="utf-8")
        except FileExistsError:
            path = path.with_name(f"{log_path(log_dir, call_id, wall).stem}-{n}.jsonl")
    raise FileExistsError(f"no free log name for call {call_id!r} in {log_dir}")


class _LogFile(io.TextIOWrapper):
    """A call log's file, whose failed writes (a full disk) are counted for ``/metrics``
    before they are raised as ever."""

    def write(self, text: str) -> int:
        try:
            return super().write(text)
        except OSError:
            metrics.CALL_LOG_WRITE_ERRORS.inc()
            raise

    def flush(self) -> None:
        try:
            super().flush()
        except OSError:
            metrics.CALL_LOG_WRITE_ERRORS.inc()
            raise


class CallRecord:
    """One call's log: its writer, the engine that writes through it, and its end."""

    def __init__(
        self,
        sink: tuple[Path, IO[str]],
        call_id: str,
        engine: Engine,
        record_audio: bool,
        listener: Callable[[str, dict[str, Any]], None] | None = None,
    ) -> None:
        self.call_id = call_id
        self.path, self._file = sink
        each_record = functools.partial(listener, call_id) if listener else None
        self.writer = LogWriter(self._file, record_audio, each_record)
        # With audio recording on, both sides of the call also go to a stereo WAV by the log.
        self.recording = Recording() if record_audio else None
        self.engine = LoggedEngine(engine, self.writer)
        self.log = call_logger(call_id)

    def begin(self, start: Start, **header: Any) -> None:
        """A new call: the header says what it runs with."""
        self.writer.header(
            call_id=start.call_id,
            stream_id=start.stream_id,
            started_at=datetime.datetime.now(datetime.UTC).isoformat(),
            media_format={"encoding": start.encoding, "sample_rate": start.sample_rate},
            **header,
        )

    def carry_on(self, prior: list[dict[str, Any]]) -> None:
        """The log goes on after a lost process's records: the footer's figures count them too."""
        for record in prior:
            self.writer.latency.add(record)

    @property
    def finished(self) -> bool:
        return self._file.closed

    def note(self, t: float, what: str, **fields: Any) -> None:
        """Something the runner saw that the engine did not (acks, protocol errors, webhooks)."""
        if self.finished:
            # A webhook can arrive between the footer and the socket handler's exit.
            self.log.info("after the end: %s %s (not logged)", what, fields)
            return
        self.writer.note(t, what, **fields)

    def agent_audio(
        self, command: cmd.PlayAudio | cmd.Checkpoint | cmd.ClearAudio, t: float
    ) -> None:
        """What the phone is sent (and told to drop), laid on the recording as it would play."""
        if self.recording is None:
            return
        if isinstance(command, cmd.PlayAudio) and isinstance(command.audio, bytes):
            self.recording.agent(command.audio, t)
        elif isinstance(command, cmd.ClearAudio):
            self.recording.clear(t)

    def close_unfinished(self) -> None:
        """The call goes on in another process, which writes the rest of this log."""
        self._file.close()

    def finish(self, t: float, **footer: Any) -> None:
        latency = self.writer.latency
        turns = [turn.as_dict() for turn in latency.turns()]
        speculation = latency.speculation()
        self.writer.footer(t, duration=t, turns=turns, speculation=speculation, **footer)
        self._file.close()
        if self.recording is not None:
            self.recording.write_wav(self.path.with_suffix(".wav"), t)
