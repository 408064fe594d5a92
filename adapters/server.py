"""The quart-trio app: Vobiz webhooks and the media WebSocket, served by hypercorn's trio worker.

``uv run voice-agent serve`` runs it; so does ``uv run hypercorn -k trio adapters.asgi:app``.
"""

from __future__ import annotations

import importlib.metadata
import json
import logging
import time
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from adapters import signature, vobiz
from adapters.runner import CallOptions, CallSession, Providers, Transport
from adapters.settings import ServerSettings
from adapters.tokens import StreamTokens, TokenError
from adapters.vobiz_rest import DEFAULT_BASE_URL, VobizRest
from engine.config import AgentConfig

log = logging.getLogger("voice_agent.server")

#: Frames accepted before ``start`` before the socket is refused (media may race ahead of it).
MAX_FRAMES_BEFORE_START = 50
START_TIMEOUT = 10.0
#: Answered calls whose media has not connected yet, and ended calls' log paths, kept.
ANSWERED_KEPT = 10_000
FINISHED_KEPT = 1_000
#: With stream retries on, how long a call whose socket dropped waits for Vobiz to reconnect.
RECONNECT_WINDOW = 5.0


def version() -> str:
    try:
        return importlib.metadata.version("vobiz-voice-agent")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"


class SocketClosed(Exception):
    """The caller's side of the media socket is gone."""


class AsgiTransport(Transport):
    """One accepted media socket, spoken to in plain ASGI messages.

    The media socket carries 50 frames a second each way per call, so it skips
    quart's websocket wrapper, whose extra task and queue per socket cost 13 µs
    of the 33 µs each inbound message took (a loopback message benchmark); the
    webhooks stay in quart.
    """

    def __init__(self, receive: Any, send: Any) -> None:
        self._receive = receive
        self._send = send
        self.closed = False

    async def receive(self) -> str | bytes:
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        self.closed = True
        raise SocketClosed(f"{message['type']} (code {message.get('code')})")

    async def send(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000) -> None:
        if not self.closed:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code})


