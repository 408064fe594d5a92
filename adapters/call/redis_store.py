"""The call store in Redis, for workers on several hosts (``LOG_STORE=redis://…``).

- A call's **log** is a Redis Stream (``XADD``, one entry per record, read back
  with ``XRANGE``); each worker also keeps its own copy in ``CALL_LOG_DIR``
  for the console and ``replay.py``. Entries are only appended while the
  writer holds the call's lease, checked in the same Lua script as the
  append, so a worker that lost its call can never write into the log of the
  one that took it over.
- The **lease** is a key set with ``NX`` and a time to live, renewed while the
  call runs: a killed worker's calls are free once it expires
  (:data:`LEASE_SECONDS`).
- The **answer** of a call is a key with the answer window as its time to live.

The ``redis`` client has no trio API: requests run in worker threads, and log
appends go through one writer thread per process, in order, in batches (one
per flush of the log). A log's stream expires :data:`LOG_KEPT_SECONDS` after
its last append, and every key carries the call id, so nothing outlives its
use.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import json
import logging
import math
import queue
import threading
import uuid
from pathlib import Path
from typing import IO, Any, cast

import redis
import trio

from adapters.call.record import create_log
from adapters.call.store import LeaseLost
from adapters.ops import metrics

log = logging.getLogger("voice_agent.store")

#: A worker that stops renewing its leases (killed, cut off) loses its calls this long after.
LEASE_SECONDS = 3.0
#: How often a live call's lease is renewed.
RENEW_EVERY = LEASE_SECONDS / 4
#: A worker's request for a call its holder is only waiting on expires after this long.
ASKED_SECONDS = 10.0
#: A call's log stays in Redis this long after its last record.
LOG_KEPT_SECONDS = 7 * 24 * 3600
#: A batch of records that cannot reach Redis is tried this many times, then given up
#: (the worker's own copy of the log still has it).
APPEND_ATTEMPTS = 5

# Append records while holding the lease: KEYS lease, log; ARGV token, kept seconds, lines...
_APPEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
for i = 3, #ARGV do redis.call('XADD', KEYS[2], '*', 'r', ARGV[i]) end
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""
# Renew a lease still held: KEYS lease; ARGV token, milliseconds.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""
# Give a lease up if still held: KEYS lease; ARGV token.
_RELEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
return redis.call('DEL', KEYS[1])
"""


def _key(call_id: str, what: str) -> str:
    return f"voice-agent:call:{call_id}:{what}"


