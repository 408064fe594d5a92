"""voice-agent: serve calls, place a call, simulate a caller, run the offline demo, draw the states,
talk to the agent from the browser, inspect and replay call logs."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

import trio

from adapters.app.serving import ConfigError, build_app, serve_app

log = logging.getLogger("voice_agent")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if not verbose:  # one line per request is noise next to a call's own log
        logging.getLogger("httpx").setLevel(logging.WARNING)


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
    tunnel = None
    try:
        async with trio.open_nursery() as nursery:
            binds = await nursery.start(
                lambda task_status: serve_app(
                    app, settings.host, settings.port, shutdown=shutdown, task_status=task_status
                )
            )
            if args.tunnel:
                tunnel = await _tunnel_to(app, binds, shutdown)
            public = app.switchboard.settings.public_url
            log.info("serving on %s; answer URL %s/answer", ", ".join(binds), public)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for _ in signals:
                    log.info(
                        "shutting down: no new calls; live calls get %.0f s",
                        settings.drain_timeout,
                    )
                    shutdown.set()
                    break
    except* ConfigError as group:  # out of the nursery: one error, said plainly
        raise group.exceptions[0] from None
    finally:
        if tunnel is not None and tunnel.close is not None:
            tunnel.close()
    return 0


async def _tunnel_to(app, binds: list[str], shutdown: trio.Event):
    """``serve --tunnel``: the public https URL becomes this server's, and the console lines say so."""
    from urllib.parse import urlsplit

    from adapters.app.tunnel import TunnelError, open_tunnel

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


async def place_call(to: str, from_: str, server: str | None = None) -> int:
    """``voice-agent call``: the exit status; the call id on stdout, a clear reason on stderr.

    Without ``PUBLIC_URL`` the running server is asked for its own (``/health``), so a
    server started with ``serve --tunnel`` can be called through without copying its address.
    """
    from adapters.app.settings import ServerSettings, reveal
    from adapters.app.tunnel import TunnelError, public_url_of
    from adapters.vobiz.rest import VobizApiError, VobizRest

    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        print(f"voice-agent call: {exc}", file=sys.stderr)
        return 2
    if not (settings.vobiz_auth_id and settings.vobiz_auth_token):
        print("voice-agent call: set VOBIZ_AUTH_ID and VOBIZ_AUTH_TOKEN first", file=sys.stderr)
        return 2
    public_url = settings.public_url
    if settings.source("public_url") == "default":
        try:
            public_url = await public_url_of(server or f"http://127.0.0.1:{settings.port}")
        except TunnelError as exc:
            print(f"voice-agent call: {exc}", file=sys.stderr)
            return 2
    token = reveal(settings.vobiz_auth_token) or ""
    rest = VobizRest(settings.vobiz_auth_id, token, settings.vobiz_api_url)
    try:
        async with rest:
            call_id = await rest.make_call(
                from_,
                to,
                f"{public_url}/answer",
                f"{public_url}/hangup",
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
    from adapters.app.settings import ServerSettings
    from adapters.app.settings_messages import print_effective

    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        print(f"voice-agent config: {exc}", file=sys.stderr)
        return 2
    print_effective(settings)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="voice-agent", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="answer Vobiz calls (webhooks + media WebSocket)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--tunnel",
        action="store_true",
        help="take a public https URL from ngrok (its running agent, or pyngrok) and print"
        " the answer/hangup URLs for the Vobiz console",
    )

    sub.add_parser("doctor", help="explain what the settings will do on a real Vobiz number")
    sub.add_parser(
        "config", help="print every effective setting and where it came from (keys masked)"
    )

    p = sub.add_parser("call", help="place an outbound call through the Vobiz REST API")
    p.add_argument("to")
    p.add_argument("--from", dest="from_", required=True)
    p.add_argument(
        "--server",
        help="the running server to ask for its public URL when PUBLIC_URL is not set"
        " (default http://127.0.0.1:PORT)",
    )

    p = sub.add_parser("console", help="talk to the agent from the browser, watch the engine")
    p.add_argument("--port", type=int, default=None, help="loopback port (default 8765)")
    p.add_argument("--open", action="store_true", help="open the console in a browser")
    p.add_argument(
        "--offline", action="store_true", help="offline providers even when API keys are set"
    )
    p.add_argument("--no-record", action="store_true", help="do not keep the calls' audio")
    p.add_argument(
        "--token", help="also let requests through a proxy or tunnel in when they carry this"
    )

    p = sub.add_parser("inspect", help="draw a call log as a page (timeline, lanes, latency)")
    from adapters.console import inspect as inspect_page

    inspect_page.add_arguments(p)

    p = sub.add_parser("replay", help="replay call logs through the engine (exit 0 identical)")
    from adapters.app import replay_cli

    replay_cli.add_arguments(p)

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
        return trio.run(place_call, args.to, args.from_, args.server)
    if args.command == "inspect":
        return inspect_page.run(args)
    if args.command == "replay":
        return replay_cli.run(args)
    if args.command == "console":
        from adapters.console import DEFAULT_PORT, console_main

        if args.port is None:
            args.port = DEFAULT_PORT
        try:
            return trio.run(console_main, args)
        except ConfigError as exc:
            print(f"voice-agent console: {exc}", file=sys.stderr)
            return 2
    from adapters.app import demo

    if args.command == "simulate":
        return trio.run(demo.simulate_main, args)
    return trio.run(demo.demo_main, args)


if __name__ == "__main__":
    sys.exit(main())
