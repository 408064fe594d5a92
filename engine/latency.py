"""Per-turn latency figures, computed from a call's log records.

Voice-to-voice is what the caller feels: from the moment they stopped
speaking to the first audio of the reply leaving for their phone. The other
figures show where that time went. A barge-in's reaction is the other half of
a conversation's feel: from the caller starting to talk over the agent to the
phone being told to drop what it was playing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs


@attrs.frozen
class TurnLatency:
    utterance: int  # the reply's id
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
            "utterance": self.utterance,
            "caller_stopped": r(self.caller_stopped),
            "voice_to_voice": r(self.voice_to_voice),
            "llm_first_text": r(
                None if self.llm_first_text is None else self.llm_first_text - self.asked
            ),
            "tts_first_audio": r(
                None if self.tts_first_audio is None else self.tts_first_audio - self.asked
            ),
        }


#: A speech onset older than this at a caller-caused clear is not the one that interrupted.
INTERRUPTING_SPEECH_WITHIN = 10.0
#: The events with which a caller interrupts the agent.
_INTERRUPTIONS = frozenset({"CallerSpeechStarted", "Transcript", "DtmfPressed"})


@attrs.frozen
class BargeInLatency:
    began: float  # call time the caller started talking over the agent
    cleared: float  # ClearAudio sent

    @property
    def reaction(self) -> float:
        return self.cleared - self.began


def barge_in_began(
    trigger: dict[str, Any] | None, speech_began: float | None, cleared: float
) -> float | None:
    """When the caller began talking over the agent, for a ClearAudio at ``cleared`` that
    the event record ``trigger`` caused; None when something else caused it (the call's
    time running out).

    ``speech_began`` is the latest ``CallerSpeechStarted.at``: the onset of the words
    or of the speech that a ``barge_in`` timer found long enough.
    """
    name = trigger.get("event", "") if trigger is not None else ""
    if trigger is None or not (
        name in _INTERRUPTIONS or (name == "TimerFired" and trigger.get("name") == "barge_in")
    ):
        return None
    if name == "CallerSpeechStarted":
        return float(trigger["at"])
    if speech_began is not None and cleared - speech_began < INTERRUPTING_SPEECH_WITHIN:
        return speech_began
    return cleared


#: What a record can complete: a turn (at its first audio) or a barge-in (at its clear).
Figure = TurnLatency | BargeInLatency


_CANCELS = ("CancelCompletion", "CancelSynthesis")


class LatencyTracker:
    """Follows log records as they are written; keeps only what the figures need."""

    def __init__(self) -> None:
        self._last_stop: float | None = None
        self._speech_began: float | None = None
        self._last_event: dict[str, Any] | None = None
        self._turns: dict[int, dict[str, Any]] = {}
        self._speculative: set[int] = set()
        self._wasted: set[int] = set()
        self._held: int | None = None  # a speculative reply waiting for the turn's end

    def add(self, r: dict[str, Any]) -> Figure | None:
        """Take the next record; return the figure it completed, if any, so a live view
        (``/metrics``) gets each turn's and each barge-in's as it happens."""
        kind, t = r.get("kind"), r.get("t", 0.0)
        if kind == "transition" and r["from"] == "listening" and self._held is not None:
            self._confirmed(self._held, t)
        if kind == "event":
            name = r["event"]
            self._last_event = r
            if name == "CallerSpeechStopped":
                self._last_stop = r["at"]
            elif name == "CallerSpeechStarted":
                self._speech_began = r["at"]
            elif name in ("LlmText", "TtsAudio") and r["utterance"] in self._turns:
                key = "llm_first_text" if name == "LlmText" else "tts_first_audio"
                self._turns[r["utterance"]].setdefault(key, t)
        elif kind == "command":
            name = r["command"]
            if name == "StartCompletion":
                stop = self._last_stop
                stopped = stop if stop is not None and stop <= t else t
                self._turns[r["utterance"]] = {"caller_stopped": stopped, "asked": t}
                if r.get("speculative"):
                    self._speculative.add(r["utterance"])
                    self._held = r["utterance"]
            elif name in _CANCELS and r["utterance"] in self._speculative:
                utterance = r["utterance"]
                # A held reply is voided whole (its completion may have finished already:
                # then only its synthesis is cancelled); a confirmed one was a real turn.
                voided = name == "CancelCompletion" or self._held == utterance
                if voided and "first_audio" not in self._turns.get(utterance, {}):
                    self._wasted.add(utterance)
                if self._held == utterance:
                    self._held = None
            elif name == "PlayAudio" and r["utterance"] in self._turns:
                turn = self._turns[r["utterance"]]
                if "first_audio" not in turn:
                    turn["first_audio"] = t
                    return self._turn(r["utterance"], turn)
            elif name == "ClearAudio":
                began = barge_in_began(self._last_event, self._speech_began, t)
                if began is not None:
                    return BargeInLatency(began, t)
        return None

    def _confirmed(self, utterance: int, t: float) -> None:
        """A speculative reply was confirmed at ``t``: the caller's turn ended then (or at the
        VAD's last silence since the reply was asked for, when the VAD heard one)."""
        self._held = None
        turn = self._turns.get(utterance)
        if turn is None:
            return
        stop = self._last_stop
        turn["caller_stopped"] = stop if stop is not None and turn["asked"] <= stop <= t else t

    def turns(self) -> list[TurnLatency]:
        return [
            self._turn(utterance, d)
            for utterance, d in sorted(self._turns.items())
            if utterance not in self._wasted
        ]

    @staticmethod
    def _turn(utterance: int, d: dict[str, Any]) -> TurnLatency:
        return TurnLatency(
            utterance=utterance,
            caller_stopped=d["caller_stopped"],
            asked=d["asked"],
            llm_first_text=d.get("llm_first_text"),
            tts_first_audio=d.get("tts_first_audio"),
            first_audio=d.get("first_audio"),
        )

    def speculation(self) -> dict[str, int]:
        """Speculative replies asked for, and those the caller's turn made a waste."""
        return {"started": len(self._speculative), "wasted": len(self._wasted)}


def turn_latencies(records: Iterable[dict[str, Any]]) -> list[TurnLatency]:
    """Latency of every turn the model was asked to answer."""
    tracker = LatencyTracker()
    for r in records:
        tracker.add(r)
    return tracker.turns()
