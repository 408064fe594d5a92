"""The media WebSocket (``/ws``), served straight from ASGI: who may connect, and one call's socket.

The media socket carries 50 frames a second each way per call, so it skips
quart's websocket wrapper, whose extra task and queue per socket cost a large
share of each inbound message's handling (``docs/load.md``); the webhooks stay
in quart. A socket is admitted before ``accept`` (a valid token,
and the call book's word that it may join: see :mod:`adapters.app.admission`),
waits for the stream's ``start``, then is carried by the call's runner. Every
path that ends it closes it and drains what the client still sends.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

import trio

from adapters.app.admission import NewCall, Reconnect
from adapters.app.webhook_trust import shown
from adapters.call.runner import CallRunner
from adapters.ops import metrics
from adapters.vobiz import protocol as vobiz

if TYPE_CHECKING:
    from adapters.app.switchboard import Switchboard

log = logging.getLogger("voice_agent.server")

#: Frames accepted before ``start`` before the socket is refused (media may race ahead of it).
MAX_FRAMES_BEFORE_START = 50
START_TIMEOUT = 10.0
#: After the server closes a media socket it keeps reading (and discarding) what the client
#: still sends, this long at most, so the close handshake completes and the socket is freed.
CLOSE_DRAIN = 5.0
#: The close code of a stream handed over to another worker (RFC 6455: the server restarts).
SERVICE_RESTART = 1012


class SocketClosed(Exception):
    """The caller's side of the media socket is gone."""


class AsgiTransport:
    """One accepted media socket, spoken to in plain ASGI messages."""

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


def media_socket(board: Switchboard) -> Callable[[Any, Any, Any], Awaitable[None]]:
    """The ASGI handler of ``/ws`` for this switchboard."""

    async def handle(scope: dict, receive: Any, send: Any) -> None:
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        if (await receive())["type"] != "websocket.connect":
            return
        admitted = await board.admit_socket((query.get("token") or [None])[0])
        if admitted is None:
            await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            return
        call_id, claim = admitted
        await send({"type": "websocket.accept"})
        transport = AsgiTransport(receive, send)
        try:
            await serve_socket(board, call_id, claim, transport)
        finally:
            with trio.CancelScope(shield=True):
                await transport.close()
                await transport.drain(CLOSE_DRAIN)

    return handle


async def serve_socket(
    board: Switchboard, call_id: str, claim: NewCall | Reconnect, transport: AsgiTransport
) -> None:
    """Wait for the stream's ``start``, then start the call, or carry it on after a reconnect."""
    try:
        start = await await_start(call_id, transport)
    finally:
        if isinstance(claim, Reconnect):
            board.book.reconnecting.discard(call_id)
    if start is None:
        board.book.release(call_id, trio.current_time())
        if isinstance(claim, NewCall) and claim.lease is not None:
            claim.lease.release(ended=False)
        return
    if isinstance(claim, Reconnect):  # Vobiz reconnected a dropped stream: the call goes on
        live = board.live.get(call_id)
        if live is not None:
            await live.serve_socket(transport, start)
        return
    answered = claim.answered
    try:
        runner = CallRunner(
            start,
            board.options(),
            answered.caller,
            answered.callee,
            prior=claim.prior,
            lease=claim.lease,
        )
    except BaseException:
        board.book.release(call_id, trio.current_time())
        if claim.lease is not None:
            claim.lease.release(ended=False)
        raise
    board.started(call_id, runner)
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(_shielded, runner)
            await runner.serve_socket(transport)
        if runner.handed_over:
            await transport.close(SERVICE_RESTART)
    finally:
        board.finished(call_id, runner)
        if claim.lease is not None:  # after the footer: a late reconnect elsewhere finds it over
            claim.lease.release(ended=not runner.handed_over)


async def _shielded(runner: CallRunner, task_status: trio.TaskStatus[None]) -> None:
    """The call outlives its socket, even when the server cancels that socket's handler."""
    with trio.CancelScope(shield=True):
        await runner.run(task_status=task_status)


async def await_start(call_id: str, transport: AsgiTransport) -> vobiz.Start | None:
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
                log.warning("bad frame before start: %s", exc.kind, extra={"call_id": call_id})
                metrics.PROTOCOL_ERRORS.labels(exc.kind).inc()
                continue
            if isinstance(message, vobiz.Start):
                if message.call_id != call_id:
                    log.warning(
                        "refused: start names call %s",
                        shown(message.call_id),
                        extra={"call_id": call_id},
                    )
                    await transport.close(1008)
                    return None
                return message
            log.warning(
                "%s before start dropped", type(message).__name__, extra={"call_id": call_id}
            )
    log.warning("no start event: closing", extra={"call_id": call_id})
    await transport.close(1008)
    return None
