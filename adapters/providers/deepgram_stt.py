"""Deepgram live speech-to-text (Nova, ``/v1/listen``) over trio-websocket.

The phone's 8 kHz mu-law goes to Deepgram untouched, so there is nothing to
resample and nothing to wait for. The official SDK runs on threads or
asyncio, hence a raw WebSocket. Three things shape this module:

* trio-websocket buffers a single inbound message, so one task per
  connection does nothing but read and translate;
* a dropped connection must not make the agent deaf: caller audio that
  Deepgram has not yet covered with a final result stays in a short backlog
  and is sent again after reconnecting, so the next words are still heard;
* a refusal that retrying cannot fix (bad key, no credit) stops the
  recognizer for this call instead of hammering the service; the call goes on.

Wire facts and sources: ``docs/deepgram.md``.
"""

from __future__ import annotations

import bisect
import json
from collections import deque
from typing import Any
from urllib.parse import urlencode

import attrs
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    HandshakeError,
    WebSocketConnection,
)

from adapters.media.audio import FRAME_BYTES, PHONE_RATE
from adapters.providers.deepgram import auth_headers, refusal_detail
from adapters.providers.interfaces import AudioSource, ProviderLink
from adapters.providers.wsclient import open_client
from engine.events import CallerPaused, CallerSpeechStarted, SttLost, SttRestored, Transcript

#: Handshake refusals that mean "fix the account or the request", never "try again".
FATAL_STATUSES = frozenset({400, 401, 402, 403})
#: Close codes after which reconnecting would loop on the same error (1008 DATA-0000: bad audio).
FATAL_CLOSE_CODES = frozenset({1008})


@attrs.frozen
class DeepgramSettings:
    """How to reach Deepgram and what to ask of it.

    ``endpointing`` is the silence (ms) before ``speech_final``; the service
    default of 10 ms cuts callers off mid-thought, 300 suits a conversation.
    ``utterance_end_ms`` backs it up when noise hides the silence.
    """

    api_key: str = attrs.field(default="", repr=False)
    url: str = "wss://api.deepgram.com"
    model: str = "nova-3"
    language: str = "en"
    interim_results: bool = True
    endpointing: int = 300
    utterance_end_ms: int = 1000
    vad_events: bool = True
    smart_format: bool = True
    keyterms: tuple[str, ...] = attrs.field(default=(), converter=tuple)
    #: Send KeepAlive after this long without audio (the service closes after 10 s).
    keepalive_after: float = 3.0
    #: At most this much unconfirmed caller audio is kept for replay after a reconnect: an
    #: outage this long loses none of what the caller said (8 KB a second).
    backlog_seconds: float = 30.0
    #: Waits between reconnection attempts; the last one repeats.
    backoff: tuple[float, ...] = attrs.field(default=(0.25, 0.5, 1.0, 2.0), converter=tuple)
    connect_timeout: float = 5.0
    #: How long to wait for the last finals and the close after CloseStream.
    close_timeout: float = 3.0

    def listen_url(self) -> str:
        """The ``/v1/listen`` URL; a list parameter is repeated, as the API wants."""
        params: list[tuple[str, str]] = [
            ("model", self.model),
            ("language", self.language),
            ("encoding", "mulaw"),
            ("sample_rate", "8000"),
            ("channels", "1"),
            ("interim_results", _bool(self.interim_results)),
            ("endpointing", str(self.endpointing)),
            ("utterance_end_ms", str(self.utterance_end_ms)),
            ("vad_events", _bool(self.vad_events)),
            ("smart_format", _bool(self.smart_format)),
        ]
        params += [("keyterm", term) for term in self.keyterms]
        return f"{self.url.rstrip('/')}/v1/listen?{urlencode(params)}"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return auth_headers(self.api_key)


def _bool(value: bool) -> str:
    return "true" if value else "false"


@attrs.define
class _Chunk:
    index: int
    at: float  # call time it arrived from the phone
    data: bytes
    sent_at: int | None = None  # byte offset on the current connection, once sent


