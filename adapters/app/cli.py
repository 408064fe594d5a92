"""voice-agent: serve calls, place a call, simulate a caller, run the offline demo, draw the states."""

from __future__ import annotations

import argparse
import gc
import logging
import signal
import sys
from pathlib import Path

import trio

log = logging.getLogger("voice_agent")


class ConfigError(Exception):
    """A setting that cannot work; its message names the setting and what to do."""


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # one line per request is noise next to a call's own log
        logging.getLogger("httpx").setLevel(logging.WARNING)


def build_app(settings):
    """The app for these settings, with the providers they choose."""
    from adapters.app.server import create_app
    from adapters.app.wiring import build_providers, describe

    providers, config = build_providers(settings)
    log.info(describe(providers))
    return create_app(settings, config, providers)


#: Young-generation threshold raised from 700: objects get time to die before they are
#: examined. 50 calls, 20 s: collections 1,109 + 100 + 10 (full ones 30 ms each) ->
#: 33 + 2 + 1; p99 inbound lag 19 -> 9 ms; a few MB more of not-yet-collected cycles.
GC_THRESHOLDS = (10_000, 10, 10)

#: The largest WebSocket message hypercorn accepts: a second of 16 kHz L16 in base64 fits.
MAX_WEBSOCKET_MESSAGE = 64 * 1024
#: Seconds a connection may stay silent before hypercorn drops it.
READ_TIMEOUT = 30
#: How long a draining server waits for the hang-up webhooks of the calls it ended.
FINAL_HANGUP_WAIT = 3.0


def settle(app) -> None:
    """Pay start-up costs before the first caller, and keep them out of the collector's way.

    Warming the providers makes their clients and imports now, not during a caller's
    first turn. Then everything alive (modules, SDKs, the app) is frozen out of the
    garbage collector: a full collection otherwise walks it all and holds the loop for
    80+ ms at a time, a stall every caller hears (measured with 50 calls in
    ``bench/load.py``). A call allocates fast (frames, events, coroutines), so the
    default threshold of 700 collected the young generation ~55 times a second and
    promoted short-lived objects into full collections; see :data:`GC_THRESHOLDS`.
    """
    app.hub.providers.warm()
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve_app(
    app, host: str, port: int, *, shutdown: trio.Event, task_status=trio.TASK_STATUS_IGNORED
) -> None:
    """Serve ``app`` with hypercorn's trio worker until ``shutdown`` is set, draining live calls first."""
    from hypercorn.config import Config
    from hypercorn.trio import serve

    from adapters.app import hypercorn_repair

    hub = app.hub
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
        hub.draining = True
        if hub.live:
            log.info("draining: waiting for %d live call(s)", len(hub.live))
            with trio.move_on_after(hub.settings.drain_timeout):
                await hub.idle.wait()
            for session in list(hub.live.values()):
                session.end_from_outside("server shutdown")
            with trio.move_on_after(3):
                await hub.idle.wait()
            # Vobiz posts each call's hang-up after its stream closed: answer them, then go.
            with trio.move_on_after(FINAL_HANGUP_WAIT):
                await hub.hangups_in.wait()

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
        await hub.providers.aclose()
        if hub.rest is not None:
            with trio.move_on_after(2, shield=True):
                await hub.rest.aclose()


async def serve_on_loopback(nursery: trio.Nursery, app, shutdown: trio.Event) -> str:
    """Serve ``app`` on a free 127.0.0.1 port (tests, demo, benchmarks); return its base URL.

    The app's public URL becomes that address, so the stream URLs it hands out point back here.
    """
    binds = await nursery.start(
        lambda task_status: serve_app(
            app, "127.0.0.1", 0, shutdown=shutdown, task_status=task_status
        )
    )
    base = binds[0].replace("0.0.0.0", "127.0.0.1")
    app.hub.settings = app.hub.settings.with_values(public_url=base)
    return base


async def _serve_main(args) -> int:
    from adapters.app.settings import ServerSettings

    overrides = {}
    if args.host:
        overrides["host"] = args.host
    if args.port is not None:
        overrides["port"] = args.port
    try:
        settings = ServerSettings.from_env(**overrides)
        if settings.source("public_url") == "default":
            settings = settings.with_values(public_url=f"http://{settings.host}:{settings.port}")
        app = build_app(settings)
    except ValueError as exc:  # a setting that cannot work: say which, not a traceback
        raise ConfigError(str(exc)) from None
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        binds = await nursery.start(
            lambda task_status: serve_app(
                app, settings.host, settings.port, shutdown=shutdown, task_status=task_status
            )
        )
        log.info("serving on %s; answer URL %s/answer", ", ".join(binds), settings.public_url)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info(
                    "shutting down: no new calls; live calls get %.0f s", settings.drain_timeout
                )
                shutdown.set()
                break
    return 0


