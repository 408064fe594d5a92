"""Per-turn latency figures, computed from a call's log records.

Voice-to-voice is what the caller feels: from the moment they stopped
speaking to the first audio of the reply leaving for their phone. The other
figures show where that time went.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs


@attrs.frozen
class TurnLatency:
    turn: int
    caller_stopped: float  # call time the caller's speech ended (or the turn was asked)
    asked: float  # StartCompletion sent
    llm_first_text: float | None  # first LlmText of the turn
    tts_first_audio: float | None  # first TtsAudio of the turn
    first_audio: float | None  # first PlayAudio of the turn

    @property
    def voice_to_voice(self) -> float | None:
        return None if self.first_audio is None else self.first_audio - self.caller_stopped

    def as_dict(self) -> dict[str, Any]:
        def r(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "turn": self.turn,
            "caller_stopped": r(self.caller_stopped),
            "voice_to_voice": r(self.voice_to_voice),
            "llm_first_text": r(
                None if self.llm_first_text is None else self.llm_first_text - self.asked
            ),
            "tts_first_audio": r(
                None if self.tts_first_audio is None else self.tts_first_audio - self.asked
            ),
        }


def turn_latencies(records: Iterable[dict[str, Any]]) -> list[TurnLatency]:
    """Latency of every turn the model was asked to answer."""
    last_stop: float | None = None
    turns: dict[int, dict[str, Any]] = {}
    for r in records:
        kind, t = r.get("kind"), r.get("t", 0.0)
        if kind == "event" and r["event"] == "SpeechStopped":
            last_stop = r["at"]
        elif kind == "command" and r["command"] == "StartCompletion":
            stopped = last_stop if last_stop is not None and last_stop <= t else t
            turns[r["turn"]] = {"caller_stopped": stopped, "asked": t}
        elif kind == "event" and r["event"] in ("LlmText", "TtsAudio"):
            key = "llm_first_text" if r["event"] == "LlmText" else "tts_first_audio"
            if r["turn"] in turns:
                turns[r["turn"]].setdefault(key, t)
        elif kind == "command" and r["command"] == "PlayAudio" and r["turn"] in turns:
            turns[r["turn"]].setdefault("first_audio", t)
    return [
        TurnLatency(
            turn=turn,
            caller_stopped=d["caller_stopped"],
            asked=d["asked"],
            llm_first_text=d.get("llm_first_text"),
            tts_first_audio=d.get("tts_first_audio"),
            first_audio=d.get("first_audio"),
        )
        for turn, d in sorted(turns.items())
    ]
