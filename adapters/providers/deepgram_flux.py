"""Deepgram Flux (``/v2/listen``): a recognizer that says when the caller's turn ends.

Nova reports words and leaves the turn to endpointing; Flux reports the turn
itself, one ``TurnInfo`` message at a time, and can say early that the turn is
*probably* over (``EagerEndOfTurn``) so the agent may prepare its reply while
the caller might still go on. Each event maps onto one engine event:

==================  =====================================================
Flux ``event``      engine event
==================  =====================================================
``StartOfTurn``     ``CallerSpeechStarted(at, source="stt")`` (then the words so far)
``Update``          ``Transcript(text, is_final=False)``
``EagerEndOfTurn``  ``CallerTurnLikelyOver(text)``: the engine prepares a reply
``TurnResumed``     ``CallerTurnResumed()``: that reply is void
``EndOfTurn``       ``Transcript(text, is_final=True, speech_final=True)``
==================  =====================================================

Flux takes 8 kHz mu-law as it is, so the phone's audio goes out untouched. The
connection's survival (backlog, reconnects, refusals) is Nova's, shared in
``adapters/providers/deepgram_listen.py``. Wire facts and sources:
``docs/deepgram.md`` (Flux).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import attrs
from trio_websocket import WebSocketConnection

from adapters.media.audio import PHONE_RATE
from adapters.providers.deepgram_backlog import AudioBacklog
from adapters.providers.deepgram_listen import (
    ListenSession,
    StreamSettings,
    audio_offset,
    listen,
)
from adapters.providers.interfaces import AudioSource, ProviderLink
from engine.events import (
    CallerSpeechStarted,
    CallerTurnLikelyOver,
    CallerTurnResumed,
    Transcript,
)


@attrs.frozen
class FluxSettings(StreamSettings):
    """How eager Flux's turn detection should be (the stream's own knobs: :class:`StreamSettings`).

    ``eager_eot_threshold`` is what turns speculative replies on: without it
    Flux never sends ``EagerEndOfTurn``. ``None`` leaves a threshold to the
    service's default (``eot_threshold`` 0.7, ``eot_timeout_ms`` 5000).
    """

    model: str = "flux-general-en"
    eot_threshold: float | None = None
    eager_eot_threshold: float | None = 0.5
    eot_timeout_ms: int | None = None
    #: Audio per message: Deepgram recommends 80 ms; every ms above the phone's 20 ms
    #: frame is waited for, so 20 trades the recommendation for a turn end up to 60 ms sooner.
    chunk_ms: int = 80
    #: A WebSocket ping after this long without audio (Flux has no KeepAlive message).
    keepalive_after: float = 5.0
    #: Audio this much older than a wordless ``Update`` outside a turn counts as heard.
    replay_margin: float = 1.0

    def listen_url(self) -> str:
        """The ``/v2/listen`` URL; thresholds left unset are not sent, keyterms repeat."""
        params: list[tuple[str, str]] = [
            ("model", self.model),
            ("encoding", "mulaw"),
            ("sample_rate", str(PHONE_RATE)),
        ]
        for name in ("eot_threshold", "eager_eot_threshold", "eot_timeout_ms"):
            value = getattr(self, name)
            if value is not None:
                params.append((name, str(value)))
        params += [("keyterm", term) for term in self.keyterms]
        return f"{self.url.rstrip('/')}/v2/listen?{urlencode(params)}"


@attrs.define(eq=False)
class DeepgramFlux:
    """:class:`adapters.providers.interfaces.SpeechToText` backed by Deepgram Flux."""

    settings: FluxSettings = attrs.Factory(FluxSettings)

    async def run(self, audio: AudioSource, link: ProviderLink) -> None:
        """Stream until ``audio`` ends; survives drops, gives up only on account errors."""
        chunk = self.settings.chunk_ms * PHONE_RATE // 1000

        def session(backlog: AudioBacklog) -> _FluxSession:
            return _FluxSession(
                self.settings,
                backlog,
                link,
                name="deepgram flux",
                provider="deepgram-flux",
                max_send=max(chunk, PHONE_RATE // 10),
                min_send=chunk,
                replay_margin=self.settings.replay_margin,
            )

        await listen(self.settings.listen_url(), self.settings, audio, link, session)


@attrs.define(eq=False)
class _FluxSession(ListenSession):
    """One Flux connection: its turn state, as far as the engine must know it."""

    replay_margin: float = 1.0
    in_turn: bool = False  # a StartOfTurn not yet closed by an EndOfTurn
    eager: bool = False  # an EagerEndOfTurn not yet answered by TurnResumed or EndOfTurn

    async def dispatch(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        log = self.link.log
        if kind == "TurnInfo":
            await self._turn_info(message)
        elif kind == "Connected":
            log.info("deepgram flux: connected, request_id=%s", message.get("request_id"))
        elif kind == "Error":  # the close that follows says whether to reconnect
            log.warning(
                "deepgram flux: error %s: %s", message.get("code"), message.get("description")
            )
        elif kind in ("Warning", "ConfigureFailure"):
            log.warning("deepgram flux: %s", message)
        elif kind == "ConfigureSuccess":
            log.info("deepgram flux: %s", message)
        else:
            self.ignore(kind)

    async def _turn_info(self, message: dict[str, Any]) -> None:
        event = message.get("event")
        text = str(message.get("transcript", "")).strip()
        emit = self.link.emit
        if event == "Update":
            if not self.in_turn and not text:
                self._confirm(float(message.get("audio_window_end", 0.0)) - self.replay_margin)
            elif text:
                await emit(Transcript(text, is_final=False))
        elif event == "StartOfTurn":
            self.in_turn = True
            await emit(CallerSpeechStarted(at=self.call_time(_turn_start(message)), source="stt"))
            if text:  # Flux promises words with every StartOfTurn: the engine may use them now
                await emit(Transcript(text, is_final=False))
        elif event == "EagerEndOfTurn":
            self.eager = True
            await emit(CallerTurnLikelyOver(text))
        elif event == "TurnResumed":
            if self.eager:
                self.eager = False
                await emit(CallerTurnResumed())
            else:
                self.link.log.warning("deepgram flux: TurnResumed without an EagerEndOfTurn")
        elif event == "EndOfTurn":
            self.in_turn = self.eager = False
            self._confirm(float(message.get("audio_window_end", 0.0)))
            await emit(Transcript(text, is_final=True, speech_final=True))
        else:
            self.ignore(f"TurnInfo/{event}")

    def _confirm(self, seconds: float) -> None:
        if seconds > 0:
            self.backlog.confirm(audio_offset(seconds))

    async def keep_alive(self, ws: WebSocketConnection) -> None:
        """Flux documents no KeepAlive message; a quiet connection is kept open by pings."""
        await ws.ping()

    async def abandon(self) -> None:
        """The connection that made a prediction is gone, and with it the turn it was about.

        Its eager end of turn can no longer be confirmed by the same recognizer, so
        the reply prepared for it is voided here, as Flux itself would with
        ``TurnResumed``; the replayed audio starts the turn afresh.
        """
        if self.eager:
            self.eager = False
            await self.link.emit(CallerTurnResumed())


def _turn_start(message: dict[str, Any]) -> float:
    """Where the turn's speech began: its first word, else the turn's audio window."""
    words = message.get("words") or []
    if words and isinstance(words[0], dict) and words[0].get("start") is not None:
        return float(words[0]["start"])
    return float(message.get("audio_window_start", 0.0))
