"""Deepgram live speech-to-text (Nova, ``/v1/listen``) over trio-websocket.

The phone's 8 kHz mu-law goes to Deepgram untouched, so there is nothing to
resample and nothing to wait for. The official SDK runs on threads or
asyncio, hence a raw WebSocket. How the stream survives drops and refusals is
shared with Flux (``adapters/providers/deepgram_listen.py``); this module says
what Nova's messages mean. A final result confirms the audio it covers, so the
backlog replayed after a reconnect holds only what no final has covered yet.

Wire facts and sources: ``docs/deepgram.md``.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlencode

import attrs
from trio_websocket import WebSocketConnection

from adapters.providers.deepgram_backlog import AudioBacklog
from adapters.providers.deepgram_listen import (
    ListenSession,
    StreamSettings,
    audio_offset,
    listen,
)
from adapters.providers.interfaces import AudioSource, ProviderLink
from engine.events import CallerPaused, CallerSpeechStarted, Transcript


@attrs.frozen
class DeepgramSettings(StreamSettings):
    """What to ask of Nova (where it is, and the stream's own knobs: :class:`StreamSettings`).

    ``endpointing`` is the silence (ms) before ``speech_final``; the service
    default of 10 ms cuts callers off mid-thought, 300 suits a conversation.
    ``utterance_end_ms`` backs it up when noise hides the silence.
    """

    model: str = "nova-3"
    language: str = "en"
    interim_results: bool = True
    endpointing: int = 300
    utterance_end_ms: int = 1000
    vad_events: bool = True
    smart_format: bool = True

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


def _bool(value: bool) -> str:
    return "true" if value else "false"


KEEP_ALIVE = json.dumps({"type": "KeepAlive"})


@attrs.define(eq=False)
class DeepgramSTT:
    """:class:`adapters.providers.interfaces.SpeechToText` backed by Deepgram's live API."""

    settings: DeepgramSettings = attrs.Factory(DeepgramSettings)

    async def run(self, audio: AudioSource, link: ProviderLink) -> None:
        """Stream until ``audio`` ends; survives drops, gives up only on account errors."""

        def session(backlog: AudioBacklog) -> _NovaSession:
            return _NovaSession(self.settings, backlog, link, name="deepgram stt")

        await listen(self.settings.listen_url(), self.settings, audio, link, session)


@attrs.define(eq=False)
class _NovaSession(ListenSession):
    """Nova's messages: results, its voice detector's events, and the pause after words."""

    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        link = self.link
        if kind == "Results":
            await self._results(message)
        elif kind == "SpeechStarted":
            at = self.call_time(message.get("timestamp", 0.0))
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
        else:
            self.ignore(kind)

    async def _results(self, message: dict[str, Any]) -> None:
        is_final = bool(message.get("is_final"))
        if is_final:
            end = float(message.get("start", 0.0)) + float(message.get("duration", 0.0))
            self.backlog.confirm(audio_offset(end))
        alternatives = message.get("channel", {}).get("alternatives") or [{}]
        text = str(alternatives[0].get("transcript", "")).strip()
        speech_final = bool(message.get("speech_final")) and is_final
        # An empty final that ends speech is news too: the sound had no words (a cough),
        # so an agent it interrupted may resume at once.
        if text or speech_final:
            await self.link.emit(Transcript(text, is_final=is_final, speech_final=speech_final))

    async def keep_alive(self, ws: WebSocketConnection) -> None:
        """Without audio or a KeepAlive for 10 s, Nova closes with 1011 NET-0001."""
        await ws.send_message(KEEP_ALIVE)
