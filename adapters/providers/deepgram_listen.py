"""What Deepgram's two live recognizers (Nova on ``/v1/listen``, Flux on ``/v2/listen``) share.

Both take the phone's mu-law over one WebSocket, both count time in seconds of
audio received on that connection, and both can drop or refuse. Their messages
differ, not the way the stream survives, so this module holds that one way:

* a pump that always takes the phone's audio, connected or not, so the caller
  side never stalls;
* :class:`~adapters.providers.deepgram_backlog.AudioBacklog`, the caller audio
  not yet covered by a result, replayed after a reconnect so words said while
  the socket was down are still heard;
* :func:`listen`, the reconnect loop with its backoff, the engine's
  ``SttLost``/``SttRestored``, and the refusals that retrying cannot fix;
* :class:`ListenSession`, one connection: a reader that never stops reading
  (trio-websocket buffers a single inbound message), a writer for audio and the
  close, and a keep-alive during pauses. Each recognizer subclasses it with how to
  read its messages and how to keep its connection alive.

Wire facts and sources: ``docs/deepgram.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
)

from adapters.media.audio import FRAME_BYTES, PHONE_RATE
from adapters.ops import metrics
from adapters.providers.deepgram import auth_headers, refusal_detail
from adapters.providers.deepgram_backlog import AudioBacklog
from adapters.providers.interfaces import AudioSource, ProviderLink
from adapters.providers.wsclient import open_client
from engine.events import SttLost, SttRestored

#: Handshake refusals that mean "fix the account or the request", never "try again".
FATAL_STATUSES = frozenset({400, 401, 402, 403})
#: Close codes after which reconnecting would loop on the same error (1008 DATA-0000: bad audio).
FATAL_CLOSE_CODES = frozenset({1008})


@attrs.frozen
class StreamSettings:
    """Where Deepgram is, and how the shared loop keeps the stream alive; each recognizer's
    settings add what it asks of the service."""

    api_key: str = attrs.field(default="", repr=False)
    url: str = "wss://api.deepgram.com"
    keyterms: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Send the recognizer's sign of life after this long without audio.
    keepalive_after: float = 3.0
    #: At most this much unconfirmed caller audio is kept for replay after a reconnect: an
    #: outage this long loses none of what the caller said (8 KB a second).
    backlog_seconds: float = 30.0
    #: Waits between reconnection attempts; the last one repeats.
    backoff: tuple[float, ...] = attrs.field(default=(0.25, 0.5, 1.0, 2.0), converter=tuple)
    connect_timeout: float = 5.0
    #: How long to wait for the last results and the close after CloseStream.
    close_timeout: float = 3.0

    def headers(self) -> list[tuple[bytes, bytes]]:
        return auth_headers(self.api_key)


class Fatal(Exception):
    """Retrying cannot help; the reason is for the log."""


class Lost(Exception):
    """The connection broke; reconnecting may help."""


def audio_offset(seconds: Any) -> int:
    """A result's time (seconds of audio on this connection) as a byte offset of 8 kHz mu-law."""
    return round(float(seconds) * PHONE_RATE)


@attrs.define(eq=False)
class ListenSession:
    """One connection: a reader that never stops reading, and a writer for audio and control.

    Subclasses say what the server's messages mean (:meth:`dispatch`), how to
    keep a quiet connection open (:meth:`keep_alive`), and what the engine must
    hear when the connection is abandoned (:meth:`abandon`).
    """

    settings: StreamSettings
    backlog: AudioBacklog
    link: ProviderLink
    #: For the log: which recognizer speaks.
    name: str = "deepgram"
    #: For ``/metrics``: the provider label of its connects and errors.
    provider: str = "deepgram"
    #: Bytes per message: at most, and at least while the phone keeps sending.
    max_send: int = PHONE_RATE // 10
    min_send: int = 1
    offset: int = 0
    heard_from_server: bool = False
    close_sent: bool = False
    last_sent: float = 0.0  # trio time of the last message sent on this connection
    unknown_types: set[str] = attrs.Factory(set)

    async def run(self, ws: WebSocketConnection) -> None:
        self.backlog.new_connection()
        self.last_sent = trio.current_time()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._write, ws)
            nursery.start_soon(self._keep_alive, ws)
            ending = await self._read(ws)
            nursery.cancel_scope.cancel()
        if ending is not None:  # raised out here, not wrapped in the nursery's group
            raise ending

    async def dispatch(self, message: dict[str, Any]) -> None:
        raise NotImplementedError

    async def keep_alive(self, ws: WebSocketConnection) -> None:
        raise NotImplementedError

    async def abandon(self) -> None:
        """The connection ended without the audio's end: nothing to tell by default."""

    def ignore(self, kind: Any) -> None:
        if kind not in self.unknown_types:
            self.unknown_types.add(str(kind))
            self.link.log.info("%s: ignoring message type %r", self.name, kind)

    def call_time(self, seconds: Any) -> float:
        """The call time at which the phone delivered the audio at ``seconds`` of this connection.

        What the backlog no longer holds (confirmed, or dropped for size) is
        reckoned back from the newest audio sent.
        """
        offset = audio_offset(seconds)
        at = self.backlog.call_time_of(offset)
        if at is None:
            at = self.link.now() - max(0, self.offset - offset) / PHONE_RATE
        return at

    async def _read(self, ws: WebSocketConnection) -> Exception | None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                code = reason.code if reason else None
                why = (reason.reason or reason.name) if reason else "no reason"
                if self.close_sent:  # what follows our close is the end, whatever its code
                    return None
                if code in FATAL_CLOSE_CODES:
                    return Fatal(f"closed with {code} ({why})")
                return Lost(f"connection closed with {code} ({why})")
            self.heard_from_server = True
            if isinstance(message, str):
                await self.dispatch(json.loads(message))

    async def _write(self, ws: WebSocketConnection) -> None:
        """Send the phone's audio as it comes (a reconnect first replays what is unconfirmed)."""
        backlog = self.backlog
        cursor = backlog.first_index()
        try:
            while True:
                batch = backlog.unsent_from(cursor, limit=self.max_send)
                size = sum(len(c.data) for c in batch)
                if batch and (size >= self.min_send or backlog.closed):
                    for chunk in batch:
                        chunk.sent_at = self.offset
                        self.offset += len(chunk.data)
                    cursor = batch[-1].index + 1
                    data = batch[0].data if len(batch) == 1 else b"".join(c.data for c in batch)
                    await ws.send_message(data)
                    self.last_sent = trio.current_time()
                elif backlog.closed:
                    await self._close_stream(ws)
                    return
                else:
                    await backlog.wait_changed()
        except ConnectionClosed:
            await trio.sleep_forever()  # the reader reports why

    async def _keep_alive(self, ws: WebSocketConnection) -> None:
        """Deepgram closes a stream that hears nothing for a while: speak up during pauses.

        A task of its own, so the writer's path for each frame has no timeout.
        """
        try:
            while not self.close_sent:
                due = self.last_sent + self.settings.keepalive_after
                if trio.current_time() < due:
                    await trio.sleep_until(due)
                    continue
                await self.keep_alive(ws)
                self.last_sent = trio.current_time()
        except ConnectionClosed:
            await trio.sleep_forever()

    async def _close_stream(self, ws: WebSocketConnection) -> None:
        self.close_sent = True
        await ws.send_message(json.dumps({"type": "CloseStream"}))
        await trio.sleep(self.settings.close_timeout)
        self.link.log.warning("%s: no close after CloseStream; giving up", self.name)
        await ws.aclose()


