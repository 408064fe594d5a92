"""``voice-agent console``: a softphone in the browser, the live engine beside it, and the inspector.

The console is the ordinary server (``/answer``, ``/ws``, ``/hangup``) with a
few pages and a read-only API added under ``/console``. The page plays the
part of Vobiz over the same media protocol, so what the developer hears is
what a caller would hear through the real server path. Everything under
``/console`` answers only this machine's browser, or a request carrying the
console token (see :mod:`adapters.console.access`). :mod:`adapters.app.console_serving`
serves it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import trio
from quart import Blueprint, Response, redirect, request, send_from_directory, websocket

from adapters.console import access
from adapters.console.feed import ConsoleCalls
from adapters.console.inspect import STATIC, recording_path, view_for
from adapters.console.statechart import svg
from engine.calllog import LogError

log = logging.getLogger("voice_agent.console")

DEFAULT_PORT = 8765
#: Calls listed on the console's "recent calls" page.
LOGS_LISTED = 100
_LOG_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]*\.jsonl")
_PAGES = {"calls.html", "inspect.html"}


def _summary(path: Path) -> dict[str, Any]:
    """A log's header and footer fields for the list, read without the lines between."""
    summary: dict[str, Any] = {"name": path.name, "audio": recording_path(path).is_file()}
    with path.open("rb") as f:
        first = f.readline()
        f.seek(max(0, path.stat().st_size - 65536))
        tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
    try:
        header = json.loads(first)
        summary |= {k: header.get(k) for k in ("call_id", "caller", "callee", "started_at")}
    except ValueError:
        summary["call_id"] = None
    try:
        footer = json.loads(tail)
    except ValueError:
        footer = {}
    finished = isinstance(footer, dict) and footer.get("kind") == "footer"
    summary["finished"] = finished
    summary["duration"] = footer.get("duration", footer.get("t")) if finished else None
    summary["reason"] = footer.get("reason") if finished else None
    return summary


def list_logs(log_dir: Path, limit: int = LOGS_LISTED) -> list[dict[str, Any]]:
    """The newest logs first."""
    if not log_dir.is_dir():
        return []
    paths = sorted(log_dir.glob("*.jsonl"), key=lambda p: p.stat().st_mtime, reverse=True)
    out = []
    for path in paths[:limit]:
        try:
            out.append(_summary(path))
        except OSError:
            continue
    return out


def _log_file(log_dir: Path, name: str) -> Path | None:
    """The log called ``name`` in the log folder; None for anything else (no paths, no dot files)."""
    if not _LOG_NAME.fullmatch(name):
        return None
    path = log_dir / name
    return path if path.is_file() else None


def _refused(reason: str) -> Response:
    log.warning("console refused %s from %s: %s", request.path, request.remote_addr, reason)
    return Response(f"console: {reason}", status=403)


def install(app: Any, token: str | None = None) -> ConsoleCalls:
    """Add the console's pages, its API and its feed to ``app``; returns the console's calls."""
    board = app.switchboard
    calls = ConsoleCalls()
    board.log_listener = calls.listen
    bp = Blueprint("console", __name__, url_prefix="/console")

    @bp.before_request
    async def guard() -> Response | None:
        reason = access.refusal(request.remote_addr, request.headers, request.args, token)
        return _refused(reason) if reason else None

    _add_pages(bp)
    _add_call_api(bp, board, calls)
    _add_log_api(bp, board)
    _add_feed(bp, calls, token)
    app.register_blueprint(bp)

    @app.get("/")
    async def root() -> Any:
        return redirect("/console/")

    return calls


def _add_pages(bp: Blueprint) -> None:
    """The pages, their scripts and styles, and the state chart they draw."""

    @bp.get("/")
    async def index() -> Response:
        return await send_from_directory(STATIC, "index.html")

    @bp.get("/<page>")
    async def page(page: str) -> Response:
        if page not in _PAGES:
            return Response("not found", status=404)
        return await send_from_directory(STATIC, page)

    @bp.get("/static/<path:name>")
    async def static(name: str) -> Response:
        response = await send_from_directory(STATIC, name)
        response.headers["Cache-Control"] = "no-cache"
        return response

    @bp.get("/api/machine.svg")
    async def machine() -> Response:
        return Response(svg(), content_type="image/svg+xml")


def _add_call_api(bp: Blueprint, board: Any, calls: ConsoleCalls) -> None:
    """The page's own calls: a new call's id, and the log it is writing."""

    @bp.post("/api/calls")
    async def new_call() -> Response:
        if request.mimetype != "application/json":  # a cross-site form cannot send JSON
            return Response("a JSON request is expected", status=415)
        return Response(json.dumps({"call_id": calls.new_call()}), content_type="application/json")

    @bp.get("/api/calls/<call_id>")
    async def call_log(call_id: str) -> Response:
        if call_id not in calls.calls:
            return Response("not a console call", status=404)
        tag = hashlib.sha256(call_id.encode()).hexdigest()[:10]
        live = board.live.get(call_id)
        paths = [live.path] if live is not None else list(board.finished_logs)
        name = next((p.name for p in reversed(paths) if f"_{tag}" in p.stem), None)
        body = {"call_id": call_id, "live": live is not None, "log": name}
        return Response(json.dumps(body), content_type="application/json")


def _add_log_api(bp: Blueprint, board: Any) -> None:
    """The log folder, read only: the list, one call's view, its recording."""

    @bp.get("/api/logs")
    async def logs() -> Response:
        log_dir = board.settings.call_log_dir
        listed = await trio.to_thread.run_sync(list_logs, log_dir)
        body = {"log_dir": str(log_dir), "logs": listed}
        return Response(json.dumps(body), content_type="application/json")

    @bp.get("/api/logs/<name>")
    async def one_log(name: str) -> Response:
        path = _log_file(board.settings.call_log_dir, name)
        if path is None:
            return Response(f"no call log {name!r} in the log folder", status=404)
        try:
            view = await trio.to_thread.run_sync(view_for, path)
        except (OSError, UnicodeDecodeError, LogError) as exc:
            return Response(f"unreadable: {exc}", status=422)
        return Response(json.dumps(view), content_type="application/json")

    @bp.get("/api/logs/<name>/audio")
    async def audio(name: str) -> Response:
        path = _log_file(board.settings.call_log_dir, name)
        if path is None or not recording_path(path).is_file():
            return Response("no recording", status=404)
        wav = recording_path(path)
        return await send_from_directory(wav.parent, wav.name, mimetype="audio/wav")


def _add_feed(bp: Blueprint, calls: ConsoleCalls, token: str | None) -> None:
    """A console call's records as they are written, over a WebSocket."""

    @bp.websocket("/api/feed")
    async def feed() -> None:
        reason = access.refusal(
            websocket.remote_addr, websocket.headers, websocket.args, token, websocket=True
        )
        if reason:
            log.warning("console refused the feed to %s: %s", websocket.remote_addr, reason)
            await websocket.close(1008)
            return
        subscription = calls.subscribe(websocket.args.get("call", ""))
        if subscription is None:
            await websocket.close(1008, "not a console call")
            return
        backlog, channel = subscription
        await websocket.accept()
        for record in backlog:
            await websocket.send(json.dumps(record))
        async with channel:
            async for record in channel:
                await websocket.send(json.dumps(record))
        await websocket.close(1000)
