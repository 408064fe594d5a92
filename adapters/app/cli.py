"""voice-agent: serve calls, place a call, simulate a caller, run the offline demo, draw the states,
talk to the agent from the browser, inspect and replay call logs."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import trio

from adapters.app.arguments import parser
from adapters.app.settings import ServerSettings
from adapters.ops import logs


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__ or "").parse_args(argv)
    logs.setup(args.verbose)
    return _COMMANDS[args.command](args)


def _said(prefix: str, problem: Exception) -> int:
    """A setting that cannot work, said on stderr instead of a traceback: exit status 2."""
    print(f"{prefix}: {problem}", file=sys.stderr)
    return 2


def _settings(command: str) -> ServerSettings | None:
    """The settings, or None once stderr has said why they cannot work."""
    try:
        return ServerSettings.from_env()
    except ValueError as exc:
        _said(f"voice-agent {command}", exc)
        return None


def _serve(args: argparse.Namespace) -> int:
    from adapters.app.serving import ConfigError, serve_main
    from adapters.app.workers import default_workers, serve_workers

    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        return _said("voice-agent", exc)
    count = args.workers if args.workers is not None else settings.workers
    if count is None:
        count = 1 if args.tunnel else default_workers()
    if count < 1:
        return _said("voice-agent serve", ValueError("--workers must be at least 1"))
    if count > 1 and args.tunnel:
        return _said("voice-agent serve", ValueError("--tunnel serves one process: --workers 1"))
    try:
        if count > 1:
            return trio.run(serve_workers, count, args.host, args.port)
        return trio.run(serve_main, args.host, args.port, args.tunnel)
    except ConfigError as exc:
        return _said("voice-agent", exc)


def _doctor(_args: argparse.Namespace) -> int:
    from adapters.app import doctor

    settings = _settings("doctor")
    return 2 if settings is None else doctor.main(settings)


def _config(_args: argparse.Namespace) -> int:
    from adapters.app.settings_messages import print_effective

    settings = _settings("config")
    if settings is None:
        return 2
    print_effective(settings)
    return 0


def _call(args: argparse.Namespace) -> int:
    from adapters.app.outbound import place_call

    return trio.run(place_call, args.to, args.from_, args.server)


def _console(args: argparse.Namespace) -> int:
    from adapters.app.console_serving import console_main
    from adapters.app.serving import ConfigError
    from adapters.console import DEFAULT_PORT

    if args.port is None:
        args.port = DEFAULT_PORT
    try:
        return trio.run(console_main, args)
    except ConfigError as exc:
        return _said("voice-agent console", exc)


def _inspect(args: argparse.Namespace) -> int:
    from adapters.console import inspect as inspect_page

    return inspect_page.run(args)


def _replay(args: argparse.Namespace) -> int:
    from adapters.app import replay_cli

    return replay_cli.run(args)


def _diagram(args: argparse.Namespace) -> int:
    from adapters.app.diagram import write_diagram

    return write_diagram(Path(args.path))


def _simulate(args: argparse.Namespace) -> int:
    from adapters.app import demo

    return trio.run(demo.simulate_main, args)


def _demo(args: argparse.Namespace) -> int:
    from adapters.app import demo

    return trio.run(demo.demo_main, args)


#: What each subcommand runs; its options are in :mod:`adapters.app.arguments`.
_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "serve": _serve,
    "doctor": _doctor,
    "config": _config,
    "call": _call,
    "console": _console,
    "inspect": _inspect,
    "replay": _replay,
    "diagram": _diagram,
    "simulate": _simulate,
    "demo": _demo,
}


if __name__ == "__main__":
    sys.exit(main())
