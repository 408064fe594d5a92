"""The real server as a process of its own (``voice-agent serve``), for tests that kill it."""

from __future__ import annotations

import contextlib
import functools
import os
import socket
import sys
from collections.abc import AsyncIterator

import httpx
import trio


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextlib.asynccontextmanager
async def server_process(port: int, **env: str) -> AsyncIterator[trio.Process]:
    """``voice-agent serve`` on ``port`` with offline providers and ``env``, healthy; killed on exit."""
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
