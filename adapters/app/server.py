"""The quart-trio app: Vobiz webhooks and the media WebSocket, served by hypercorn's trio worker.

``uv run voice-agent serve`` runs it; so does ``uv run hypercorn -k trio adapters.app.asgi:app``.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote

import attrs
import trio
from quart import Response, request
from quart_trio import QuartTrio

from adapters.app.admission import CallBook, NewCall, Reconnect, Refused
from adapters.app.settings import ServerSettings, reveal
from adapters.call.runner import CallOptions, CallSession, Providers, Transport
from adapters.vobiz import protocol as vobiz
from adapters.vobiz import signature
from adapters.vobiz.rest import DEFAULT_BASE_URL, VobizRest
from adapters.vobiz.signature import NonceMemory
from adapters.vobiz.tokens import StreamTokens, TokenError
from engine.config import AgentConfig

log = logging.getLogger("voice_agent.server")

#: Frames accepted before ``start`` before the socket is refused (media may race ahead of it).
MAX_FRAMES_BEFORE_START = 50
START_TIMEOUT = 10.0
#: Ended calls' log paths kept for tests and tools.
FINISHED_KEPT = 1_000
#: With stream retries on, how long a call whose socket dropped waits for Vobiz to reconnect.
RECONNECT_WINDOW = 5.0
#: After the server closes a media socket it keeps reading (and discarding) what the client
#: still sends, this long at most, so the close handshake completes and the socket is freed.
CLOSE_DRAIN = 5.0
#: A stream token outlives the longest call by this much (the answer window and slack).
TOKEN_SLACK = 60.0
#: Webhook bodies are small forms; anything bigger is not from Vobiz.
MAX_WEBHOOK_BYTES = 16 * 1024
#: A webhook body must arrive within this time (slow-body clients hold a connection each).
WEBHOOK_BODY_TIMEOUT = 5.0
#: Longest form values we keep. Vobiz call ids are UUIDs; numbers are E.164 or SIP URIs.
MAX_CALL_ID = 128
MAX_NUMBER = 256


def shown(text: str, limit: int = 80) -> str:
    """Untrusted text made safe for one console log line: bounded, control characters escaped."""
    return text[:limit].encode("unicode_escape").decode("ascii")


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
        self.closed = False  # we sent our close
        self.disconnected = False  # the client's side is gone

    async def receive(self) -> str | bytes:
        if self.disconnected:
            raise SocketClosed("already disconnected")
        message = await self._receive()
        if message["type"] == "websocket.receive":
            text = message.get("text")
            return text if text is not None else (message.get("bytes") or b"")
        self.disconnected = True
        raise SocketClosed(f"{message['type']} (code {message.get('code')})")

    async def send(self, text: str) -> None:
        await self._send({"type": "websocket.send", "text": text})

    async def close(self, code: int = 1000) -> None:
        if not self.closed and not self.disconnected:
            self.closed = True
            await self._send({"type": "websocket.close", "code": code})

    async def drain(self, deadline: float) -> None:
        """Discard what the client still sends until it disconnects, ``deadline`` seconds at most.

        hypercorn hands a socket's messages to the app through a queue of ten;
        an app that stops reading while the client keeps sending leaves
        hypercorn's reader blocked on that queue, the close handshake never
        completes and the socket stays in CLOSE-WAIT for good.
        """
        with trio.move_on_after(deadline):
            while not self.disconnected:
                with contextlib.suppress(SocketClosed):
                    await self.receive()


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
class Trust:
    """Whether a webhook's sender is known to be Vobiz: a valid signature, never seen before."""

    signed: bool


