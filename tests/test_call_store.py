"""The call store's promises, for the log folder and for a real Redis alike.

Only one process may run a call (its lease), only the lease holder writes its
log, a finished call's lease leaves nothing behind, and an answer is seen by
every worker for its window only.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis
import trio
from needs import needs_redis

from adapters.call.redis_store import RedisStore
from adapters.call.store import CallStore, LeaseLost, LocalStore
from fixtures.processes import redis_server


@contextlib.asynccontextmanager
async def store_of(kind: str, tmp_path: Path) -> AsyncIterator[CallStore]:
    if kind == "local":
        yield LocalStore(tmp_path / "calls")
        return
    async with redis_server(tmp_path) as url:
        store = RedisStore(url, tmp_path / "calls")
        try:
            yield store
        finally:
            await store.aclose()


KINDS = pytest.mark.parametrize("kind", ["local", pytest.param("redis", marks=needs_redis)])


def line(n: int) -> str:
    return json.dumps({"kind": "note", "t": n, "what": "n"})


@KINDS
async def test_one_lease_per_call_and_its_log_goes_on_where_it_stopped(kind, tmp_path):
    async with store_of(kind, tmp_path) as store:
        lease = await store.claim("call-1", "worker-a")
        assert lease is not None
        assert await store.claim("call-1", "worker-b") is None  # held
        assert await store.claim("call-2", "worker-b") is not None  # another call is free
        assert await lease.records() is None  # no log yet
        _path, log = lease.open_log(None)
        log.write(f"{line(1)}\n{line(2)}\n")
        log.close()
        lease.release(ended=False)  # lost, as a killed worker's is
        with trio.fail_after(5):
            while (taker := await store.claim("call-1", "worker-b")) is None:
                await trio.sleep(0.05)
            while await taker.records() != [line(1), line(2)]:
                await trio.sleep(0.05)
        _path, carried = taker.open_log([line(1), line(2)])
        carried.write(f"{line(3)}\n")
        carried.close()
        with trio.fail_after(5):  # Redis gets the records from a writer thread, soon after
            while await taker.records() != [line(1), line(2), line(3)]:
                await trio.sleep(0.05)
        taker.release(ended=True)
        with trio.fail_after(5):
            while (again := await store.claim("call-1", "worker-c")) is None:
                await trio.sleep(0.05)
        if kind == "redis":  # the stream outlives the call, for a late reconnect to find it over
            assert await again.records() == [line(1), line(2), line(3)]


@KINDS
async def test_an_answer_is_seen_by_every_worker_for_its_window(kind, tmp_path, monkeypatch):
    async with store_of(kind, tmp_path) as store:
        await store.remember_answer("call-1", "+1555", "+1666", ttl=5.0)
        assert await store.answer_of("call-1") == ("+1555", "+1666")
        assert await store.answer_of("call-2") is None
        await store.remember_answer("call-3", "+1", "+2", ttl=0.001)
        await trio.sleep(0.01)
        assert await store.answer_of("call-3") is None


@needs_redis
async def test_a_worker_that_lost_its_redis_lease_writes_nothing_more_and_is_told(tmp_path):
    async with redis_server(tmp_path) as url:
        store = RedisStore(url, tmp_path / "calls")
        lease = await store.claim("call-1", "worker-a")
        assert lease is not None
        _path, log = lease.open_log(None)
        client = redis.Redis.from_url(url, decode_responses=True)
        client.set("voice-agent:call:call-1:lease", "worker-b/other")  # taken over meanwhile
        log.write(f"{line(1)}\n")
        log.close()
        with pytest.raises(LeaseLost), trio.fail_after(10):
            await lease.keep()
        await store.aclose()
        assert client.xrange("voice-agent:call:call-1:log") == []  # the fence held
        assert client.get("voice-agent:call:call-1:lease") == "worker-b/other"
        client.close()


async def test_a_finished_local_call_leaves_no_lease_or_answer_files(tmp_path):
    store = LocalStore(tmp_path)
    await store.remember_answer("call-1", "a", "b", ttl=5)
    lease = await store.claim("call-1", "w")
    assert lease is not None
    lease.open_log(None)[1].close()
    lease.release(ended=True)
    assert list((tmp_path / ".leases").iterdir()) == []
    assert list((tmp_path / ".answered").iterdir()) == []
    assert len(list(tmp_path.glob("*.jsonl"))) == 1
