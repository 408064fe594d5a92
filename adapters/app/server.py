"""The quart-trio app: Vobiz webhooks and the media WebSocket, served by hypercorn's trio worker.

``uv run voice-agent serve`` runs it; so does ``uv run hypercorn -k trio adapters.app.asgi:app``.
This module only assembles: the routes are in :mod:`adapters.app.webhooks` and
:mod:`adapters.app.media_socket`, the server's calls in :mod:`adapters.app.switchboard`.
"""

from __future__ import annotations

import logging
from typing import Any

import trio
from quart_trio import QuartTrio

from adapters.app import webhook_trust
from adapters.app.media_socket import media_socket
from adapters.app.settings import ServerSettings, reveal
from adapters.app.switchboard import Switchboard
from adapters.app.webhooks import add_webhooks
from adapters.ops import metrics
from adapters.providers.interfaces import Providers
from adapters.vobiz.protocol import STREAM_CONTENT_TYPES, media_format_problem
from adapters.vobiz.rest import DEFAULT_BASE_URL, VobizRest
from adapters.vobiz.tokens import StreamTokens
from engine.config import AgentConfig

log = logging.getLogger("voice_agent.server")


class VoiceAgentApp(QuartTrio):
    """The quart-trio app, with the media socket's path served straight from ASGI."""

    switchboard: Switchboard
    media_socket: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws" and self.media_socket:
            await self.media_socket(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


def check_media_format(settings: ServerSettings) -> None:
    """A stream format Vobiz does not send is refused before anything starts."""
    if settings.media_format not in STREAM_CONTENT_TYPES:
        raise ValueError(media_format_problem(settings.media_format))


def create_app(
    settings: ServerSettings, config: AgentConfig, providers: Providers
) -> VoiceAgentApp:
    """Build the app; ``app.switchboard`` holds its calls (tests and the CLI look there)."""
    check_media_format(settings)
    tokens = StreamTokens.from_env(reveal(settings.stream_secret))
    if tokens.ephemeral:
        log.warning(
            "STREAM_SECRET is not set: using a random per-process secret. "
            "Set a shared STREAM_SECRET when running more than one process."
        )
    rest = None
    if settings.vobiz_auth_id and settings.vobiz_auth_token:
        base_url = settings.vobiz_api_url or DEFAULT_BASE_URL
        rest = VobizRest(settings.vobiz_auth_id, reveal(settings.vobiz_auth_token) or "", base_url)
    board = Switchboard(settings, config, providers, tokens, rest)
    app = VoiceAgentApp("voice_agent")
    app.switchboard = board
    add_webhooks(app)
    app.media_socket = media_socket(board)
    _watch_the_loop(app)
    log.info(webhook_trust.describe(settings))
    return app


def _watch_the_loop(app: VoiceAgentApp) -> None:
    """Measure the event loop's lag for ``/metrics`` while the app serves, however it is
    served (``voice-agent serve``, hypercorn's command line, the tests)."""
    stop = trio.CancelScope()

    async def watch() -> None:
        with stop:
            await metrics.watch_loop_lag()

    @app.before_serving
    async def _start() -> None:
        app.nursery.start_soon(watch)

    @app.after_serving
    async def _stop() -> None:
        stop.cancel()
