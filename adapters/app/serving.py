"""Serving the app: build it from the settings, settle it, run it under hypercorn's trio worker.

Shared by ``voice-agent serve``, the demo, the console, the ASGI entry, the tests
and the benchmarks, so each of them serves the app the same way: the same
limits on sockets, the same drain on shutdown, the same start-up settling.
"""

from __future__ import annotations

import gc
import logging
from typing import Any

import trio

from adapters.app.server import VoiceAgentApp, create_app
from adapters.app.settings import ServerSettings
from adapters.app.wiring import build_providers, describe

log = logging.getLogger("voice_agent")


class ConfigError(Exception):
    """A setting that cannot work; its message names the setting and what to do."""


def build_app(settings: ServerSettings) -> VoiceAgentApp:
    """The app for these settings, with the providers they choose."""
    providers, config = build_providers(settings)
    log.info(describe(providers))
    return create_app(settings, config, providers)


#: Young-generation threshold raised from 700: objects get time to die before they are
#: examined, at the price of a few MB of not-yet-collected cycles (``docs/load.md``).
GC_THRESHOLDS = (10_000, 10, 10)

#: The largest WebSocket message hypercorn accepts: a second of 16 kHz L16 in base64 fits.
MAX_WEBSOCKET_MESSAGE = 64 * 1024
#: Seconds a connection may stay silent before hypercorn drops it.
READ_TIMEOUT = 30
#: How long a draining server waits for the hang-up webhooks of the calls it ended.
FINAL_HANGUP_WAIT = 3.0


def settle(app: VoiceAgentApp) -> None:
    """Pay start-up costs before the first caller, and keep them out of the collector's way.

    Warming the providers makes their clients and imports now, not during a caller's
    first turn. Then everything alive (modules, SDKs, the app) is frozen out of the
    garbage collector: a full collection otherwise walks it all and holds the loop for
    tens of milliseconds, a stall every caller hears. A call allocates fast (frames,
    events, coroutines), so the default threshold of 700 collected the young generation
    dozens of times a second and promoted short-lived objects into full collections;
    see :data:`GC_THRESHOLDS` and ``docs/load.md`` for the figures.
    """
    app.switchboard.providers.warm()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve_app(
    app: VoiceAgentApp,
    host: str,
    port: int,
    *,
    shutdown: trio.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until ``shutdown`` is set, draining live calls first."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from adapters.app import hypercorn_repair

    board = app.switchboard
    config = Config()
    config.bind = [f"{host}:{port}"]
    config.graceful_timeout = 5.0
    config.accesslog = None
    # A media frame is a few hundred bytes; hypercorn's default (16 MiB) lets one client
    # make the server buffer megabytes per message before the app can refuse it.
    config.websocket_max_message_size = MAX_WEBSOCKET_MESSAGE
    # A connection that sends nothing this long is dropped (hypercorn waits forever by
    # default): a media stream carries a frame every 20 ms, a webhook is one short request.
    config.read_timeout = READ_TIMEOUT

    async def drained() -> None:
        await shutdown.wait()
        board.draining = True
        if board.live:
            log.info("draining: waiting for %d live call(s)", len(board.live))
            with trio.move_on_after(board.settings.drain_timeout):
                await board.idle.wait()
            for session in list(board.live.values()):
                session.end_from_outside("server shutdown")
            with trio.move_on_after(3):
                await board.idle.wait()
            # Vobiz posts each call's hang-up after its stream closed: answer them, then go.
            with trio.move_on_after(FINAL_HANGUP_WAIT):
                await board.hangups_in.wait()

    hypercorn_repair.install()
    settle(app)
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve(
                    app, config, shutdown_trigger=drained, task_status=task_status
                )
            )
            task_status.started(binds)
    finally:
        await board.providers.aclose()
        if board.rest is not None:
            with trio.move_on_after(2, shield=True):
                await board.rest.aclose()


async def serve_on_loopback(nursery: trio.Nursery, app: VoiceAgentApp, shutdown: trio.Event) -> str:
    """Serve ``app`` on a free 127.0.0.1 port (tests, demo, benchmarks); return its base URL.

    The app's public URL becomes that address, so the stream URLs it hands out point back here.
    """
    binds = await nursery.start(
        lambda task_status: serve_app(
            app, "127.0.0.1", 0, shutdown=shutdown, task_status=task_status
        )
    )
    base = binds[0].replace("0.0.0.0", "127.0.0.1")
    app.switchboard.settings = app.switchboard.settings.with_values(public_url=base)
    return base