@attrs.define
class CallHub:
    """The server's calls (answered, live, ended), and whether it still takes new ones."""

    settings: ServerSettings
    config: AgentConfig
    providers: Providers
    tokens: StreamTokens
    rest: VobizRest | None = None
    book: CallBook = attrs.field(init=False)
    nonces: NonceMemory = attrs.field(factory=NonceMemory)
    #: Log paths of the latest ended calls, newest last.
    finished: deque[Path] = attrs.field(factory=lambda: deque(maxlen=FINISHED_KEPT))
    idle: trio.Event = attrs.field(factory=trio.Event)
    #: Unix time for stream tokens (tests move it; the call book runs on trio's clock).
    wall_clock: Callable[[], float] = time.time
    #: After the agent's ``stop``, how long Vobiz has to close the stream before a REST hang-up.
    stop_grace: float = 5.0
    #: Calls that ended here and whose hang-up webhook has not come yet (bounded, newest last):
    #: a draining server answers those before it exits, so Vobiz's last callbacks do not fail.
    awaiting_hangup: OrderedDict[str, None] = attrs.field(factory=OrderedDict)
    hangups_in: trio.Event = attrs.field(factory=trio.Event)

    def __attrs_post_init__(self) -> None:
        self.book = CallBook(self.settings.max_calls)

    @property
    def live(self) -> dict[str, CallSession]:
        return self.book.live  # type: ignore[return-value]

    @property
    def draining(self) -> bool:
        return self.book.draining

    @draining.setter
    def draining(self, value: bool) -> None:
        self.book.draining = value

    def token_lifetime(self) -> float:
        """A token lives as long as its call can (reconnects included), and no longer."""
        return self.config.max_call_seconds + self.book.answer_window + TOKEN_SLACK

    def options(self) -> CallOptions:
        rest = self.rest
        retries = self.settings.stream_retries
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
            reconnect_window=RECONNECT_WINDOW if retries else 0.0,
            max_reconnects=retries,
            stop_grace=self.stop_grace,
        )

    def _transfer_url(self, to: str) -> str:
        return f"{self.settings.public_url}/transfer?to={quote(to)}"

    def describe_signatures(self) -> str:
        """The start-up line that says what webhooks must carry."""
        s = self.settings
        if s.validate_signatures:
            return (
                "webhook signatures ENFORCED (VALIDATE_SIGNATURES): Vobiz must sign callbacks "
                f"to PUBLIC_URL={s.public_url} - configure callback authentication for the "
                "answer, hangup and stream-status URLs in the Vobiz console, or every call is "
                "refused with 403"
            )
        return (
            "webhook signatures NOT checked (VALIDATE_SIGNATURES=false): anyone who can reach "
            "/answer can start a call; /hangup and /stream-status from unsigned senders only "
            "end a call whose media socket has closed and never write into its log"
        )

    async def trust(self) -> Trust | Response:
        """Check the current webhook's signature (when enforced); a Response refuses it."""
        s = self.settings
        if not s.validate_signatures:
            return Trust(signed=False)
        query = request.query_string.decode()
        # Vobiz signs the URL it was given, i.e. the public one, not what a proxy forwards.
        url = s.public_url + request.path + (f"?{query}" if query else "")
        if not signature.present(request.headers):
            verdict = signature.check(request.method, url, None, request.headers, "-")
        else:
            verdict = signature.check(
                request.method,
                url,
                None,
                request.headers,
                reveal(s.vobiz_auth_token) or "",
                reveal(s.vobiz_parent_auth_token),
            )
            if not verdict.ok:  # the stricter Plivo form signs the form fields too
                form = await request.form
                verdict = signature.check(
                    request.method,
                    url,
                    form.to_dict(flat=False),
                    request.headers,
                    reveal(s.vobiz_auth_token) or "",
                    reveal(s.vobiz_parent_auth_token),
                )
        if not verdict.ok:
            log.warning(
                "refused %s from %s: %s", request.path, request.remote_addr, verdict.problem
            )
            return Response("bad signature", status=403)
        if not self.nonces.first_time(f"{verdict.scheme}:{verdict.nonce}"):
            log.warning(
                "refused %s from %s: a replay (nonce %s was used before)",
                request.path,
                request.remote_addr,
                shown(verdict.nonce, 40),
            )
            return Response("replayed request", status=403)
        return Trust(signed=True)

    # -- the media socket --------------------------------------------------------------
    def admit_socket(self, token: str | None) -> tuple[str, NewCall | Reconnect] | None:
        """Whether a media socket may join a call; logs why not."""
        try:
            call_id = self.tokens.verify(token, self.wall_clock())
        except TokenError as exc:
            log.warning("refused media socket: token %s", exc.reason)
            return None
        claim = self.book.claim(call_id, trio.current_time())
        if isinstance(claim, Refused):
            log.warning("[call %s] refused media socket: %s", call_id, claim.reason)
            return None
        return call_id, claim

    async def serve_socket(
        self, call_id: str, claim: NewCall | Reconnect, transport: AsgiTransport
    ) -> None:
        try:
            start = await _await_start(call_id, transport)
        finally:
            if isinstance(claim, Reconnect):
                self.book.reconnecting.discard(call_id)
        if start is None:
            self.book.release(call_id, trio.current_time())
            return
        if isinstance(claim, Reconnect):  # Vobiz reconnected a dropped stream: the call goes on
            live = self.live.get(call_id)
            if live is not None:
                await live.serve_socket(transport, start)
            return
        answered = claim.answered
        session = CallSession(start, self.options(), answered.caller, answered.callee)
        self.book.started(call_id, session)
        self.idle = trio.Event()
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(_shielded, session)
                await session.serve_socket(transport)
        finally:
            self.book.finished(call_id)
            self.finished.append(session.path)
            if not session.hangup_heard:
                self._await_hangup(call_id)
            if not self.live:
                self.idle.set()

    def _await_hangup(self, call_id: str) -> None:
        self.awaiting_hangup[call_id] = None
        while len(self.awaiting_hangup) > FINISHED_KEPT:
            self.awaiting_hangup.popitem(last=False)
        self.hangups_in = trio.Event()

    def hangup_heard(self, call_id: str) -> None:
        self.awaiting_hangup.pop(call_id, None)
        if not self.awaiting_hangup:
            self.hangups_in.set()


def _form_value(form: Any, key: str, limit: int) -> str | None:
    """A form field within its documented size, or None when it is over (or has control bytes)."""
    value = form.get(key, "")
    if len(value) > limit or any(ord(c) < 32 or c == "\x7f" for c in value):
        return None
    return value


