"""The command line's grammar: every ``voice-agent`` subcommand and its options.

Kept apart from :mod:`adapters.app.cli`, which runs the command chosen, so the
whole of the command line can be read in one place. ``inspect`` and ``replay``
bring their own options (``add_arguments``): they also run on their own.
"""

from __future__ import annotations

import argparse
from typing import Any


def parser(description: str) -> argparse.ArgumentParser:
    """The parser of ``voice-agent``; the chosen subcommand's name is ``args.command``."""
    parser = argparse.ArgumentParser(prog="voice-agent", description=description)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)
    _add_server_commands(sub)
    _add_console_commands(sub)
    _add_offline_commands(sub)
    return parser


def _add_server_commands(sub: Any) -> None:
    """The server and the Vobiz account: serve, doctor, config, call."""
    p = sub.add_parser("serve", help="answer Vobiz calls (webhooks + media WebSocket)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="server processes sharing the port, each admitting calls by its own load"
        " (default: the cores this process may use; 1 with --tunnel)",
    )
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


def _add_console_commands(sub: Any) -> None:
    """The browser console and the call logs: console, inspect, replay."""
    from adapters.app import replay_cli
    from adapters.console import inspect as inspect_page

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
    inspect_page.add_arguments(p)

    p = sub.add_parser("replay", help="replay call logs through the engine (exit 0 identical)")
    replay_cli.add_arguments(p)


def _add_offline_commands(sub: Any) -> None:
    """What needs no account: diagram, simulate, demo."""
    p = sub.add_parser("diagram", help="write the call state diagram (Mermaid)")
    p.add_argument("path", nargs="?", default="docs/states.md")

    p = sub.add_parser("simulate", help="call a server as a simulated Vobiz caller")
    p.add_argument("--url", default=None, help="server base URL (default: start one locally)")
    p.add_argument("--wav", default=None, help="where to write the call's stereo WAV")

    p = sub.add_parser("demo", help="an offline call: server, simulated caller, replay")
    p.add_argument("--wav", default=None)
