"""``voice-agent serve --workers 2``: two processes on one port, over real sockets.

Which worker the kernel hands a connection to is its choice, so the test makes it
deterministic by stopping one worker (SIGSTOP: a stopped process does not
``accept``) while the other must serve: a call answered by one worker streams to
the other, which proves they share the stream secret and the call store.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import httpx
import pytest
import trio
from trio_websocket import open_websocket_url

from adapters.app.workers import default_workers
from adapters.simulator.caller import simulate
from adapters.simulator.script import CallerLine, CallerScript
from adapters.simulator.wire import start_event, stream_url
from engine.calllog import split_log
from engine.replay import replay
from fixtures.processes import free_port, server_process

SCRIPT = CallerScript(lines=(CallerLine("I would like to book a table."),), hang_up_after=8.0)

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc")


def children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


async def worker_pids(parent: trio.Process, count: int, but: set[int] = frozenset()) -> list[int]:
    """The parent's ``count`` workers (none of ``but``), once started."""
    with trio.fail_after(60):
        while len(pids := [p for p in children(parent.pid) if p not in but]) != count:
            await trio.sleep(0.1)
    return pids


async def only(base: str, serving: int, stopped: int) -> None:
    """Wait until ``serving`` answers while ``stopped`` is stopped (it cannot accept)."""
    os.kill(stopped, signal.SIGSTOP)
    await served_by(base, serving)


async def health(base: str) -> dict:
    async with httpx.AsyncClient() as client:  # a new connection: any worker may take it
        return (await client.get(f"{base}/health", timeout=10)).json()


async def served_by(base: str, pid: int) -> dict:
    """``/health`` from worker ``pid`` (the other is stopped, or still starting)."""
    with trio.fail_after(30):
        while True:
            body = await health(base)
            if body["worker"].endswith(f":{pid}"):
                return body
            await trio.sleep(0.05)


async def greeting_heard_on(url: str, call_id: str) -> None:
    """Open the media stream as Vobiz does and wait for the agent's first audio."""
    async with open_websocket_url(url) as ws:
        await ws.send_message(json.dumps(start_event(call_id, "stream-1")))
        with trio.fail_after(30):
            while json.loads(await ws.get_message()).get("event") != "playAudio":
                pass


async def test_two_workers_share_one_port_its_calls_and_their_figures(tmp_path: Path):
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    calls = tmp_path / "calls"
    async with server_process(port, workers=2, CALL_LOG_DIR=str(calls)) as parent:
        first, second = await worker_pids(parent, 2)
        figures = dict(
            line.split("=", 1)
            for line in Path(f"/proc/{first}/environ").read_text().split("\0")
            if line.startswith("PROMETHEUS_MULTIPROC_DIR=")
        )["PROMETHEUS_MULTIPROC_DIR"]
        assert Path(figures).is_dir()

        # Answered by the second worker, streamed to the first.
        try:
            await only(base, second, stopped=first)
            async with httpx.AsyncClient() as client:
                answer = await client.post(
                    f"{base}/answer", data={"CallUUID": "across-workers", "From": "1", "To": "2"}
                )
        finally:
            os.kill(first, signal.SIGCONT)
        try:
            await only(base, first, stopped=second)
            await greeting_heard_on(stream_url(answer.text), "across-workers")
        finally:
            os.kill(second, signal.SIGCONT)

        # Calls through the shared port, wherever they land.
        async with trio.open_nursery() as nursery:
            results = []

            async def one(n: int) -> None:
                results.append(await simulate(base, SCRIPT, call_id=f"shared-{n}"))

            for n in range(3):
                nursery.start_soon(one, n)
        assert len(results) == 3 and all(r.violations == () for r in results)

        # Any worker's /metrics shows the calls of both.
        async with httpx.AsyncClient() as client:
            for _ in range(4):
                text = (await client.get(f"{base}/metrics", headers={"Connection": "close"})).text
                assert "voice_agent_calls_started_total 4.0" in text

        # A worker that dies is replaced; the other serves meanwhile.
        os.kill(first, signal.SIGKILL)
        (replacement,) = [p for p in await worker_pids(parent, 2, {first}) if p != second]
        try:
            await only(base, replacement, stopped=second)
        finally:
            os.kill(second, signal.SIGCONT)

    assert parent.returncode == 0  # SIGTERM: both drained, then the parent exited
    assert not Path(f"/proc/{second}").exists() and not Path(f"/proc/{replacement}").exists()
    assert not Path(figures).exists()  # made for the run, removed after it
    logs = sorted(calls.glob("*.jsonl"))
    assert len(logs) == 4
    for log in logs:
        lines, cut = split_log(log.read_text())
        assert not cut and json.loads(lines[-1])["kind"] == "footer"
        assert replay(lines).identical


async def test_a_setting_that_cannot_work_stops_every_worker(tmp_path: Path):
    port = free_port()
    command = [sys.executable, "-m", "adapters.app.cli", "serve", "--port", str(port)]
    environment = dict(
        os.environ, CALL_LOG_DIR=str(tmp_path), MEDIA_FORMAT="audio/x-l16;rate=24000"
    )
    with trio.fail_after(60):
        done = await trio.run_process(
            [*command, "--workers", "2"], env=environment, check=False, capture_stderr=True
        )
    assert done.returncode == 2
    assert b"24000" in done.stderr


@pytest.mark.parametrize(
    ("quota", "expected"),
    [("max 100000", None), ("100000 100000", 1), ("150000 100000", 2), ("", None)],
)
def test_the_default_is_the_cores_this_process_may_use(tmp_path: Path, quota: str, expected):
    cores = len(os.sched_getaffinity(0))
    cpu_max = tmp_path / "cpu.max"
    if quota:
        cpu_max.write_text(quota + "\n")
    want = cores if expected is None else min(cores, expected)
    assert default_workers(cpu_max) == want