class _Appender:
    """The one thread that writes this process's log records to Redis, in order."""

    def __init__(self, client: redis.Redis) -> None:
        self._client = client
        self._append = client.register_script(_APPEND)
        self._release = client.register_script(_RELEASE)
        self._queue: queue.SimpleQueue[tuple[str, str, str, list[str]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="redis-log-appender", daemon=True)
        self._thread.start()

    def append(self, call_id: str, token: str, lines: list[str]) -> None:
        self._queue.put(("append", call_id, token, lines))

    def release(self, call_id: str, token: str, ended: bool) -> None:
        """After the call's last records: a worker taking it next reads them all."""
        self._queue.put(("end" if ended else "release", call_id, token, []))

    def close(self, timeout: float) -> None:
        self._queue.put(None)
        self._thread.join(timeout)

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            what, call_id, token, lines = item
            about = {"call_id": call_id}
            for attempt in range(APPEND_ATTEMPTS):
                try:
                    if what in ("release", "end"):
                        self._release(keys=[_key(call_id, "lease")], args=[token])
                        if what == "end":
                            self._client.delete(_key(call_id, "answer"))
                    elif not self._append(
                        keys=[_key(call_id, "lease"), _key(call_id, "log")],
                        args=[token, LOG_KEPT_SECONDS, *lines],
                    ):
                        log.warning(
                            "%d log records not stored: lease lost", len(lines), extra=about
                        )
                    break
                except redis.RedisError as exc:
                    log.error(
                        "log store unreachable (%s): try %d of %d",
                        type(exc).__name__,
                        attempt + 1,
                        APPEND_ATTEMPTS,
                        extra=about,
                    )
                    threading.Event().wait(0.2 * 2**attempt)
            else:  # the worker's own copy of the log still has them
                metrics.CALL_LOG_WRITE_ERRORS.inc()


class _TeeLog(io.TextIOBase):
    """A call's log written to the worker's own file and, flush by flush, to its stream."""

    def __init__(self, file: IO[str], appender: _Appender, call_id: str, token: str) -> None:
        self._file = file
        self._appender = appender
        self._call_id = call_id
        self._token = token
        self._pending: list[str] = []

    def write(self, text: str) -> int:
        self._file.write(text)
        self._pending.append(text)
        return len(text)

    def flush(self) -> None:
        self._file.flush()
        if self._pending:
            lines = "".join(self._pending).splitlines()
            self._pending = []
            self._appender.append(self._call_id, self._token, lines)

    def close(self) -> None:
        super().close()  # flushes first
        self._file.close()


class RedisLease:
    def __init__(self, store: RedisStore, call_id: str, token: str) -> None:
        self.store = store
        self.call_id = call_id
        self.token = token
        self._held = True

    async def records(self) -> list[str] | None:
        key = _key(self.call_id, "log")
        entries = await trio.to_thread.run_sync(self.store.client.xrange, key)
        return [str(fields["r"]) for _id, fields in entries or () if fields] or None

    def open_log(self, existing: list[str] | None) -> tuple[Path, IO[str]]:
        now = datetime.datetime.now(datetime.UTC)
        path, file = create_log(self.store.log_dir, self.call_id, now)
        if existing:  # this worker's copy starts with what the lost one wrote
            file.write("".join(f"{line}\n" for line in existing))
        tee = _TeeLog(file, self.store.appender, self.call_id, self.token)
        return path, cast(IO[str], tee)

    async def keep(self) -> None:
        renewed = trio.current_time()
        while True:
            await trio.sleep(RENEW_EVERY)
            try:
                held = await trio.to_thread.run_sync(
                    lambda: self.store.renew(
                        keys=[_key(self.call_id, "lease")],
                        args=[self.token, math.ceil(LEASE_SECONDS * 1000)],
                    )
                )
            except redis.RedisError as exc:
                why = type(exc).__name__
                log.warning("lease not renewed: %s", why, extra={"call_id": self.call_id})
                if trio.current_time() - renewed > LEASE_SECONDS:
                    raise LeaseLost("the store was unreachable for longer than the lease") from exc
                continue
            if not held:
                raise LeaseLost("another worker holds the call")
            renewed = trio.current_time()

    async def asked_for(self) -> bool:
        key = _key(self.call_id, "asked")
        return bool(await trio.to_thread.run_sync(self.store.client.exists, key))

    def release(self, ended: bool) -> None:
        if not self._held:
            return
        self._held = False
        self.store.appender.release(self.call_id, self.token, ended)


class RedisStore:
    name = "redis"
    #: A reconnect may come before a killed worker's lease has run out: it waits this long.
    lease_wait = LEASE_SECONDS + 1.0

    def __init__(self, url: str, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.client = redis.Redis.from_url(url, decode_responses=True, socket_timeout=5.0)
        self.renew = self.client.register_script(_RENEW)
        self.appender = _Appender(self.client)

    async def remember_answer(self, call_id: str, caller: str, callee: str, ttl: float) -> None:
        body = json.dumps({"caller": caller, "callee": callee})
        expiry = max(1, math.ceil(ttl * 1000))
        await trio.to_thread.run_sync(
            lambda: self.client.set(_key(call_id, "answer"), body, px=expiry)
        )

    async def answer_of(self, call_id: str) -> tuple[str, str] | None:
        body = await trio.to_thread.run_sync(self.client.get, _key(call_id, "answer"))
        if body is None:
            return None
        with contextlib.suppress(ValueError):
            fields: dict[str, Any] = json.loads(body)
            return str(fields.get("caller", "")), str(fields.get("callee", ""))
        return None

    async def ask_for(self, call_id: str) -> None:
        expiry = math.ceil(ASKED_SECONDS * 1000)
        await trio.to_thread.run_sync(
            lambda: self.client.set(_key(call_id, "asked"), "1", px=expiry)
        )

    async def claim(self, call_id: str, worker: str) -> RedisLease | None:
        token = f"{worker}/{uuid.uuid4().hex[:8]}"

        def claim() -> bool:
            lease = _key(call_id, "lease")
            if not self.client.set(lease, token, nx=True, px=math.ceil(LEASE_SECONDS * 1000)):
                return False
            self.client.delete(_key(call_id, "asked"))  # whoever asked has it now
            return True

        taken = await trio.to_thread.run_sync(claim)
        return RedisLease(self, call_id, token) if taken else None

    async def aclose(self) -> None:
        await trio.to_thread.run_sync(self.appender.close, 10.0)
        self.client.close()
