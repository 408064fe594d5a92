"""Start the real app under hypercorn's trio worker on a random loopback port."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

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
