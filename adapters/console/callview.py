"""A call log's records as what the inspector draws: one lane at a time.

The log is read once, in order, and each record goes to the lanes it concerns:
the state bands, the caller's words and speech, the agent's sentences, the
marks (clears, barge-ins, hang-up, transfer), and the notes and errors. A lane
keeps only what it needs to place the next record; :func:`call_view` puts the
lanes together with the turns' latencies.
"""

from __future__ import annotations

from typing import Any

from adapters.console.statechart import state_ids
from adapters.media.audio import PHONE_RATE
from engine.latency import barge_in_began, turn_latencies

#: Notes that report something going wrong (the rest are the runner's bookkeeping).
ERROR_NOTES = {"protocol_error", "stt_failed", "vad_failed", "transfer_unavailable"}
ERROR_EVENTS = {"LlmFailed", "TtsFailed", "SttLost"}

Record = dict[str, Any]


def call_view(records: list[tuple[int, Record]]) -> dict[str, Any]:
    """What the inspector draws, from a log's ``(line, record)`` pairs."""
    header = records[0][1]
    body = [r for _, r in records[1:]]
    footer = next((r for r in reversed(body) if r["kind"] == "footer"), None)
    end = max((r.get("t", 0.0) for r in body), default=0.0)
    if footer is not None and isinstance(footer.get("duration"), int | float):
        end = max(end, float(footer["duration"]))

    lanes = _Lanes()
    for line, record in records[1:]:
        lanes.read(line, record)
    bands = lanes.states.bands_until(end)
    return {
        "call": {
            k: header.get(k)
            for k in ("call_id", "caller", "callee", "started_at", "providers", "record_audio")
        },
        "duration": round(end, 6),
        "finished": footer is not None,
        "end_reason": (footer or {}).get("reason"),
        "states": lanes.states.names(bands),
        "bands": bands,
        "caller": lanes.caller.said,
        "speech": lanes.caller.speech_until(end),
        "agent": lanes.agent.sentences_until(end),
        "marks": sorted(lanes.marks.marks, key=lambda m: m["t"]),
        "turns": [lat.as_dict() for lat in turn_latencies(r for _, r in records)],
        "barge_ins": lanes.marks.barge_ins,
        "notes": lanes.notes.notes,
        "errors": lanes.notes.errors,
        "dropped": lanes.notes.dropped,
        "audio": None,
    }


class _Lanes:
    """Every lane, and which of them each record goes to."""

    def __init__(self) -> None:
        self.states = _States()
        self.caller = _Caller()
        self.agent = _Agent()
        self.marks = _Marks()
        self.notes = _Notes()

    def read(self, line: int, r: Record) -> None:
        kind, t = r["kind"], r.get("t", 0.0)
        if kind == "event":
            self.caller.event(r, t)
            self.agent.event(r, t)
            self.notes.event(line, r, t)
        elif kind == "transition":
            self.states.transition(r, t)
        elif kind == "command":
            name = r["command"]
            self.agent.command(name, r, t)
            if name == "ClearAudio":
                self.marks.clear(t, self.caller.interrupted_at(t))
            elif name in ("Hangup", "Transfer"):
                self.marks.ended(name, r, t)
        elif kind == "dropped":
            self.notes.dropped += 1
        elif kind == "note":
            self.notes.note(line, r, t)


class _States:
    """The state bands: which state the call was in, from when to when."""

    def __init__(self) -> None:
        self.known = state_ids()
        self._bands: list[Record] = []
        self._state, self._since = self.known[0], 0.0

    def transition(self, r: Record, t: float) -> None:
        # The state the record says it left, whatever came before: a log cut or edited by
        # hand is drawn as it says.
        self._bands.append({"state": r["from"], "start": self._since, "end": t})
        self._state, self._since = r["to"], t

    def bands_until(self, end: float) -> list[Record]:
        """Every band, the last one running to the end of the call."""
        last = {"state": self._state, "start": self._since, "end": max(end, self._since)}
        return [*self._bands, last]

    def names(self, bands: list[Record]) -> list[str]:
        """The machine's states in their order, then any other state the log names."""
        return self.known + sorted({b["state"] for b in bands} - set(self.known))


