"""Choosing providers: real ones when their keys are set, offline ones otherwise.

Each choice can be forced with ``STT_PROVIDER`` / ``LLM_PROVIDER`` /
``TTS_PROVIDER``; the line :func:`describe` returns is printed at start-up so
nobody wonders which voice is answering. Every provider gets its options here,
from the one settings object: providers read nothing from the environment.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import attrs

from adapters.app.settings import ServerSettings, reveal
from adapters.providers.interfaces import (
    LanguageModel,
    Providers,
    SpeechToText,
    TextToSpeech,
    VoiceActivity,
)
from engine.config import AgentConfig

#: Recognizers in the cloud: the local VAD may run beside them to notice barge-ins.
CLOUD_RECOGNIZERS = ("deepgram", "deepgram-flux")


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
    stt, llm, tts = _choices(settings)
    config = settings.agent_config()
    hints = settings.hints
    if llm == "openai":
        brain = _chat_model(settings, llm)
    else:
        from adapters.offline.scripted import ScriptedBrain, load_script

        script = load_script(settings.script)
        brain = ScriptedBrain(script)
        config = attrs.evolve(config, greeting=script.greeting)
        hints = script.hints
    barge_in = settings.barge_in_source
    names: dict[str, str] = {
        "stt": stt,
        "llm": llm,
        "tts": tts,
        "vad": settings.local_vad,
        "barge_in": barge_in,
    }
    providers = Providers(
        stt=_recognizer(settings, stt, hints),
        llm=brain,
        tts=_voice(settings, tts),
        names=names,
        vad=_local_vad(settings, stt),
        # With a cloud recognizer and BARGE_IN_SOURCE=vad, only the local VAD says "barge-in"
        # (Flux's is its StartOfTurn).
        stt_speech_events=not (stt in CLOUD_RECOGNIZERS and barge_in == "vad"),
    )
    return providers, config


def _choices(settings: ServerSettings) -> tuple[str, str, str]:
    """The recognizer, brain and voice chosen: ``auto`` takes the real one whose key is set."""
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
    return stt, llm, tts


def _chat_model(settings: ServerSettings, llm: str) -> LanguageModel:
    from adapters.providers.openai_chat import ChatSettings, OpenAIChat

    return OpenAIChat(
        ChatSettings(
            **settings.openai_chat.model_dump(),
            base_url=settings.openai_base_url,
            api_key=_key(settings, "openai_api_key", llm, "LLM"),
        )
    )


def _recognizer(
    settings: ServerSettings, stt: str, hints: tuple[str, ...]
) -> Callable[[], SpeechToText]:
    """What makes each call's recognizer."""
    if stt == "deepgram":
        from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT

        listen = DeepgramSettings(
            **settings.deepgram_listen.model_dump(),  # type: ignore[attr-defined]
            api_key=_key(settings, "deepgram_api_key", stt, "STT"),
            url=settings.deepgram_url,
        )
        return functools.partial(DeepgramSTT, listen)
    if stt == "deepgram-flux":
        from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings

        flux = FluxSettings(
            **settings.deepgram_flux.model_dump(),  # type: ignore[attr-defined]
            api_key=_key(settings, "deepgram_api_key", stt, "STT"),
            url=settings.deepgram_url,
        )
        return functools.partial(DeepgramFlux, flux)
    from adapters.offline.sphinx import SphinxSTT

    # The offline recognizer is far more accurate when told what to expect.
    return functools.partial(SphinxSTT, hints, vad=settings.local_vad)


def _voice(settings: ServerSettings, tts: str) -> TextToSpeech:
    if tts == "openai":
        from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings

        return OpenAISpeech(
            SpeechSettings(
                **settings.openai_speech.model_dump(),
                base_url=settings.openai_base_url,
                api_key=_key(settings, "openai_api_key", tts, "TTS"),
            )
        )
    if tts == "deepgram":
        from adapters.providers.deepgram_tts import AuraSettings, DeepgramSpeech

        return DeepgramSpeech(
            AuraSettings(
                **settings.deepgram_speech.model_dump(),
                api_key=_key(settings, "deepgram_api_key", tts, "TTS"),
                url=settings.deepgram_url,
            )
        )
    from adapters.offline.espeak import Espeak, EspeakTTS

    return EspeakTTS(Espeak(**settings.espeak.model_dump()))


def _local_vad(settings: ServerSettings, stt: str) -> VoiceActivity | None:
    """The local VAD beside a cloud recognizer, when it is to notice barge-ins; else None.

    The offline recognizer already runs the local VAD itself.
    """
    if stt in CLOUD_RECOGNIZERS and settings.barge_in_source in ("vad", "both"):
        from adapters.media.vad import LocalVad

        return LocalVad(kind=settings.local_vad)
    return None


def describe(providers: Providers) -> str:
    n = providers.names
    return f"providers: speech-to-text={n['stt']}, brain={n['llm']}, text-to-speech={n['tts']}"
