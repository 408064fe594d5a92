"""Choosing providers: real ones when their keys are set, offline ones otherwise.

Each choice can be forced with ``STT_PROVIDER`` / ``LLM_PROVIDER`` /
``TTS_PROVIDER``; the line :func:`describe` returns is printed at start-up so
nobody wonders which voice is answering. Every provider gets its options here,
from the one settings object: providers read nothing from the environment.
"""

from __future__ import annotations

import functools
from typing import Any

import attrs

from adapters.app.settings import ServerSettings, reveal
from adapters.providers.interfaces import LanguageModel, Providers, TextToSpeech
from engine.config import AgentConfig


def _key(settings: ServerSettings, key: str, choice: str, what: str) -> str:
    """A forced provider without its key fails at start-up, not on every call."""
    value = reveal(getattr(settings, key))
    if value is None:
        raise ValueError(
            f"{what}_PROVIDER={choice!r} needs {key.upper()} (set it in the environment or .env)"
        )
    return value


def build_providers(settings: ServerSettings) -> tuple[Providers, AgentConfig]:
    """The providers for these settings, and the agent config adjusted to them.

    The scripted brain brings its own greeting and goodbye (its script is a
    whole conversation), so with it the agent's greeting comes from the script.
    """
    config = settings.agent_config()
    deepgram = settings.deepgram_api_key is not None
    openai = settings.openai_api_key is not None
    stt = settings.stt_provider
    if stt == "auto":
        stt = "deepgram" if deepgram else "offline"
    llm = settings.llm_provider
    if llm == "auto":
        llm = "openai" if openai else "scripted"
    tts = settings.tts_provider
    if tts == "auto":
        tts = "openai" if openai else ("deepgram" if deepgram else "offline")

    hints = settings.hints
    if llm == "openai":
        from adapters.providers.openai_chat import ChatSettings, OpenAIChat

        brain: LanguageModel = OpenAIChat(
            ChatSettings(
                **settings.openai_chat.model_dump(),
                base_url=settings.openai_base_url,
                api_key=_key(settings, "openai_api_key", llm, "LLM"),
            )
        )
    else:
        from adapters.offline.scripted import ScriptedBrain, load_script

        script = load_script(settings.script)
        brain = ScriptedBrain(script)
        config = attrs.evolve(config, greeting=script.greeting)
        hints = script.hints

    if stt == "deepgram":
        from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT

        listen = DeepgramSettings(
            **settings.deepgram_listen.model_dump(),
            api_key=_key(settings, "deepgram_api_key", stt, "STT"),
            url=settings.deepgram_url,
        )
        stt_factory: Any = functools.partial(DeepgramSTT, listen)
    elif stt == "deepgram-flux":
        from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings

        flux = FluxSettings(
            **settings.deepgram_flux.model_dump(),
            api_key=_key(settings, "deepgram_api_key", stt, "STT"),
            url=settings.deepgram_url,
        )
        stt_factory = functools.partial(DeepgramFlux, flux)
    else:
        from adapters.offline.sphinx import SphinxSTT

        # The offline recognizer is far more accurate when told what to expect.
        stt_factory = functools.partial(SphinxSTT, hints, vad=settings.local_vad)

    if tts == "openai":
        from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings

        voice: TextToSpeech = OpenAISpeech(
            SpeechSettings(
                **settings.openai_speech.model_dump(),
                base_url=settings.openai_base_url,
                api_key=_key(settings, "openai_api_key", tts, "TTS"),
            )
        )
    elif tts == "deepgram":
        from adapters.providers.deepgram_tts import AuraSettings, DeepgramSpeech

        voice = DeepgramSpeech(
            AuraSettings(
                **settings.deepgram_speech.model_dump(),
                api_key=_key(settings, "deepgram_api_key", tts, "TTS"),
                url=settings.deepgram_url,
            )
        )
    else:
        from adapters.offline.espeak import Espeak, EspeakTTS

        voice = EspeakTTS(Espeak(**settings.espeak.model_dump()))

    barge_in = settings.barge_in_source
    # The offline recognizer already runs the local VAD; a cloud one gets it beside it.
    # With Flux, the recognizer's barge-in ("stt") is its StartOfTurn.
    cloud = stt in ("deepgram", "deepgram-flux")
    vad = None
    if cloud and barge_in in ("vad", "both"):
        from adapters.media.vad import LocalVad

        vad = LocalVad(kind=settings.local_vad)
    names: dict[str, str] = {
        "stt": stt,
        "llm": llm,
        "tts": tts,
        "vad": settings.local_vad,
        "barge_in": barge_in,
    }
    providers = Providers(
        stt=stt_factory,
        llm=brain,
        tts=voice,
        names=names,
        vad=vad,
        stt_speech_events=not (cloud and barge_in == "vad"),
    )
    return providers, config


def describe(providers: Providers) -> str:
    n = providers.names
    return f"providers: speech-to-text={n['stt']}, brain={n['llm']}, text-to-speech={n['tts']}"
