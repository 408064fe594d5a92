"""Soak: many short calls in a row against ``voice-agent serve``, watching for leaks.

    uv run python bench/soak.py [--calls 1000] [--sample-every 100]

Starts the server as its own process (offline providers, a scratch log folder),
then places short calls one after another: ``/answer``, the media socket,
``start``, half a second of caller audio, the greeting's first audio, a hang-up
(the socket closes, then the hang-up webhook). Every ``--sample-every`` calls it
reads the server's open descriptors and resident memory from ``/proc``, and at
the end prints the growth per call after the warm-up (the first fifth of the
calls), which is what a leak looks like: descriptors should not grow at all,
memory should settle.
"""

from __future__ import annotations

import argparse
import base64
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import trio

from adapters.providers.wsclient import open_client
from adapters.simulator.wire import start_event, stream_url

FRAME = json.dumps(
    {"event": "media", "media": {"payload": base64.b64encode(b"\xff" * 160).decode()}}
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample(pid: int) -> tuple[int, int]:
    """(open descriptors, resident KiB) of a process."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    for line in Path(f"/proc/{pid}/status").read_text().split("\n"):
        if line.startswith("VmRSS:"):
            return fds, int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def one_call(http: httpx.AsyncClient, call_id: str) -> None:
    reply = await http.post("/answer", data={"CallUUID": call_id, "From": "+1", "To": "+2"})
    async with open_client(stream_url(reply.text)) as ws:
        await ws.send_message(json.dumps(start_event(call_id, f"stream-{call_id}")))
        for _ in range(25):
            await ws.send_message(FRAME)
        with trio.fail_after(10):
            while json.loads(await ws.get_message())["event"] != "playAudio":
                pass
    await http.post("/hangup", data={"CallUUID": call_id, "Event": "Hangup"})


async def soak(calls: int, every: int) -> int:
    port = free_port()
    scratch = tempfile.mkdtemp(prefix="soak-")
    env = os.environ | {"CALL_LOG_DIR": scratch, "MAX_CALLS": "50", "STREAM_SECRET": "s" * 32}
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "VOBIZ_AUTH_TOKEN", "PUBLIC_URL"):
        env.pop(key, None)
    command = [sys.executable, "-m", "adapters.app.cli", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    samples: list[tuple[int, int, int]] = []
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            lambda task_status: trio.run_process(
                command, env=env, check=False, stderr=subprocess.DEVNULL, task_status=task_status
            )
        )
        limits = httpx.Limits(max_keepalive_connections=0)
        async with httpx.AsyncClient(base_url=base, limits=limits, timeout=10) as http:
            with trio.fail_after(60):
                while True:
                    try:
                        if (await http.get("/health")).status_code == 200:
                            break
                    except httpx.TransportError:
                        await trio.sleep(0.1)
            started = time.perf_counter()
            for n in range(1, calls + 1):
                await one_call(http, f"soak-{n}")
                if n % every == 0 or n == 1:
                    await trio.sleep(0.2)  # let the last call's socket close
                    fds, rss = sample(server.pid)
                    samples.append((n, fds, rss))
                    print(f"{n:6d} calls  {fds:4d} descriptors  {rss / 1024:7.1f} MiB resident")
            elapsed = time.perf_counter() - started
        server.terminate()
    return report(samples, calls, elapsed)


def report(samples: list[tuple[int, int, int]], calls: int, elapsed: float) -> int:
    warm = [s for s in samples if s[0] >= calls // 5]
    (n0, fd0, rss0), (n1, fd1, rss1) = warm[0], warm[-1]
    per_call_kib = (rss1 - rss0) / max(1, n1 - n0)
    steps = [(b[2] - a[2]) / (b[0] - a[0]) for a, b in itertools.pairwise(warm)]
    print(f"\n{calls} calls in {elapsed:.0f} s ({elapsed / calls * 1000:.0f} ms each)")
    print(f"descriptors after warm-up: {fd0} -> {fd1} ({fd1 - fd0:+d})")
    print(
        f"resident memory after warm-up (call {n0} -> {n1}): {rss0 / 1024:.1f} -> "
        f"{rss1 / 1024:.1f} MiB, {per_call_kib:+.1f} KiB per call "
        f"(median of steps {statistics.median(steps) if steps else 0:+.1f} KiB)"
    )
    return 0 if fd1 <= fd0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--sample-every", type=int, default=100)
    args = parser.parse_args()
    return trio.run(soak, args.calls, args.sample_every)


if __name__ == "__main__":
    sys.exit(main())
