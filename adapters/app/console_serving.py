"""``voice-agent console``: the ordinary server with the console installed, on loopback.

The page plays the part of Vobiz, so the settings that speak to Vobiz (its
account, signatures, the stream's format and retries) are set for it here,
whatever the environment says; the providers are the environment's, or the
offline ones with ``--offline``.
"""

from __future__ import annotations

import os
import webbrowser
from typing import Any

import trio

from adapters.app.serving import ConfigError, build_app, serve_on_loopback, until_interrupted
from adapters.app.settings import ServerSettings
from adapters.console import install


async def console_main(args: Any) -> int:
    """Serve the console on loopback until interrupted; print (and maybe open) its address."""
    try:
        settings = _console_settings(args)
        app = build_app(settings)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    install(app, token=args.token or os.environ.get("CONSOLE_TOKEN") or None)
    shutdown = trio.Event()
    try:
        async with trio.open_nursery() as nursery:
            base = await serve_on_loopback(nursery, app, shutdown, port=args.port)
            url = f"{base}/console/"
            print(f"console: {url}", flush=True)
            print(f"call logs: {settings.call_log_dir.resolve()}", flush=True)
            if args.open:
                await trio.to_thread.run_sync(webbrowser.open, url)
            await until_interrupted()
            shutdown.set()
    except* OSError as group:
        first = group.exceptions[0]
        raise ConfigError(
            f"cannot serve on 127.0.0.1:{args.port} ({first}); choose another port with --port"
        ) from None
    return 0


def _console_settings(args: Any) -> ServerSettings:
    """The settings from the environment, with the page as the phone company: no Vobiz
    account, no signatures, one format."""
    overrides: dict[str, Any] = {}
    if args.offline:
        overrides |= {
            "stt_provider": "offline",
            "llm_provider": "scripted",
            "tts_provider": "offline",
        }
    return ServerSettings.from_env(
        host="127.0.0.1",
        port=args.port,
        validate_signatures=False,
        vobiz_auth_id=None,
        vobiz_auth_token=None,
        vobiz_parent_auth_token=None,
        media_format="audio/x-mulaw;rate=8000",
        stream_retries=0,
        record_audio=not args.no_record,
        **overrides,
    )
