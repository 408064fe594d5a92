"""A call survives the loss of its worker, because the log is the call.

Two real server processes share a call store behind a plain TCP balancer.
The simulated platform calls through the balancer and lands on the first
worker; that worker is killed (SIGKILL: no footer, no goodbye) mid-call. The
phone's socket dies with it, Vobiz's stream retry reconnects through the
balancer to the second worker, which finds the call's log in the store, takes
its lease, replays the log into a fresh engine and carries the call on: no
second greeting, the same history, one log that replays identically.
"""

from __future__ import annotations

import json
from pathlib import Path

import redis
from needs import needs_redis

from adapters.simulator.script import SimulationResult
from engine.calllog import split_log
from engine.replay import replay
from fixtures.processes import redis_server
from fixtures.worker_loss import call_and_lose_its_worker


def carried_on_whole(lines: list[str], result: SimulationResult) -> None:
    """What a taken-over call's one log must show."""
    records = [json.loads(line) for line in lines]
    assert replay(lines).identical
    events = [r["event"] for r in records if r["kind"] == "event"]
    assert events.count("CallStarted") == 1 and events.count("CallTakenOver") == 1
    (taken,) = [r for r in records if r.get("what") == "taken_over"]
    assert records[-1]["kind"] == "footer"
    texts = [r["text"] for r in records if r.get("command") == "Synthesize"]
    assert texts.count(texts[0]) == 1, "the greeting was said once"
    # The agent went on answering after the takeover, with the call's history.
    later = [r for r in records if r["kind"] == "command" and r["t"] > taken["t"]]
    assert any(r["command"] == "PlayAudio" for r in later)
    asks = [r for r in later if r["command"] == "StartCompletion"]
    assert asks and "book a table" in json.dumps(asks[-1]).lower()
    assert result.sockets == 2 and result.violations == ()


async def test_a_call_goes_on_after_its_worker_is_killed_with_the_local_store(tmp_path: Path):
    calls = {"CALL_LOG_DIR": str(tmp_path / "calls")}
    result, balancer, ports = await call_and_lose_its_worker(calls, calls)
    assert balancer.routed[:2] == [ports[0], ports[0]]  # answer and stream: the first worker
    assert ports[1] in balancer.routed  # the reconnect and the hang-up: the second
    (log,) = (tmp_path / "calls").glob("*.jsonl")
    lines, cut = split_log(log.read_text())
    assert not cut
    carried_on_whole(lines, result)


@needs_redis
async def test_a_call_goes_on_after_its_worker_is_killed_with_the_redis_store(tmp_path: Path):
    """Two hosts, in effect: each worker keeps its own log folder; the call's log is in Redis."""
    async with redis_server(tmp_path) as url:
        first = {"LOG_STORE": url, "CALL_LOG_DIR": str(tmp_path / "first")}
        second = {"LOG_STORE": url, "CALL_LOG_DIR": str(tmp_path / "second")}
        result, _balancer, _ports = await call_and_lose_its_worker(first, second)
        client = redis.Redis.from_url(url, decode_responses=True)
        (key,) = client.keys("voice-agent:call:*:log")
        stored = [fields["r"] for _id, fields in client.xrange(key)]
        assert client.keys("voice-agent:call:*:lease") == []  # given up with the call's end
        client.close()
    carried_on_whole(stored, result)
    (lost_copy,) = (tmp_path / "first").glob("*.jsonl")
    (copy,) = (tmp_path / "second").glob("*.jsonl")
    assert split_log(copy.read_text()) == (stored, False)  # the second worker's copy is whole
    # The lost worker's own copy agrees with the stored log as far as both go (either may
    # hold a few records the other never got: they were in flight when the worker died).
    lost, _cut = split_log(lost_copy.read_text())
    (taken,) = [i for i, line in enumerate(stored) if '"what":"taken_over"' in line]
    common = min(taken, len(lost))
    assert common > 10 and lost[:common] == stored[:common]


async def test_a_draining_worker_hands_its_call_over_instead_of_cutting_it(tmp_path: Path):
    """A rollout: the worker's drain ends before the call does, and the call goes on."""
    calls = {"CALL_LOG_DIR": str(tmp_path / "calls")}
    result, _balancer, _ports = await call_and_lose_its_worker(
        calls | {"DRAIN_TIMEOUT": "0.5"}, calls, "drain"
    )
    (log,) = (tmp_path / "calls").glob("*.jsonl")
    lines, cut = split_log(log.read_text())
    assert not cut
    carried_on_whole(lines, result)
    whats = [json.loads(line).get("what") for line in lines]
    assert whats.index("handed_over") < whats.index("taken_over")
    assert [json.loads(line)["kind"] for line in lines].count("footer") == 1


async def test_a_stream_that_reconnects_to_another_worker_takes_its_call_along(tmp_path: Path):
    """Workers sharing a port (``serve --workers``): the kernel, not the call, picks which
    one a reconnect reaches. The worker holding the call is alive, waiting for the stream;
    asked for the call, it hands it over, and the other carries it on from the log."""
    calls = {"CALL_LOG_DIR": str(tmp_path / "calls")}
    result, balancer, ports = await call_and_lose_its_worker(calls, calls, "cut")
    assert balancer.routed[:2] == [ports[0], ports[0]]
    assert balancer.routed[2] == ports[1]  # the reconnect
    (log,) = (tmp_path / "calls").glob("*.jsonl")
    lines, cut = split_log(log.read_text())
    assert not cut
    carried_on_whole(lines, result)
    records = [json.loads(line) for line in lines]
    whats = [r.get("what") for r in records]
    assert whats.index("stream_lost") < whats.index("handed_over") < whats.index("taken_over")
    lost = records[whats.index("stream_lost")]["t"]
    taken = records[whats.index("taken_over")]["t"]
    assert taken - lost < 2.0  # not after the reconnect window: the holder was asked
    assert not list((tmp_path / "calls" / ".leases").glob("*.asked"))