@attrs.define
class AudioBacklog:
    """Caller audio Deepgram has not confirmed with a final result yet.

    Offsets are per connection because Deepgram's clock restarts at zero on
    every connection: a final covering ``[0, end)`` confirms the chunks sent
    before ``end``; a reconnect replays what is left from offset zero.
    """

    max_bytes: int
    chunks: deque[_Chunk] = attrs.Factory(deque)
    size: int = 0
    closed: bool = False
    next_index: int = 0
    _changed: trio.Event = attrs.Factory(trio.Event)

    def append(self, data: bytes, at: float) -> None:
        self.chunks.append(_Chunk(self.next_index, at, data))
        self.next_index += 1
        self.size += len(data)
        while self.size > self.max_bytes and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft().data)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def first_index(self) -> int:
        return self.chunks[0].index if self.chunks else self.next_index

    def unsent_from(self, index: int, limit: int) -> list[_Chunk]:
        """Chunks from ``index`` on (or the oldest kept, if it was dropped), up to ``limit`` bytes."""
        out: list[_Chunk] = []
        total = 0
        # Indices are consecutive, so go straight to ``index``. This runs for every chunk,
        # and what is unsent sits at the newest end of up to 30 s of backlog: a deque is
        # indexed from its nearer end, where walking it from the oldest would pass them all.
        chunks = self.chunks
        for position in range(max(0, index - self.first_index()), len(chunks)):
            chunk = chunks[position]
            if out and total + len(chunk.data) > limit:
                break
            out.append(chunk)
            total += len(chunk.data)
        return out

    def new_connection(self) -> None:
        for chunk in self.chunks:
            chunk.sent_at = None

    def confirm(self, until_offset: int) -> None:
        """A final result covered the audio before ``until_offset`` on this connection."""
        while self.chunks:
            head = self.chunks[0]
            if head.sent_at is None or head.sent_at + len(head.data) > until_offset:
                break
            self.size -= len(head.data)
            self.chunks.popleft()

    def call_time_of(self, offset: int) -> float | None:
        """When the phone delivered the audio at ``offset`` of this connection, if still known."""
        sent = [(c.sent_at, c) for c in self.chunks if c.sent_at is not None]
        i = bisect.bisect_right([at for at, _ in sent], offset) - 1
        if i < 0 or offset >= sent[i][0] + len(sent[i][1].data):
            return None
        sent_at, chunk = sent[i]
        return chunk.at + (offset - sent_at) / PHONE_RATE


KEEP_ALIVE = json.dumps({"type": "KeepAlive"})


class _Fatal(Exception):
    """Retrying cannot help; the reason is for the log."""


class _Lost(Exception):
    """The connection broke; reconnecting may help."""


@attrs.define(eq=False)
class DeepgramSTT:
    """:class:`adapters.providers.interfaces.SpeechToText` backed by Deepgram's live API."""

    settings: DeepgramSettings = attrs.Factory(DeepgramSettings)

    async def run(self, audio: AudioSource, link: ProviderLink) -> None:
        """Stream until ``audio`` ends; survives drops, gives up only on account errors."""
        backlog = AudioBacklog(max_bytes=round(self.settings.backlog_seconds * PHONE_RATE))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_pump, audio, backlog, link)
            await self._connect_loop(backlog, link)

    async def _connect_loop(self, backlog: AudioBacklog, link: ProviderLink) -> None:
        """Connect, and reconnect after every drop; the engine hears when the caller's words
        stop being understood (:class:`SttLost`) and when they are again (:class:`SttRestored`)."""
        settings = self.settings
        failures = 0
        url = settings.listen_url()
        down = False
        while not backlog.closed:
            session = _Session(settings, backlog, link)
            try:
                async with open_client(url, settings.headers(), settings.connect_timeout) as ws:
                    if down:
                        down = False
                        await link.emit(SttRestored())
                    await session.run(ws)
                return  # CloseStream answered: the call's audio has ended
            except ConnectionRejected as exc:
                if exc.status_code in FATAL_STATUSES:
                    why = f"handshake refused with HTTP {exc.status_code} ({refusal_detail(exc)})"
                    link.log.error(
                        "deepgram stt: %s; not retrying, the call goes on without speech "
                        "recognition",
                        why,
                    )
                    if not down:
                        await link.emit(SttLost(why[:200]))
                    return
                reason = f"handshake refused with HTTP {exc.status_code} ({refusal_detail(exc)})"
            except _Fatal as exc:
                link.log.error("deepgram stt: %s; not retrying", exc)
                if not down:
                    await link.emit(SttLost(str(exc)[:200]))
                return
            except _Lost as exc:
                reason = str(exc)
            except (HandshakeError, OSError, ConnectionClosed) as exc:
                reason = f"{type(exc).__name__}: {exc}"
            if session.heard_from_server:
                failures = 0
            if backlog.closed:
                link.log.warning("deepgram stt: %s after the audio ended; stopping", reason)
                return
            if not down:
                down = True
                await link.emit(SttLost(reason[:200]))
            delay = settings.backoff[min(failures, len(settings.backoff) - 1)]
            failures += 1
            link.log.warning(
                "deepgram stt: %s; reconnecting in %.2f s (attempt %d)", reason, delay, failures
            )
            await trio.sleep(delay)