class _Caller:
    """The caller's lane: the words and keys heard, and the stretches of speech."""

    def __init__(self) -> None:
        self.said: list[Record] = []
        self._speech: list[Record] = []
        self._talking_since: dict[str, float] = {}  # by source: vad, stt
        self._last_event: Record | None = None
        self._speech_start: float | None = None

    def event(self, r: Record, t: float) -> None:
        self._last_event = r
        name = r["event"]
        if name == "CallerSpeechStarted":
            self._speech_start = r["at"]
            self._talking_since.setdefault(r.get("source", "vad"), r["at"])
        elif name == "CallerSpeechStopped":
            started = self._talking_since.pop(r.get("source", "vad"), None)
            if started is not None:
                self._speech.append({"start": started, "end": r["at"], "source": r.get("source")})
        elif name == "Transcript" and r.get("is_final") and r.get("text", "").strip():
            start = self._speech_start if self._speech_start is not None else t
            start = start if t - start < 15 else t
            self.said.append({"start": start, "t": t, "text": r["text"], "kind": "words"})
        elif name == "DtmfPressed":
            self.said.append({"start": t, "t": t, "text": f"[{r['digit']}]", "kind": "dtmf"})

    def interrupted_at(self, t: float) -> float | None:
        """When the caller began talking over the agent, for a clearAudio at ``t`` that the
        caller caused; None for a clear of any other cause (the rule ``/metrics`` uses too)."""
        return barge_in_began(self._last_event, self._speech_start, t)

    def speech_until(self, end: float) -> list[Record]:
        """Every stretch of speech; one still going runs to the end of the call."""
        still = [
            {"start": started, "end": end, "source": None}
            for started in self._talking_since.values()
        ]
        return [*self._speech, *still]


def _sentence_key(name: Any) -> tuple[int, int] | None:
    """``"2.1"`` (a checkpoint's name: turn 2, sentence 1) as ``(2, 1)``; None for other names."""
    turn, _, seq = str(name).partition(".")
    return (int(turn), int(seq)) if turn.isdigit() and seq.isdigit() else None


