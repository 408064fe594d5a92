"""The Vobiz webhooks: answer a call, hear that it ended, take stream news, transfer; and health.

Each handler checks its sender first (:mod:`adapters.app.webhook_trust`) and
keeps to what Vobiz documents of the form it posts. Form fields are not signed,
so a handler acts on a live call only as far as its sender is trusted: an
unsigned hang-up cannot end a call whose caller is still connected, and an
unsigned status callback never reaches a call's log.
"""

from __future__ import annotations

import functools
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart import Quart, Response, current_app, request

from adapters.app import webhook_trust
from adapters.app.admission import Refused
from adapters.app.switchboard import Switchboard, version
from adapters.app.webhook_trust import Trust, shown
from adapters.ops import metrics
from adapters.vobiz import xml as vobiz_xml
from adapters.vobiz.status import stream_status as read_stream_status

log = logging.getLogger("voice_agent.server")

#: Webhook bodies are small forms; anything bigger is not from Vobiz.
MAX_WEBHOOK_BYTES = 16 * 1024
#: A webhook body must arrive within this time (slow-body clients hold a connection each).
WEBHOOK_BODY_TIMEOUT = 5.0
#: Longest form values we keep. Vobiz call ids are UUIDs; numbers are E.164 or SIP URIs.
MAX_CALL_ID = 128
MAX_NUMBER = 256
BUSY = "Sorry, all our lines are busy. Please call again later."


def add_webhooks(app: Quart) -> None:
    app.config["MAX_CONTENT_LENGTH"] = MAX_WEBHOOK_BYTES
    app.config["BODY_TIMEOUT"] = WEBHOOK_BODY_TIMEOUT
    app.register_error_handler(413, too_large)
    app.add_url_rule("/answer", view_func=answer, methods=["POST"])
    app.add_url_rule("/hangup", view_func=hangup, methods=["POST"])
    app.add_url_rule("/stream-status", view_func=stream_status, methods=["POST"])
    app.add_url_rule("/transfer", view_func=transfer, methods=["GET", "POST"])
    app.add_url_rule("/health", view_func=health, methods=["GET"])
    app.add_url_rule("/metrics", view_func=metrics_page, methods=["GET"])


def _board() -> Switchboard:
    return current_app.switchboard  # type: ignore[attr-defined]


def _from_vobiz(
    handler: Callable[[Trust], Awaitable[Response]],
) -> Callable[[], Awaitable[Response]]:
    """A webhook that runs only for a sender :mod:`adapters.app.webhook_trust` lets in, and
    is told how far it is trusted (whether the request was signed)."""

    @functools.wraps(handler)
    async def checked() -> Response:
        board = _board()
        trust = await webhook_trust.check(board.settings, board.nonces)
        if isinstance(trust, Response):
            return trust
        return await handler(trust)

    return checked


def _form_value(form: Any, key: str, limit: int) -> str | None:
    """A form field within its documented size, or None when it is over (or has control bytes)."""
    value = form.get(key, "")
    if len(value) > limit or any(ord(c) < 32 or c == "\x7f" for c in value):
        return None
    return str(value)


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


@_from_vobiz
async def answer(_trust: Trust) -> Response:
    """Answer a call: a stream token for it (or the busy message), as VobizXML."""
    board = _board()
    form = await request.form
    call_id = _form_value(form, "CallUUID", MAX_CALL_ID)
    if not call_id:
        return Response("CallUUID is required (at most 128 printable characters)", status=400)
    caller = _form_value(form, "From", MAX_NUMBER) or ""
    callee = _form_value(form, "To", MAX_NUMBER) or ""
    load = board.load
    overloaded = load.refusal() if load is not None else None
    again = call_id in board.book.answered
    admitted = board.book.answer(
        call_id, caller, callee, trio.current_time(), overloaded=overloaded is not None
    )
    if isinstance(admitted, Refused):
        why = f"{admitted.reason}: {overloaded}" if admitted.reason == "overloaded" else ""
        log.warning("refused at /answer: %s", why or admitted.reason, extra={"call_id": call_id})
        metrics.refused("answer", admitted.reason)
        if admitted.reason in ("full", "draining", "overloaded"):
            return Response(vobiz_xml.busy_xml(BUSY), content_type="application/xml")
        return Response(f"refused: {admitted.reason}", status=409)
    if load is not None and not again:
        load.admitted()
    # Its media socket may land on another worker of the deployment, which then starts it.
    await board.store.remember_answer(call_id, caller, callee, board.book.answer_window)
    settings = board.settings
    token = board.tokens.issue(call_id, board.wall_clock(), board.token_lifetime())
    xml = vobiz_xml.answer_xml(
        f"{settings.ws_base}/ws?token={token}",
        f"{settings.public_url}/stream-status",
        content_type=settings.media_format,
        max_retries=settings.stream_retries,
    )
    return Response(xml, content_type="application/xml")


@_from_vobiz
async def hangup(trust: Trust) -> Response:
    """The platform's word that a call ended: trusted for a live call only when signed."""
    board = _board()
    form = await request.form
    call_id = form.get("CallUUID", "")
    runner = board.live.get(call_id)
    fields = {k: form.get(k, "")[:64] for k in ("Event", "HangupCause", "Duration")}
    if runner is None:
        log.info("hangup webhook for a call not live here", extra={"call_id": shown(call_id)})
        if trust.signed:
            board.book.answered.pop(call_id, None)
        board.hangup_heard(call_id)
    elif trust.signed:
        runner.hangup_heard = True
        runner.note("hangup_webhook", **fields)
        runner.end_from_outside("hangup webhook")
    else:
        runner.hangup_reported(fields)
    return Response("", status=200)


@_from_vobiz
async def stream_status(trust: Trust) -> Response:
    """Stream news (started, dropped, degraded, …): into the call's log when signed."""
    form = await request.form
    call_id = form.get("CallUUID", "")
    status = read_stream_status(form)
    runner = _board().live.get(call_id)
    if runner is not None and trust.signed:
        runner.stream_status(status)
    else:
        log.info("stream status: %s", status.for_log(), extra={"call_id": shown(call_id)})
    return Response("", status=200)


@_from_vobiz
async def transfer(_trust: Trust) -> Response:
    """Where a REST transfer sends the caller: a ``<Dial>`` to the number."""
    xml = vobiz_xml.dial_xml(request.args.get("to", ""))
    return Response(xml, content_type="application/xml")


async def health() -> Response:
    """For load balancers: 503 while draining, while full, and while the measured load
    refuses new calls (``refusing`` says why): a new call would hear the busy message here,
    so the balancer should send it to another server."""
    board = _board()
    full = board.book.held >= board.book.max_calls
    load = board.load.report() if board.load is not None else None
    refusing = load["refusing"] if load is not None else None
    body: dict[str, Any] = {
        "status": "draining"
        if board.draining
        else "full"
        if full
        else "busy"
        if refusing
        else "ok",
        "active_calls": len(board.live),
        "held_calls": board.book.held,
        "version": version(),
        # Which process answered: several may share the port (``serve --workers``).
        "worker": board.worker,
        # Where Vobiz reaches this server: ``voice-agent call`` reads it from here.
        "public_url": board.settings.public_url,
    }
    if load is not None:
        body["load"] = load
    status = 503 if board.draining or full or refusing else 200
    return Response(json.dumps(body), status=status, content_type="application/json")


async def metrics_page() -> Response:
    """For Prometheus: every figure of :mod:`adapters.ops.metrics`, in its text format."""
    body, content_type = metrics.exposition()
    return Response(body, content_type=content_type)