def create_app(settings: ServerSettings, config: AgentConfig, providers: Providers) -> QuartTrio:
    """Build the app; ``app.hub`` holds its calls (tests and the CLI look there)."""
    if settings.media_format not in vobiz.STREAM_CONTENT_TYPES:
        raise ValueError(vobiz.media_format_problem(settings.media_format))
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
    hub = CallHub(settings, config, providers, tokens, rest)
    hub.idle.set()
    hub.hangups_in.set()
    app = VoiceAgentApp("voice_agent")
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES
    app.config["BODY_TIMEOUT"] = WEBHOOK_BODY_TIMEOUT
    app.hub = hub  # type: ignore[attr-defined]
    log.info(hub.describe_signatures())

    @app.errorhandler(413)
    async def too_large(_error: Exception) -> Response:
        # Close the connection too: hypercorn would otherwise keep it open with the unread
        # body in its buffers, a connection held for nothing.
        log.warning(
            "refused %s from %s: body over %d bytes",
            request.path,
            request.remote_addr,
            MAX_WEBHOOK_BYTES,
        )
        return Response("request body too large", status=413, headers={"Connection": "close"})

    @app.post("/answer")
    async def answer() -> Response:
        trust = await hub.trust()
        if isinstance(trust, Response):
            return trust
        form = await request.form
        call_id = _form_value(form, "CallUUID", MAX_CALL_ID)
        if not call_id:
            return Response("CallUUID is required (at most 128 printable characters)", status=400)
        caller = _form_value(form, "From", MAX_NUMBER) or ""
        callee = _form_value(form, "To", MAX_NUMBER) or ""
        admitted = hub.book.answer(call_id, caller, callee, trio.current_time())
        if isinstance(admitted, Refused):
            log.warning("[call %s] refused at /answer: %s", call_id, admitted.reason)
            if admitted.reason in ("full", "draining"):
                xml = vobiz.busy_xml("Sorry, all our lines are busy. Please call again later.")
                return Response(xml, content_type="application/xml")
            return Response(f"refused: {admitted.reason}", status=409)
        token = tokens.issue(call_id, hub.wall_clock(), hub.token_lifetime())
        xml = vobiz.answer_xml(
            f"{hub.settings.ws_base}/ws?token={token}",
            f"{hub.settings.public_url}/stream-status",
            content_type=hub.settings.media_format,
            max_retries=hub.settings.stream_retries,
        )
        return Response(xml, content_type="application/xml")

    @app.post("/hangup")
    async def hangup() -> Response:
        trust = await hub.trust()
        if isinstance(trust, Response):
            return trust
        form = await request.form
        call_id = form.get("CallUUID", "")
        session = hub.live.get(call_id)
        fields = {k: form.get(k, "")[:64] for k in ("Event", "HangupCause", "Duration")}
        if session is None:
            log.info("[call %s] hangup webhook for a call not live here", shown(call_id))
            if trust.signed:
                hub.book.answered.pop(call_id, None)
            hub.hangup_heard(call_id)
        elif trust.signed:
            session.hangup_heard = True
            session.note("hangup_webhook", **fields)
            session.end_from_outside("hangup webhook")
        else:
            session.hangup_reported(fields)
        return Response("", status=200)

    @app.post("/stream-status")
    async def stream_status() -> Response:
        trust = await hub.trust()
        if isinstance(trust, Response):
            return trust
        form = await request.form
        call_id = form.get("CallUUID", "")
        status = vobiz.stream_status(form)
        session = hub.live.get(call_id)
        if session is not None and trust.signed:
            session.stream_status(status)
        else:
            log.info("[call %s] stream status: %s", shown(call_id), status.for_log())
        return Response("", status=200)

    @app.route("/transfer", methods=["GET", "POST"])
    async def transfer() -> Response:
        trust = await hub.trust()
        if isinstance(trust, Response):
            return trust
        xml = vobiz.dial_xml(request.args.get("to", ""))
        return Response(xml, content_type="application/xml")

    @app.get("/health")
    async def health() -> Response:
        body = {
            "status": "draining" if hub.draining else "ok",
            "active_calls": len(hub.live),
            "held_calls": hub.book.held,
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
        admitted = hub.admit_socket((query.get("token") or [None])[0])
        if admitted is None:
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        call_id, claim = admitted
        await send({"type": "websocket.accept"})
        transport = AsgiTransport(receive, send)
        try:
            await hub.serve_socket(call_id, claim, transport)
        finally:
            with trio.CancelScope(shield=True):
                await transport.close()
                await transport.drain(CLOSE_DRAIN)

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
                    log.warning(
                        "[call %s] refused: start names call %s", call_id, shown(message.call_id)
                    )
                    await transport.close(1008)
                    return None
                return message
            log.warning("[call %s] %s before start dropped", call_id, type(message).__name__)
    log.warning("[call %s] no start event: closing", call_id)
    await transport.close(1008)
    return None
