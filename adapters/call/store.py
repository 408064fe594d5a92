"""Where calls live between processes: their logs, who runs each, what was answered.

A call's log is the call: the engine is a pure function of its events, so any
process that can read the log can rebuild the conversation and carry it on.
The store is what every worker shares:

- the **log** of each call (the local folder for one host; Redis Streams for
  several, :mod:`adapters.call.redis_store`);
- a **lease** per call: the one process running it holds it, so two workers
  never run one call; it dies with its holder (a killed worker's lease is free
  at once on one host, after a few seconds with Redis), and a reconnecting
  stream that lands elsewhere takes the call over: its holder, if it is only
  waiting for that stream, hands the call over when asked (:meth:`CallStore.ask_for`);
- the **answer** of each call (``From``/``To``), so the media socket may land
  on any worker of the port, not only the one that answered.

The local store works across the processes of one host: leases are ``flock``
locks on per-call files (the kernel drops them when the holder dies), logs are
the JSONL files themselves.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import hashlib
import json
import os
import time
from pathlib import Path
from typing import IO, Protocol

import trio

from adapters.call.record import create_log
from engine.calllog import split_log

#: Every this many answers, the local store forgets stale ones.
PRUNE_EVERY = 100
#: An answer file this old is stale (an answer's window is seconds).
ANSWER_KEPT = 600.0


class LeaseLost(Exception):
    """Another process holds the call now: this one must stop running it."""


class Lease(Protocol):
    """The right to run one call, and with it the right to read and write its log."""

    async def records(self) -> list[str] | None:
        """The whole lines of the call's log, if it has one (to carry on, or one that ended)."""
        ...

    def open_log(self, existing: list[str] | None) -> tuple[Path, IO[str]]:
        """Where the call's records go: a new log, or (``existing``) the one to carry on."""
        ...

    async def keep(self) -> None:
        """Hold the lease for as long as the call runs; raises :class:`LeaseLost`."""
        ...

    def release(self, ended: bool) -> None:
        """Let the call go; ``ended``: it is over, and what only a live call needs is dropped."""
        ...

    async def asked_for(self) -> bool:
        """Whether the call's stream has reconnected to another worker, which wants the call."""
        ...


class CallStore(Protocol):
    """What the workers of a deployment share about calls (see the module's docstring)."""

    #: How the store is named in logs and ``/health``.
    name: str
    #: How long a claim waits for a lease whose holder may be dead (until the store knows).
    lease_wait: float

    async def remember_answer(self, call_id: str, caller: str, callee: str, ttl: float) -> None:
        """``/answer`` admitted the call: any worker may now start it, for ``ttl`` seconds."""
        ...

    async def answer_of(self, call_id: str) -> tuple[str, str] | None:
        """The caller and callee of a call some worker answered, if still fresh."""
        ...

    async def ask_for(self, call_id: str) -> None:
        """The call's stream reached this worker while another holds the call: ask for it."""
        ...

    async def claim(self, call_id: str, worker: str) -> Lease | None:
        """The right to run the call, or None when another live process holds it."""
        ...

    async def aclose(self) -> None:
        """Finish writing (the server is stopping)."""
        ...


def tag(call_id: str) -> str:
    """The hash that names a call's files (the same as in its log's name)."""
    return hashlib.sha256(call_id.encode("utf-8", "surrogatepass")).hexdigest()[:10]


def carried_on(path: Path, existing: list[str]) -> IO[str]:
    """The call's log file, opened to go on after ``existing`` (written anew if it is missing).

    A killed writer may have left half a line: the log goes on after its last whole one.
    """
    text = "".join(f"{line}\n" for line in existing)
    size = len(text.encode("utf-8"))
    with contextlib.suppress(FileNotFoundError), path.open("r+", encoding="utf-8") as old:
        if old.seek(0, os.SEEK_END) >= size:
            old.truncate(size)
            return path.open("a", encoding="utf-8")
    path.parent.mkdir(parents=True, exist_ok=True)
    fresh = path.open("w", encoding="utf-8")
    fresh.write(text)
    fresh.flush()
    return fresh