async def _pump(audio: AudioSource, backlog: AudioBacklog, link: ProviderLink) -> None:
    """Always take the phone's audio, connected or not, so the caller side never stalls."""
    async for chunk in audio:
        if chunk:  # an empty frame would end Deepgram's stream
            # A batch of frames (the caller was quiet) began when its first frame came.
            at = link.now() - max(0, len(chunk) - FRAME_BYTES) / PHONE_RATE
            backlog.append(bytes(chunk), at)
    backlog.close()


@attrs.define(eq=False)
class _Session:
    """One connection: a reader that never stops reading, and a writer for audio and control."""

    settings: DeepgramSettings
    backlog: AudioBacklog
    link: ProviderLink
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

    async def _read(self, ws: WebSocketConnection) -> Exception | None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed as exc:
                reason = exc.reason
                code = reason.code if reason else None
                why = (reason.reason or reason.name) if reason else "no reason"
                if code == 1000 and self.close_sent:
                    return None
                if code in FATAL_CLOSE_CODES:
                    return _Fatal(f"closed with {code} ({why})")
                return _Lost(f"connection closed with {code} ({why})")
            self.heard_from_server = True
            if isinstance(message, str):
                await self._dispatch(json.loads(message))

    async def _dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        link = self.link
        if kind == "Results":
            await self._results(message)
        elif kind == "SpeechStarted":
            offset = round(float(message.get("timestamp", 0.0)) * PHONE_RATE)
            at = self.backlog.call_time_of(offset)
            if at is None:
                at = link.now() - max(0, self.offset - offset) / PHONE_RATE
            await link.emit(CallerSpeechStarted(at=at, source="stt"))
        elif kind == "UtteranceEnd":
            await link.emit(CallerPaused())
        elif kind == "Metadata":
            link.log.info(
                "deepgram stt: metadata request_id=%s duration=%s",
                message.get("request_id"),
                message.get("duration"),
            )
        elif kind == "Error":  # older servers sent errors as text before closing
            link.log.warning("deepgram stt: error message %s", message)
        elif kind not in self.unknown_types:
            self.unknown_types.add(str(kind))
            link.log.info("deepgram stt: ignoring message type %r", kind)

    async def _results(self, message: dict[str, Any]) -> None:
        is_final = bool(message.get("is_final"))
        if is_final:
            end = float(message.get("start", 0.0)) + float(message.get("duration", 0.0))
            self.backlog.confirm(round(end * PHONE_RATE))
        alternatives = message.get("channel", {}).get("alternatives") or [{}]
        text = str(alternatives[0].get("transcript", "")).strip()
        speech_final = bool(message.get("speech_final")) and is_final
        # An empty final that ends speech is news too: the sound had no words (a cough),
        # so an agent it interrupted may resume at once.
        if text or speech_final:
            await self.link.emit(Transcript(text, is_final=is_final, speech_final=speech_final))

    async def _write(self, ws: WebSocketConnection) -> None:
        """Send the phone's audio as it comes (a reconnect first replays what is unconfirmed)."""
        backlog = self.backlog
        cursor = backlog.first_index()
        try:
            while True:
                batch = backlog.unsent_from(cursor, limit=PHONE_RATE // 10)
                if batch:
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
        """Deepgram closes a stream that hears nothing for 10 s: speak up during pauses.

        A task of its own, so the writer's path for each 20 ms frame has no timeout.
        """
        try:
            while not self.close_sent:
                due = self.last_sent + self.settings.keepalive_after
                if trio.current_time() < due:
                    await trio.sleep_until(due)
                    continue
                await ws.send_message(KEEP_ALIVE)
                self.last_sent = trio.current_time()
        except ConnectionClosed:
            await trio.sleep_forever()

    async def _close_stream(self, ws: WebSocketConnection) -> None:
        self.close_sent = True
        await ws.send_message(json.dumps({"type": "CloseStream"}))
        await trio.sleep(self.settings.close_timeout)
        self.link.log.warning("deepgram stt: no close after CloseStream; giving up")
        await ws.aclose()