class _Agent:
    """The agent's lane: each sentence asked for, when the phone played it, heard or cut.

    Audio is sent ahead of the phone's playout and the server cannot hear the phone,
    so a sentence is laid the way the phone plays it: from when its audio was sent or
    when the audio before it ends, whichever is later; heard when the phone says its
    checkpoint was reached.
    """

    def __init__(self) -> None:
        self._sentences: dict[tuple[int, int], Record] = {}
        self._awaiting_ack: list[Record] = []
        self._playout_end = 0.0

    def command(self, name: str, r: Record, t: float) -> None:
        if name == "Synthesize":
            self._sentences[(r["utterance"], r["seq"])] = {
                "utterance": r["utterance"],
                "seq": r["seq"],
                "text": r["text"],
                "asked": t,
                "start": None,
                "heard": None,
                "cut": None,
                "played_until": None,
            }
        elif name == "PlayAudio":
            self._play(r, t)
        elif name == "Checkpoint":
            key = _sentence_key(r["name"])
            sentence = self._sentences.get(key) if key else None
            if sentence is not None:
                self._awaiting_ack.append(sentence)
        elif name == "ClearAudio":
            self._clear(t)

    def _play(self, r: Record, t: float) -> None:
        begins = max(t, self._playout_end)
        self._playout_end = begins + r["audio"]["bytes"] / PHONE_RATE
        sentence = self._sentences.get((r["utterance"], r["seq"]))
        if sentence is not None:
            if sentence["start"] is None:
                sentence["start"] = begins
            sentence["played_until"] = self._playout_end

    def _clear(self, t: float) -> None:
        for sentence in self._sentences.values():
            if sentence["start"] is None or sentence["heard"] is not None:
                continue
            if sentence["start"] >= t:  # sent, but dropped before a sample played
                sentence["start"] = None
            elif sentence["played_until"] > t:
                sentence["cut"] = t
        self._playout_end = min(self._playout_end, t)
        self._awaiting_ack.clear()

    def event(self, r: Record, t: float) -> None:
        name = r["event"]
        if name == "AudioPlayed":
            key = _sentence_key(r["name"])
            sentence = self._sentences.get(key) if key else None
            if sentence is not None and sentence["heard"] is None:
                sentence["heard"] = t
                if sentence in self._awaiting_ack:
                    self._awaiting_ack.remove(sentence)
        elif name == "TimerFired" and r.get("name") == "playout" and self._awaiting_ack:
            self._awaiting_ack.pop(0)["heard"] = t  # the fallback: taken as heard

    def sentences_until(self, end: float) -> list[Record]:
        """Each sentence as drawn, cut at the end of the call if it was still playing."""
        return [self._drawn(sentence, end) for sentence in self._sentences.values()]

    @staticmethod
    def _drawn(sentence: Record, end: float) -> Record:
        start = sentence["start"]
        stop = sentence["cut"] or sentence["heard"] or sentence["played_until"]
        if start is not None and start >= end and sentence["heard"] is None:
            start = None  # queued for a phone that had hung up
        elif start is not None and stop is not None:
            stop = max(stop, start)
            if stop > end and sentence["heard"] is None:
                stop, sentence["cut"] = end, end  # the call ended mid-sentence
        return {
            "utterance": sentence["utterance"],
            "seq": sentence["seq"],
            "text": sentence["text"],
            "asked": sentence["asked"],
            "start": start,
            "end": stop if start is not None and stop is not None else None,
            "heard": sentence["heard"] is not None,
            "cut": sentence["cut"] is not None and sentence["heard"] is None,
            "played": start is not None,
        }


class _Marks:
    """Moments drawn across the lanes: clears, barge-ins, the hang-up or transfer."""

    def __init__(self) -> None:
        self.marks: list[Record] = []
        self.barge_ins: list[Record] = []

    def clear(self, t: float, began: float | None) -> None:
        """A clearAudio at ``t``; ``began`` is when the caller started talking over the agent,
        when that caused it."""
        self.marks.append({"t": t, "kind": "clear", "label": "clearAudio"})
        if began is not None:
            self.marks.append({"t": began, "kind": "barge_in", "label": "barge-in"})
            self.barge_ins.append(
                {"speech_at": began, "clear_at": t, "latency": round(t - began, 4)}
            )

    def ended(self, name: str, r: Record, t: float) -> None:
        label = f"{name} {r.get('reason') or r.get('to') or ''}".strip()
        self.marks.append({"t": t, "kind": name.lower(), "label": label})


class _Notes:
    """The runner's notes, the failures among them and among the events, and dropped records."""

    def __init__(self) -> None:
        self.notes: list[Record] = []
        self.errors: list[Record] = []
        self.dropped = 0

    def event(self, line: int, r: Record, t: float) -> None:
        name = r["event"]
        if name in ERROR_EVENTS:
            what = name + (f" utterance {r['utterance']}" if "utterance" in r else "")
            self.errors.append({"t": t, "line": line, "what": what, "detail": r.get("reason", "")})

    def note(self, line: int, r: Record, t: float) -> None:
        shown = ((k, v) for k, v in r.items() if k not in ("kind", "t", "what"))
        detail = ", ".join(f"{k}={v}" for k, v in shown if not isinstance(v, dict | list))
        entry = {"t": t, "line": line, "what": r.get("what", "?"), "detail": detail}
        failed = r.get("ok") is False or r.get("what") in ERROR_NOTES
        (self.errors if failed else self.notes).append(entry)