async def listen(
    url: str,
    settings: StreamSettings,
    audio: AudioSource,
    link: ProviderLink,
    new_session: Callable[[AudioBacklog], ListenSession],
) -> None:
    """Stream ``audio`` to ``url`` until it ends; survives drops, gives up only on account errors."""
    backlog = AudioBacklog(max_bytes=round(settings.backlog_seconds * PHONE_RATE))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_pump, audio, backlog, link)
        await _connect_loop(url, settings, backlog, link, new_session)


async def _pump(audio: AudioSource, backlog: AudioBacklog, link: ProviderLink) -> None:
    """Always take the phone's audio, connected or not, so the caller side never stalls."""
    async for chunk in audio:
        if chunk:  # an empty frame would end Deepgram's stream
            # A batch of frames (the caller was quiet) began when its first frame came.
            at = link.now() - max(0, len(chunk) - FRAME_BYTES) / PHONE_RATE
            backlog.append(bytes(chunk), at)
    backlog.close()


async def _connect_loop(
    url: str,
    settings: StreamSettings,
    backlog: AudioBacklog,
    link: ProviderLink,
    new_session: Callable[[AudioBacklog], ListenSession],
) -> None:
    """Connect, and reconnect after every drop; the engine hears when the caller's words
    stop being understood (:class:`SttLost`) and when they are again (:class:`SttRestored`)."""
    failures = 0
    down = False
    connect = "stt_connect"  # the call's first connection; later ones are reconnects
    while not backlog.closed:
        session = new_session(backlog)
        name = session.name
        fatal = reason = ""
        began = trio.current_time()
        try:
            async with open_client(url, settings.headers(), settings.connect_timeout) as ws:
                elapsed = trio.current_time() - began
                metrics.PROVIDER_LATENCY.labels(session.provider, connect).observe(elapsed)
                if down:
                    down = False
                    await link.emit(SttRestored())
                await session.run(ws)
            return  # CloseStream answered: the call's audio has ended
        except ConnectionRejected as exc:
            why = f"handshake refused with HTTP {exc.status_code} ({refusal_detail(exc)})"
            if exc.status_code in FATAL_STATUSES:
                fatal = why
            else:
                reason = why
        except Fatal as exc:
            fatal = str(exc)
        except Lost as exc:
            reason = str(exc)
        except (HandshakeError, OSError, ConnectionClosed) as exc:
            reason = f"{type(exc).__name__}: {exc}"
        await session.abandon()
        metrics.PROVIDER_ERRORS.labels(session.provider, "stt").inc()
        connect = "stt_reconnect"
        if fatal:
            link.log.error(
                "%s: %s; not retrying, the call goes on without speech recognition", name, fatal
            )
            if not down:
                await link.emit(SttLost(fatal[:200]))
            return
        if session.heard_from_server:
            failures = 0
        if backlog.closed:
            link.log.warning("%s: %s after the audio ended; stopping", name, reason)
            return
        if not down:
            down = True
            await link.emit(SttLost(reason[:200]))
        delay = settings.backoff[min(failures, len(settings.backoff) - 1)]
        failures += 1
        link.log.warning(
            "%s: %s; reconnecting in %.2f s (attempt %d)", name, reason, delay, failures
        )
        await trio.sleep(delay)