class _FileLease:
    """An exclusive ``flock`` on the call's lock file, held by an open descriptor.

    The lock file also names the call's log, so a process taking the call over
    finds it without listing the log folder.
    """

    def __init__(self, store: LocalStore, call_id: str, fd: int, path: Path, worker: str) -> None:
        self.store = store
        self.call_id = call_id
        self.worker = worker
        self._fd: int | None = fd
        self._path = path
        with os.fdopen(os.dup(fd), "r", encoding="utf-8") as lock:
            try:
                self.log_name = str(json.loads(lock.read() or "{}").get("log", ""))
            except ValueError:
                self.log_name = ""

    async def records(self) -> list[str] | None:
        if not self.log_name:
            return None
        try:
            text = (self.store.log_dir / self.log_name).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        lines, _cut = split_log(text)
        return lines or None

    def open_log(self, existing: list[str] | None) -> tuple[Path, IO[str]]:
        now = datetime.datetime.now(datetime.UTC)
        if existing is None or not self.log_name:
            path, file = create_log(self.store.log_dir, self.call_id, now)
            if existing is not None:
                file.write("".join(f"{line}\n" for line in existing))
        else:
            path = self.store.log_dir / self.log_name
            file = carried_on(path, existing)
        self.log_name = path.name
        assert self._fd is not None
        pointer = json.dumps({"worker": self.worker, "log": path.name}).encode()
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, pointer, 0)
        return path, file

    async def keep(self) -> None:
        await trio.sleep_forever()  # the kernel keeps it for us, and drops it with us

    async def asked_for(self) -> bool:
        return self.store.asked_file(self.call_id).exists()

    def release(self, ended: bool) -> None:
        if self._fd is None:
            return
        if ended:  # nothing to carry on: the lock and answer files go (while still locked)
            with contextlib.suppress(FileNotFoundError):
                self._path.unlink()
            with contextlib.suppress(FileNotFoundError):
                self.store.answer_file(self.call_id).unlink()
        os.close(self._fd)
        self._fd = None


class LocalStore:
    """One host's store: the call-log folder, shared by the host's workers."""

    name = "local"
    lease_wait = 0.0  # the kernel drops a dead process's locks at once

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._answers = 0

    def _file(self, folder: str, call_id: str, suffix: str) -> Path:
        path = self.log_dir / folder / f"{tag(call_id)}{suffix}"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def answer_file(self, call_id: str) -> Path:
        return self._file(".answered", call_id, ".json")

    def asked_file(self, call_id: str) -> Path:
        return self._file(".leases", call_id, ".asked")

    async def ask_for(self, call_id: str) -> None:
        self.asked_file(call_id).touch()

    async def remember_answer(self, call_id: str, caller: str, callee: str, ttl: float) -> None:
        path = self.answer_file(call_id)
        body = {"call_id": call_id, "caller": caller, "callee": callee, "until": time.time() + ttl}
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(body), encoding="utf-8")
        temporary.replace(path)  # readers never see half a file
        self._answers += 1
        if self._answers % PRUNE_EVERY == 0:
            self._prune_answers()

    def _prune_answers(self) -> None:
        """Answers whose socket never came (refused, abandoned) are forgotten once stale."""
        stale = time.time() - ANSWER_KEPT
        for path in (self.log_dir / ".answered").glob("*.json"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < stale:
                    path.unlink()

    async def answer_of(self, call_id: str) -> tuple[str, str] | None:
        try:
            body = json.loads(self.answer_file(call_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if body.get("call_id") != call_id or body.get("until", 0) < time.time():
            return None
        return str(body.get("caller", "")), str(body.get("callee", ""))

    async def claim(self, call_id: str, worker: str) -> Lease | None:
        path = self._file(".leases", call_id, ".lock")
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return None
            try:
                if os.stat(path).st_ino == os.fstat(fd).st_ino:
                    with contextlib.suppress(FileNotFoundError):  # whoever asked has it now
                        self.asked_file(call_id).unlink()
                    return _FileLease(self, call_id, fd, path, worker)
            except FileNotFoundError:
                pass
            os.close(fd)  # its holder ended the call and removed the file meanwhile: again

    async def aclose(self) -> None:
        pass  # every record is in its file already


def worker_name() -> str:
    """Which process this is, in logs and leases."""
    return f"{os.uname().nodename}:{os.getpid()}"


def open_store(where: str, log_dir: Path) -> CallStore:
    """The store ``LOG_STORE`` names: the log folder when empty, Redis for a ``redis://`` URL."""
    if not where:
        return LocalStore(log_dir)
    if where.startswith(("redis://", "rediss://", "unix://")):
        from adapters.call.redis_store import RedisStore  # only deployments with Redis need it

        return RedisStore(where, log_dir)
    raise ValueError(f"LOG_STORE must be empty or a redis:// URL, not {where!r}")
