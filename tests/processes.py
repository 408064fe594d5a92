"""The real server as a process of its own (``voice-agent serve``), for tests that kill it."""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import trio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def server_process(port: int, **env: str) -> AsyncIterator[trio.Process]:
    """``voice-agent serve`` on ``port`` with offline providers and ``env``, healthy; stopped on exit."""
    environment = dict(os.environ)
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "VOBIZ_AUTH_TOKEN", "PUBLIC_URL", "ENV_FILE"):
        environment.pop(key, None)
    command = [sys.executable, "-m", "adapters.app.cli", "serve", "--port", str(port)]
    async with trio.open_nursery() as nursery:
        run = functools.partial(trio.run_process, command, env=environment | env, check=False)
        process = await nursery.start(run)
        try:
            await healthy(f"http://127.0.0.1:{port}", process)
            yield process
        finally:
            process.terminate()  # SIGTERM: the server drains and finishes its writes
            with trio.move_on_after(15):
                await process.wait()
            process.kill()
            nursery.cancel_scope.cancel()


async def healthy(base: str, process: trio.Process, within: float = 60) -> None:
    with trio.fail_after(within):
        while process.returncode is None:
            with contextlib.suppress(httpx.TransportError):
                async with httpx.AsyncClient() as client:
                    if (await client.get(f"{base}/health")).status_code == 200:
                        return
            await trio.sleep(0.1)
    raise RuntimeError(f"the server exited with {process.returncode} before it was healthy")


@contextlib.asynccontextmanager
async def redis_server(folder: Path) -> AsyncIterator[str]:
    """A real ``redis-server`` on a free loopback port, persisting nothing; its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed (apt-get install -y redis-server)")
    port = free_port()
    command = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", ""]
    command += ["--appendonly", "no", "--dir", str(folder)]
    async with trio.open_nursery() as nursery:
        run = functools.partial(trio.run_process, command, check=False, stdout=subprocess.DEVNULL)
        process = await nursery.start(run)
        try:
            with trio.fail_after(20):
                while True:
                    with contextlib.suppress(OSError):
                        stream = await trio.open_tcp_stream("127.0.0.1", port)
                        await stream.send_all(b"PING\r\n")
                        if (await stream.receive_some(64)).startswith(b"+PONG"):
                            await stream.aclose()
                            break
                    await trio.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            process.terminate()
            nursery.cancel_scope.cancel()