class VoiceAgentApp(QuartTrio):
    """The quart-trio app, with the media socket's path served straight from ASGI."""

    media_socket: Any = None

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws" and self.media_socket:
            await self.media_socket(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


async def _shielded(session: CallSession, task_status: trio.TaskStatus[None]) -> None:
    """The call outlives its socket, even when the server cancels that socket's handler."""
    with trio.CancelScope(shield=True):
        await session.run(task_status=task_status)


@attrs.define
class CallHub:
    """The server's live calls, and whether it still takes new ones."""

    settings: ServerSettings
    config: AgentConfig
    providers: Providers
    tokens: StreamTokens
    rest: VobizRest | None = None
    live: dict[str, CallSession] = attrs.field(factory=dict)
    #: From/To of answered calls until their media socket comes (bounded: a call whose
    #: stream never connects must not leak).
    answered: OrderedDict[str, dict[str, str]] = attrs.field(factory=OrderedDict)
    #: Log paths of the latest ended calls, newest last.
    finished: deque[Path] = attrs.field(factory=lambda: deque(maxlen=FINISHED_KEPT))
    draining: bool = False
    idle: trio.Event = attrs.field(factory=trio.Event)

    def options(self) -> CallOptions:
        rest = self.rest
        return CallOptions(
            config=self.config,
            providers=self.providers,
            log_dir=self.settings.call_log_dir,
            record_audio=self.settings.record_audio,
            on_hangup=rest.hangup if rest is not None else None,
            on_transfer=(
                (lambda call_id, to: rest.transfer(call_id, self._transfer_url(to)))
                if rest is not None
                else None
            ),
            versions={"vobiz-voice-agent": version(), "trio": trio.__version__},
            reconnect_window=RECONNECT_WINDOW if self.settings.stream_retries else 0.0,
        )

    def _transfer_url(self, to: str) -> str:
        return f"{self.settings.public_url}/transfer?to={quote(to)}"


def create_app(settings: ServerSettings, config: AgentConfig, providers: Providers) -> QuartTrio:
    """Build the app; ``app.hub`` holds its live calls (tests and the CLI look there)."""
    if settings.media_format not in vobiz.STREAM_CONTENT_TYPES:
        raise ValueError(
            f"MEDIA_FORMAT {settings.media_format!r}: one of {', '.join(vobiz.STREAM_CONTENT_TYPES)}"
        )
    tokens = StreamTokens.from_env(settings.stream_secret)
    if tokens.ephemeral:
        log.warning(
            "STREAM_SECRET is not set: using a random per-process secret. "
            "Set a shared STREAM_SECRET when running more than one process."
        )
    rest = None
    if settings.vobiz_auth_id and settings.vobiz_auth_token:
        base_url = settings.vobiz_api_url or DEFAULT_BASE_URL
        rest = VobizRest(settings.vobiz_auth_id, settings.vobiz_auth_token, base_url)
    hub = CallHub(settings, config, providers, tokens, rest)
    hub.idle.set()
    app = VoiceAgentApp("voice_agent")
    app.hub = hub  # type: ignore[attr-defined]

    async def signed() -> bool:
        settings = hub.settings
        if not settings.validate_signatures:
            return True
        form = await request.form
        params = {k: v for k, v in form.items()}
        # Vobiz signs the URL it was given, i.e. the public one, not what a proxy forwards.
        query = request.query_string.decode()
        url = settings.public_url + request.path + (f"?{query}" if query else "")
        ok = signature.validate(
            request.method, url, params, request.headers, settings.vobiz_auth_token or ""
        )
        if not ok:
            log.warning("refused %s: bad or missing webhook signature", request.path)
        return ok

    @app.post("/answer")
    async def answer() -> Response:
        if not await signed():
            return Response("bad signature", status=403)
        settings = hub.settings
        form = await request.form
        call_id = form.get("CallUUID", "")
        if not call_id:
            return Response("CallUUID is required", status=400)
        if hub.draining or len(hub.live) >= settings.max_calls:
            log.warning("[call %s] refused: %s", call_id, "draining" if hub.draining else "full")
            xml = vobiz.busy_xml("Sorry, all our lines are busy. Please call again later.")
            return Response(xml, content_type="application/xml")
        hub.answered[call_id] = {"caller": form.get("From", ""), "callee": form.get("To", "")}
        while len(hub.answered) > ANSWERED_KEPT:
            hub.answered.popitem(last=False)
        token = tokens.issue(call_id, time.time(), settings.token_ttl)
        xml = vobiz.answer_xml(
            f"{settings.ws_base}/ws?token={token}",
            f"{settings.public_url}/stream-status",
            content_type=settings.media_format,
            max_retries=settings.stream_retries,
        )
        return Response(xml, content_type="application/xml")

    @app.post("/hangup")
    async def hangup() -> Response:
        if not await signed():
            return Response("bad signature", status=403)
        form = await request.form
        call_id = form.get("CallUUID", "")
        session = hub.live.get(call_id)
        fields = {k: form.get(k, "") for k in ("Event", "HangupCause", "Duration")}
        if session is not None:
            session.note("hangup_webhook", **fields)
            session.end_from_outside("hangup webhook")
        else:
            log.info("[call %s] hangup webhook for a call not live here: %s", call_id, fields)
        hub.answered.pop(call_id, None)
        return Response("", status=200)

    @app.post("/stream-status")
    async def stream_status() -> Response:
        if not await signed():
            return Response("bad signature", status=403)
        form = await request.form
        call_id = form.get("CallUUID", "")
        fields = {k: v for k, v in form.items() if k in ("Event", "Name", "StreamID", "ServiceURL")}
        session = hub.live.get(call_id)
        if session is not None:
            session.note("stream_status", **fields)
        else:
            log.info("[call %s] stream status: %s", call_id, fields)
        return Response("", status=200)

    @app.route("/transfer", methods=["GET", "POST"])
    async def transfer() -> Response:
        if not await signed():
            return Response("bad signature", status=403)
        xml = vobiz.dial_xml(request.args.get("to", ""))
        return Response(xml, content_type="application/xml")

    @app.get("/health")
    async def health() -> Response:
        body = {
            "status": "draining" if hub.draining else "ok",
            "active_calls": len(hub.live),
            "version": version(),
        }
        return Response(
            json.dumps(body),
            status=503 if hub.draining else 200,
            content_type="application/json",
        )

    async def media_socket(scope: dict, receive: Any, send: Any) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if (await receive())["type"] != "websocket.connect":
            return
        try:
            call_id = tokens.verify((query.get("token") or [None])[0], time.time())
        except TokenError as exc:
            log.warning("refused media socket: token %s", exc.reason)
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        await send({"type": "websocket.accept"})
        transport = AsgiTransport(receive, send)
        try:
            start = await _await_start(call_id, transport)
            if start is not None:
                await _serve_call(call_id, start, transport)
        finally:
            with trio.CancelScope(shield=True):
                await transport.close()

    async def _serve_call(call_id: str, start: vobiz.Start, transport: AsgiTransport) -> None:
        live = hub.live.get(call_id)
        if live is not None:  # Vobiz reconnected a dropped stream: the same call goes on
            await live.serve_socket(transport, start)
            return
        info = hub.answered.pop(call_id, {})
        session = CallSession(start, hub.options(), info.get("caller", ""), info.get("callee", ""))
        hub.live[call_id] = session
        hub.idle = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(_shielded, session)
                await session.serve_socket(transport)
        finally:
            hub.live.pop(call_id, None)
            hub.finished.append(session.path)
            if not hub.live:
                hub.idle.set()

    app.media_socket = media_socket
    return app


async def _await_start(call_id: str, transport: AsgiTransport) -> vobiz.Start | None:
    """Read until the stream's ``start``; media racing ahead of it is dropped."""
    with trio.move_on_after(START_TIMEOUT):
        for _ in range(MAX_FRAMES_BEFORE_START):
            try:
                frame = await transport.receive()
            except SocketClosed:
                return None
            try:
                message = vobiz.parse(frame)
            except vobiz.ProtocolError as exc:
                log.warning("[call %s] bad frame before start: %s", call_id, exc.kind)
                continue
            if isinstance(message, vobiz.Start):
                if message.call_id != call_id:
                    log.warning("[call %s] refused: start names call %s", call_id, message.call_id)
                    await transport.close(1008)
                    return None
                return message
            log.warning("[call %s] %s before start dropped", call_id, type(message).__name__)
    log.warning("[call %s] no start event: closing", call_id)
    await transport.close(1008)
    return None