async def place_call(to: str, from_: str) -> int:
    """``voice-agent call``: the exit status; the call id on stdout, a clear reason on stderr."""
    from adapters.app.settings import ServerSettings, reveal
    from adapters.vobiz.rest import VobizApiError, VobizRest

    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        print(f"voice-agent call: {exc}", file=sys.stderr)
        return 2
    if not (settings.vobiz_auth_id and settings.vobiz_auth_token):
        print("voice-agent call: set VOBIZ_AUTH_ID and VOBIZ_AUTH_TOKEN first", file=sys.stderr)
        return 2
    if settings.source("public_url") == "default":
        print(
            "voice-agent call: set PUBLIC_URL to this server's public https address",
            file=sys.stderr,
        )
        return 2
    token = reveal(settings.vobiz_auth_token) or ""
    rest = VobizRest(settings.vobiz_auth_id, token, settings.vobiz_api_url)
    try:
        async with rest:
            call_id = await rest.make_call(
                from_,
                to,
                f"{settings.public_url}/answer",
                f"{settings.public_url}/hangup",
            )
    except VobizApiError as exc:
        print(f"voice-agent call: {exc}", file=sys.stderr)
        return 1
    print(call_id)
    return 0


def _diagram(args) -> int:
    """Mermaid always; SVG and PNG beside it when Graphviz's ``dot`` is installed."""
    import shutil
    import subprocess

    from engine.diagram import dot, states_markdown

    path = Path(args.path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(states_markdown())
    print(f"wrote {path}")
    if shutil.which("dot") is None:
        print("(install Graphviz for SVG/PNG renderings)")
        return 0
    for fmt in ("svg", "png"):
        out = path.with_suffix(f".{fmt}")
        subprocess.run(["dot", f"-T{fmt}", "-o", str(out)], input=dot(), text=True, check=True)
        print(f"wrote {out}")
    return 0


def _doctor() -> int:
    from adapters.app.doctor import examine, report
    from adapters.app.settings import ServerSettings

    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        print(f"voice-agent doctor: {exc}", file=sys.stderr)
        return 2
    text, status = report(examine(settings))
    print(text)
    return status


def _config() -> int:
    """Every effective setting, where it came from, keys masked."""
    from adapters.app.settings import SOURCES, ServerSettings, effective

    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        print(f"voice-agent config: {exc}", file=sys.stderr)
        return 2
    rows = effective(settings)
    width = max(len(name) for name, _, _ in rows)
    print(f"# sources, highest first: {', '.join(SOURCES)}")
    print(f"# .env: {settings.env_file or 'none read'}")
    print(f"# agent file: {settings.agent_file or 'none'}")
    for name, source, value in rows:
        print(f"{name:<{width}}  {source:<7}  {value}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-agent", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="answer Vobiz calls (webhooks + media WebSocket)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)

    sub.add_parser("doctor", help="explain what the settings will do on a real Vobiz number")
    sub.add_parser(
        "config", help="print every effective setting and where it came from (keys masked)"
    )

    p = sub.add_parser("call", help="place an outbound call through the Vobiz REST API")
    p.add_argument("to")
    p.add_argument("--from", dest="from_", required=True)

    p = sub.add_parser("diagram", help="write the call state diagram (Mermaid)")
    p.add_argument("path", nargs="?", default="docs/states.md")

    p = sub.add_parser("simulate", help="call a server as a simulated Vobiz caller")
    p.add_argument("--url", default=None, help="server base URL (default: start one locally)")
    p.add_argument("--wav", default=None, help="where to write the call's stereo WAV")

    p = sub.add_parser("demo", help="an offline call: server, simulated caller, replay")
    p.add_argument("--wav", default=None)

    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    if args.command == "diagram":
        return _diagram(args)
    if args.command == "doctor":
        return _doctor()
    if args.command == "config":
        return _config()
    if args.command == "serve":
        try:
            return trio.run(_serve_main, args)
        except ConfigError as exc:
            print(f"voice-agent: {exc}", file=sys.stderr)
            return 2
    if args.command == "call":
        return trio.run(place_call, args.to, args.from_)
    from adapters.app import demo

    if args.command == "simulate":
        return trio.run(demo.simulate_main, args)
    return trio.run(demo.demo_main, args)


if __name__ == "__main__":
    sys.exit(main())
