"""Start the real app under hypercorn's trio worker on a random loopback port, and watch its calls."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path

import trio

from adapters.app.server import create_app
from adapters.app.serving import serve_on_loopback
from adapters.app.settings import ServerSettings


@contextlib.asynccontextmanager
async def running_server(settings: ServerSettings, config, providers) -> AsyncIterator:
    """Yield the app with ``app.base_url`` set; drains and stops it on exit."""
    app = create_app(settings, config, providers)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        app.base_url = await serve_on_loopback(nursery, app, shutdown)
        try:
            yield app
        finally:
            shutdown.set()


def start(call_id: str, stream_id: str = "stream-1") -> str:
    """The ``start`` frame Vobiz sends first on a media socket."""
    body = {"callId": call_id, "streamId": stream_id, "mediaFormat": {"encoding": "audio/x-mulaw"}}
    return json.dumps({"event": "start", "start": body})


async def wait_live(app, call_id: str) -> None:
    """Until the server holds ``call_id`` as a live call."""
    with trio.fail_after(10):
        while call_id not in app.switchboard.live:
            await trio.sleep(0.01)


async def finished(app, count: int = 1, within: float = 10) -> list[Path]:
    """The logs of the calls that ended, once ``count`` of them have (at most ``within`` s)."""
    with trio.fail_after(within):
        while len(app.switchboard.finished_logs) < count:
            await trio.sleep(0.01)
    return list(app.switchboard.finished_logs)
