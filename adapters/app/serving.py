"""Serving the app: build it from the settings, settle it, run it under hypercorn's trio worker.

Shared by ``voice-agent serve`` (:func:`serve_main`, here too), the demo, the
console, the ASGI entry, the tests and the benchmarks, so each of them serves the
app the same way: the same limits on sockets, the same drain on shutdown, the
same start-up settling.
"""

from __future__ import annotations

import gc
import logging
import os
import signal
from typing import Any
from urllib.parse import urlsplit

import trio
from hypercorn.config import Config

from adapters.app import workers
from adapters.app.load_gauge import LoadGauge, LoadLimits
from adapters.app.server import VoiceAgentApp, create_app
from adapters.app.settings import ServerSettings
from adapters.app.switchboard import Switchboard
from adapters.app.tunnel import Tunnel, TunnelError, open_tunnel
from adapters.app.wiring import build_providers, describe
from adapters.ops import logs

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
#: How often a worker of ``serve --workers`` looks whether its parent is still there.
ORPHAN_POLL = 1.0


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


def watch_load(app: VoiceAgentApp) -> LoadGauge | None:
    """Admission by measured load, as the settings ask: the gauge to run, or None (off)."""
    board = app.switchboard
    settings = board.settings
    limits = LoadLimits(cpu=settings.admission_cpu, loop_lag=settings.admission_loop_lag)
    if not limits.on:
        return None
    board.load = LoadGauge(limits, calls=lambda: board.book.held)
    return board.load


async def serve_app(
    app: VoiceAgentApp,
    host: str,
    port: int,
    *,
    shutdown: trio.Event,
    task_status: Any = trio.TASK_STATUS_IGNORED,
    measure_load: bool = False,
    fd: int | None = None,
) -> None:
    """Serve ``app`` with hypercorn's trio worker until ``shutdown`` is set, draining live calls first.

    ``measure_load``: admit calls by the process's measured load (:func:`watch_load`), as a
    server in production does; the demo, the console and tests serve callers from the same
    process, whose load is not the server's, so they leave it off.
    """
    from hypercorn.trio import serve

    from adapters.app import hypercorn_repair

    board = app.switchboard
    config = _hypercorn_config(host, port, fd)

    async def drained() -> None:
        await shutdown.wait()
        await _drain(board)

    hypercorn_repair.install()
    settle(app)
    gauge = watch_load(app) if measure_load else None
    try:
        async with trio.open_nursery() as nursery:
            if gauge is not None:
                nursery.start_soon(gauge.run)

            async def serving(task_status: Any) -> None:
                await serve(app, config, shutdown_trigger=drained, task_status=task_status)
                nursery.cancel_scope.cancel()  # served and drained: the gauge goes too

            binds = await nursery.start(serving)
            task_status.started(binds)
    finally:
        await board.providers.aclose()
        with trio.move_on_after(10, shield=True):
            await board.store.aclose()
        if board.rest is not None:
            with trio.move_on_after(2, shield=True):
                await board.rest.aclose()


def _hypercorn_config(host: str, port: int, fd: int | None = None) -> Config:
    config = Config()
    # A worker of ``serve --workers`` accepts on the socket its parent bound for all of them.
    config.bind = [f"fd://{fd}" if fd is not None else f"{host}:{port}"]
    config.graceful_timeout = 5.0
    config.accesslog, config.errorlog = logs.hypercorn_loggers()
    config.access_log_format = logs.ACCESS_LOG_FORMAT
    # A media frame is a few hundred bytes; hypercorn's default (16 MiB) lets one client
    # make the server buffer megabytes per message before the app can refuse it.
    config.websocket_max_message_size = MAX_WEBSOCKET_MESSAGE
    # A connection that sends nothing this long is dropped (hypercorn waits forever by
    # default): a media stream carries a frame every 20 ms, a webhook is one short request.
    config.read_timeout = READ_TIMEOUT
    return config


async def _drain(board: Switchboard) -> None:
    """No new calls; the live ones get the drain timeout to finish, then are ended, or handed
    over when Vobiz retries streams (the retry reaches another worker, which carries it on)."""
    board.draining = True
    if board.live:
        log.info("draining: waiting for %d live call(s)", len(board.live))
        with trio.move_on_after(board.settings.drain_timeout):
            await board.idle.wait()
        for session in list(board.live.values()):
            if board.settings.stream_retries:  # Vobiz's retry takes it to another worker
                session.hand_over()
            else:
                session.end_from_outside("server shutdown")
        with trio.move_on_after(3):
            await board.idle.wait()
        # Vobiz posts each call's hang-up after its stream closed: answer them, then go.
        with trio.move_on_after(FINAL_HANGUP_WAIT):
            await board.hangups_in.wait()


