"""Deepgram Aura streaming text-to-speech (``/v1/speak``) over trio-websocket.

Aura can speak 8 kHz mu-law itself, so its frames go to the phone as they
are: no resampling, no codec work, the lowest first-byte latency we can get.

One WebSocket per sentence: the simplest shape in which a cancelled
sentence can never leak audio into the next one. Cancellation (barge-in)
sends ``Clear`` under a short shielded deadline, as a courtesy that stops
billing and generation at Deepgram, then drops the socket; the runner has
already stopped listening to this sentence, so nothing waits for
``Cleared``. A per-call connection would save a handshake per sentence
(see ``docs/deepgram.md`` for how it would have to work).
"""

from __future__ import annotations

import contextlib
import json
from typing import Any
from urllib.parse import urlencode

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from adapters.providers.deepgram import auth_headers, refusal_detail
from adapters.providers.interfaces import ProviderLink
from adapters.providers.wsclient import open_client
from engine.events import TtsAudio, TtsDone, TtsFailed


@attrs.frozen
class AuraSettings:
    """Which voice, and how long to wait before calling a sentence lost."""

    api_key: str = attrs.field(default="", repr=False)
    url: str = "wss://api.deepgram.com"
    model: str = "aura-2-thalia-en"
    connect_timeout: float = 5.0
    #: Longest wait for the first audio, and then between two messages.
    reply_timeout: float = 5.0
    #: Deadline for the best-effort ``Clear`` on cancellation.
    clear_timeout: float = 0.5

    def speak_url(self) -> str:
        params = {"model": self.model, "encoding": "mulaw", "sample_rate": "8000"}
        return f"{self.url.rstrip('/')}/v1/speak?{urlencode(params)}"

    def headers(self) -> list[tuple[bytes, bytes]]:
        return auth_headers(self.api_key)


@attrs.define(eq=False)
class DeepgramSpeech:
    """:class:`adapters.providers.interfaces.TextToSpeech` backed by Deepgram Aura."""

    settings: AuraSettings = attrs.Factory(AuraSettings)

    async def synthesize(self, utterance: int, seq: int, text: str, link: ProviderLink) -> None:
        """Stream sentence ``seq``: TtsAudio*, then TtsDone or TtsFailed."""
        if not text.strip():
            await link.emit(TtsDone(utterance, seq))
            return
        settings = self.settings
        started = link.now()
        try:
            async with open_client(
                settings.speak_url(), settings.headers(), settings.connect_timeout
            ) as ws:
                try:
                    await ws.send_message(json.dumps({"type": "Speak", "text": text}))
                    await ws.send_message(json.dumps({"type": "Flush"}))
                    await self._receive(ws, utterance, seq, link, started)
                except trio.Cancelled:
                    await self._clear(ws)
                    raise
                await _send_quietly(ws, {"type": "Close"})
        except trio.TooSlowError:
            await self._failed(utterance, seq, link, f"no reply within {settings.reply_timeout} s")
        except HandshakeError as exc:
            await self._failed(utterance, seq, link, f"handshake failed: {_describe(exc)}")
        except ConnectionClosed as exc:
            reason = exc.reason
            why = f"{reason.code} ({reason.reason or reason.name})" if reason else "no reason"
            await self._failed(utterance, seq, link, f"closed with {why}")
        except OSError as exc:
            await self._failed(utterance, seq, link, f"network error: {exc}")

    async def _receive(
        self, ws: WebSocketConnection, utterance: int, seq: int, link: ProviderLink, started: float
    ) -> None:
        first = True
        while True:
            with trio.fail_after(self.settings.reply_timeout):
                message = await ws.get_message()
            if isinstance(message, bytes):
                if not message:
                    continue
                if first:
                    first = False
                    link.log.info(
                        "deepgram tts: first audio of %d/%d after %.3f s",
                        utterance,
                        seq,
                        link.now() - started,
                    )
                await link.emit(TtsAudio(utterance, seq, message))
                continue
            data = json.loads(message)
            kind = data.get("type")
            if kind == "Flushed":
                await link.emit(TtsDone(utterance, seq))
                return
            if kind == "Warning":
                link.log.warning(
                    "deepgram tts: warning %s: %s", data.get("code"), data.get("description")
                )
            elif kind == "Metadata":
                link.log.debug("deepgram tts: metadata %s", data)
            elif kind != "Cleared":
                link.log.info("deepgram tts: ignoring message type %r", kind)

    async def _clear(self, ws: WebSocketConnection) -> None:
        with trio.move_on_after(self.settings.clear_timeout) as scope:
            scope.shield = True
            await _send_quietly(ws, {"type": "Clear"})

    async def _failed(self, utterance: int, seq: int, link: ProviderLink, reason: str) -> None:
        link.log.warning("deepgram tts: sentence %d/%d failed: %s", utterance, seq, reason)
        await link.emit(TtsFailed(utterance, seq, reason))


async def _send_quietly(ws: WebSocketConnection, message: dict[str, Any]) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send_message(json.dumps(message))


def _describe(exc: HandshakeError) -> str:
    status = getattr(exc, "status_code", None)
    if status is None:
        return str(exc) or type(exc).__name__
    return f"HTTP {status} {refusal_detail(exc)}"
