"""Choosing providers: real ones when their keys are set, offline ones otherwise.

Each choice can be forced with ``STT_PROVIDER`` / ``LLM_PROVIDER`` /
``TTS_PROVIDER``; the line :func:`describe` returns is printed at start-up so
nobody wonders which voice is answering.
"""

from __future__ import annotations

import functools
import os
from typing import Any

import attrs

from adapters.app.settings import ServerSettings
from adapters.providers.interfaces import Providers
from engine.config import AgentConfig


def _pick(choice: str, auto: str, allowed: tuple[str, ...], what: str) -> str:
    name = auto if choice == "auto" else choice
    if name not in allowed:
        raise ValueError(f"{what} provider {choice!r}: choose one of auto, {', '.join(allowed)}")
    return name


def build_providers(
    settings: ServerSettings, config: AgentConfig, extra: dict[str, Any] | None = None
) -> tuple[Providers, AgentConfig]:
    """The providers for these settings, and the agent config adjusted to them.

    The scripted brain brings its own greeting and goodbye (its script is a
    whole conversation), so with it the agent's greeting comes from the script.
    """
    extra = extra or {}
    env = os.environ
    stt = _pick(
        settings.stt,
        "deepgram" if env.get("DEEPGRAM_API_KEY") else "offline",
        ("offline", "deepgram"),
        "STT",
    )
    llm = _pick(
        settings.llm,
        "openai" if env.get("OPENAI_API_KEY") else "scripted",
        ("scripted", "openai"),
        "LLM",
    )
    tts_auto = (
        "openai"
        if env.get("OPENAI_API_KEY")
        else ("deepgram" if env.get("DEEPGRAM_API_KEY") else "offline")
    )
    tts = _pick(settings.tts, tts_auto, ("offline", "openai", "deepgram"), "TTS")

    hints: tuple[str, ...] = tuple(extra.get("hints", ()))
    if llm == "openai":
        from adapters.providers.openai_chat import ChatSettings, OpenAIChat

        chat = extra.get("openai_chat", {})
        brain = OpenAIChat(ChatSettings(**chat))
    else:
        from adapters.offline.scripted import ScriptedBrain, load_script

        script = load_script(extra.get("script"))
        brain = ScriptedBrain(script)
        config = attrs.evolve(config, greeting=script.greeting)
        hints = script.hints

    if stt == "deepgram":
        from adapters.providers.deepgram_stt import DeepgramSTT

        stt_factory: Any = DeepgramSTT
    else:
        from adapters.offline.sphinx import SphinxSTT

        # The offline recognizer is far more accurate when told what to expect.
        stt_factory = functools.partial(SphinxSTT, hints, vad=settings.vad)

    if tts == "openai":
        from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings

        voice = OpenAISpeech(SpeechSettings(**extra.get("openai_speech", {})))
    elif tts == "deepgram":
        from adapters.providers.deepgram_tts import AuraSettings, DeepgramSpeech

        voice = DeepgramSpeech(AuraSettings(**extra.get("deepgram_speech", {})))
    else:
        from adapters.offline.espeak import Espeak, EspeakTTS

        voice = EspeakTTS(Espeak(**extra.get("espeak", {})))

    if settings.barge_in not in ("vad", "stt", "both"):
        raise ValueError(f"BARGE_IN_SOURCE {settings.barge_in!r}: choose vad, stt or both")
    # The offline recognizer already runs the local VAD; a cloud one gets it beside it.
    vad = None
    if stt == "deepgram" and settings.barge_in in ("vad", "both"):
        from adapters.media.vad import LocalVad

        vad = LocalVad(kind=settings.vad)
    names = {"stt": stt, "llm": llm, "tts": tts, "vad": settings.vad, "barge_in": settings.barge_in}
    providers = Providers(
        stt=stt_factory,
        llm=brain,
        tts=voice,
        names=names,
        vad=vad,
        stt_speech_events=not (stt == "deepgram" and settings.barge_in == "vad"),
    )
    return providers, config


def describe(providers: Providers) -> str:
    n = providers.names
    return f"providers: speech-to-text={n['stt']}, brain={n['llm']}, text-to-speech={n['tts']}"