async def serve_on_loopback(
    nursery: trio.Nursery,
    app: VoiceAgentApp,
    shutdown: trio.Event,
    port: int = 0,
    measure_load: bool = False,
    fd: int | None = None,
) -> str:
    """Serve ``app`` on 127.0.0.1 (a free port by default: tests, demo, benchmarks); return its
    base URL.

    The app's public URL becomes that address, so the stream URLs it hands out point back here.
    """
    binds = await nursery.start(
        lambda task_status: serve_app(
            app,
            "127.0.0.1",
            port,
            shutdown=shutdown,
            task_status=task_status,
            measure_load=measure_load,
            fd=fd,
        )
    )
    base = binds[0].replace("0.0.0.0", "127.0.0.1")
    app.switchboard.settings = app.switchboard.settings.with_values(public_url=base)
    return base


async def until_interrupted() -> None:
    """Return at the first SIGINT or SIGTERM (Ctrl-C, or a process manager stopping us)."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def until_interrupted_or_orphaned() -> None:
    """A worker of ``serve --workers`` stops as its parent tells it, or when the parent is
    gone (killed outright, it cannot): then no one would restart or stop it."""
    parent = os.getppid()
    async with trio.open_nursery() as nursery:

        async def orphaned() -> None:
            while os.getppid() == parent:
                await trio.sleep(ORPHAN_POLL)
            log.warning("the parent of the workers is gone: this worker stops too")
            nursery.cancel_scope.cancel()

        async def interrupted() -> None:
            await until_interrupted()
            nursery.cancel_scope.cancel()

        nursery.start_soon(orphaned)
        nursery.start_soon(interrupted)


# -- voice-agent serve -------------------------------------------------------------------------


async def serve_main(host: str | None, port: int | None, tunnel: bool) -> int:
    """``voice-agent serve``: serve until interrupted, then drain; a setting that cannot work
    is a :class:`ConfigError`."""
    try:
        settings = serve_settings(host, port)
        logs.use_format(settings.log_format)
        app = build_app(settings)
    except ValueError as exc:  # a setting that cannot work: say which, not a traceback
        raise ConfigError(str(exc)) from None
    shutdown = trio.Event()
    opened = None
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve_app(
                    app,
                    settings.host,
                    settings.port,
                    shutdown=shutdown,
                    task_status=task_status,
                    measure_load=True,
                    fd=workers.listen_fd(),
                )
            )
            if tunnel:
                opened = await _tunnel_to(app, binds, shutdown)
            public = app.switchboard.settings.public_url
            log.info("serving on %s; answer URL %s/answer", ", ".join(binds), public)
            if workers.listen_fd() is None:
                await until_interrupted()
            else:
                await until_interrupted_or_orphaned()
            log.info("shutting down: no new calls; live calls get %.0f s", settings.drain_timeout)
            shutdown.set()
    except* ConfigError as group:  # out of the nursery: one error, said plainly
        raise group.exceptions[0] from None
    finally:
        if opened is not None and opened.close is not None:
            opened.close()
    return 0


def serve_settings(host: str | None, port: int | None) -> ServerSettings:
    """The settings, with ``--host`` and ``--port`` as options; the public URL defaults to
    the address served."""
    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port is not None:
        overrides["port"] = port
    settings = ServerSettings.from_env(**overrides)
    if settings.source("public_url") == "default":
        settings = settings.with_values(public_url=f"http://{settings.host}:{settings.port}")
    return settings


async def _tunnel_to(app: VoiceAgentApp, binds: list[str], shutdown: trio.Event) -> Tunnel:
    """``serve --tunnel``: the public https URL becomes this server's, and the console lines say so."""
    port = urlsplit(binds[0]).port or 80
    try:
        tunnel = await open_tunnel(port)
    except TunnelError as exc:
        shutdown.set()
        raise ConfigError(f"--tunnel: {exc}") from None
    settings = app.switchboard.settings
    old = settings.public_url if settings.source("public_url") != "default" else None
    if old and old.rstrip("/") != tunnel.public_url:
        log.warning("--tunnel: PUBLIC_URL=%s is replaced by %s", old, tunnel.public_url)
    app.switchboard.settings = app.switchboard.settings.with_values(public_url=tunnel.public_url)
    print(
        f"public URL {tunnel.public_url} (from {tunnel.source})\n"
        "In the Vobiz console, set your number's application to:\n"
        f"  Answer URL: {tunnel.public_url}/answer   (method POST)\n"
        f"  Hangup URL: {tunnel.public_url}/hangup   (method POST)",
        flush=True,
    )
    return tunnel
