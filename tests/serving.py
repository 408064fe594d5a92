"""Start the real app under hypercorn's trio worker on a random loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import attrs
import trio

from adapters.cli import serve_app
from adapters.server import create_app
from adapters.settings import ServerSettings


@contextlib.asynccontextmanager
async def running_server(settings: ServerSettings, config, providers) -> AsyncIterator:
    """Yield the app with ``app.base_url`` set; drains and stops it on exit."""
    app = create_app(settings, config, providers)
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve_app(
                app, "127.0.0.1", 0, shutdown=shutdown, task_status=task_status
            )
        )
        base = binds[0].replace("0.0.0.0", "127.0.0.1")
        app.hub.settings = attrs.evolve(app.hub.settings, public_url=base)
        app.base_url = base
        try:
            yield app
        finally:
            shutdown.set()
