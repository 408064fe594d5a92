"""Offline speech synthesis: espeak-ng from the ``espeakng-loader`` wheel, through ctypes.

The wheel ships ``libespeak-ng.so`` and its ``espeak-ng-data`` folder, so a
new user hears the agent with no account, no network and no system package.
Its voice is robotic but clear, which is all a demo and a simulated caller
need.

Its output is not byte-identical from call to call: the synthesizer carries
a little state (a few samples of timing) from one sentence to the next,
and neither a seed nor ``espeak_Cancel`` resets it. The sequence is
reproducible within a fresh process.

espeak-ng keeps one process-wide synthesizer (voice, rate, output hook), and
is not thread-safe. So the library is initialised once, every synthesis holds
:data:`_LOCK`, and each call sets its own voice, rate and pitch: two
:class:`Espeak` objects with different voices (the agent and a simulated
caller) can share a process and its worker threads.
"""

from __future__ import annotations

import ctypes
import threading

import espeakng_loader
import numpy as np
import trio

from adapters.media.audio import PHONE_RATE, resample, ulaw_encode
from adapters.providers.interfaces import ProviderLink
from engine.events import TtsAudio, TtsDone, TtsFailed

# From speak_lib.h.
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_PARAM_RATE = 1
_PARAM_PITCH = 3
_EE_OK = 0

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)

#: Held for every use of the library, which has one global state.
_LOCK = threading.Lock()


class _Library:
    """The loaded, initialised library plus the buffer its callback fills.

    The callback cannot carry a Python object through C cleanly, so it
    appends to ``self.chunks``; that is safe because only the holder of
    :data:`_LOCK` synthesizes.
    """

    def __init__(self) -> None:
        lib = ctypes.CDLL(espeakng_loader.get_library_path())
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.c_void_p,
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        data_path = espeakng_loader.get_data_path().encode()
        rate = lib.espeak_Initialize(_AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, 0)
        if rate <= 0:
            raise RuntimeError(f"espeak-ng failed to initialise (data at {data_path!r})")
        self.lib = lib
        self.sample_rate = rate
        self.chunks: list[np.ndarray] = []
        # Kept on self: if the ctypes thunk were collected, C would call freed memory.
        self._callback = _SynthCallback(self._collect)
        lib.espeak_SetSynthCallback(self._callback)

    def _collect(self, wav, count: int, _events) -> int:
        if wav and count > 0:
            self.chunks.append(np.ctypeslib.as_array(wav, shape=(count,)).copy())
        return 0  # 0 = go on

    def set_voice(self, voice: str, rate_wpm: int, pitch: int) -> None:
        if self.lib.espeak_SetVoiceByName(voice.encode()) != _EE_OK:
            raise ValueError(f"espeak-ng has no voice {voice!r}")
        self.lib.espeak_SetParameter(_PARAM_RATE, rate_wpm, 0)
        self.lib.espeak_SetParameter(_PARAM_PITCH, pitch, 0)

    def synth(self, text: str) -> np.ndarray:
        data = text.replace("\0", " ").encode() + b"\0"
        self.chunks = []
        status = self.lib.espeak_Synth(
            data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
        )
        chunks, self.chunks = self.chunks, []
        if status != _EE_OK:
            raise RuntimeError(f"espeak-ng synthesis failed with status {status}")
        if not chunks:
            return np.zeros(0, dtype=np.int16)
        return np.concatenate(chunks).astype(np.int16, copy=False)


_library: _Library | None = None


def _get_library() -> _Library:
    """Load on first use (call only while holding :data:`_LOCK`)."""
    global _library
    if _library is None:
        _library = _Library()
    return _library


class Espeak:
    """One voice of the shared synthesizer. Safe to call from several threads."""

    def __init__(self, voice: str = "en-us", rate_wpm: int = 165, pitch: int = 50) -> None:
        self.voice = voice
        self.rate_wpm = rate_wpm
        self.pitch = pitch
        with _LOCK:  # fail at construction, not mid-call, on a voice name typo
            _get_library().set_voice(voice, rate_wpm, pitch)

    def synthesize(self, text: str) -> tuple[np.ndarray, int]:
        """Int16 samples at espeak's own rate (22 050 Hz), and that rate."""
        with _LOCK:
            library = _get_library()
            library.set_voice(self.voice, self.rate_wpm, self.pitch)
            return library.synth(text), library.sample_rate

    def synthesize_ulaw8k(self, text: str) -> bytes:
        """Phone-ready audio: 8 kHz G.711 mu-law."""
        pcm, rate = self.synthesize(text)
        return ulaw_encode(resample(pcm, rate, PHONE_RATE))


class EspeakTTS:
    """The offline :class:`~adapters.providers.interfaces.TextToSpeech`.

    espeak renders a sentence in a few milliseconds, so there is nothing to
    stream from it; the audio is still cut into ``chunk_ms`` pieces so the
    engine can start playback and a barge-in can drop the rest.
    """

    def __init__(self, espeak: Espeak | None = None, chunk_ms: int = 200) -> None:
        self.espeak = espeak if espeak is not None else Espeak()
        self.chunk_bytes = max(1, PHONE_RATE * chunk_ms // 1000)

    async def synthesize(self, utterance: int, seq: int, text: str, link: ProviderLink) -> None:
        """Emit TtsAudio chunks of sentence ``seq``, then TtsDone (or TtsFailed)."""
        if not text.strip():
            await link.emit(TtsDone(utterance, seq))
            return
        try:
            audio = await trio.to_thread.run_sync(
                self.espeak.synthesize_ulaw8k, text, abandon_on_cancel=True
            )
        except Exception as exc:
            reason = f"espeak: {exc}"
            link.log.warning("tts utterance %d seq %d failed: %s", utterance, seq, reason)
            await link.emit(TtsFailed(utterance, seq, reason))
            return
        for start in range(0, len(audio), self.chunk_bytes):
            await link.emit(TtsAudio(utterance, seq, audio[start : start + self.chunk_bytes]))
        await link.emit(TtsDone(utterance, seq))
