"""Readable views of a call log: a timeline, and a per-turn latency table."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.latency import LatencyTracker


def timeline(records: Iterable[dict[str, Any]]) -> list[str]:
    """Who said what when, and each change of state."""
    lines = []
    for r in records:
        t = r.get("t", 0.0)
        kind = r["kind"]
        if kind == "header":
            who = f"from {r.get('caller') or '?'} to {r.get('callee') or '?'}"
            lines.append(f"call {r.get('call_id', '?')} {who}")
        elif kind == "transition":
            lines.append(f"{t:8.3f}  [{r['from']} -> {r['to']}] on {r['trigger']}")
        elif kind == "event" and r["event"] == "Transcript" and r["is_final"] and r["text"]:
            lines.append(f"{t:8.3f}  caller: {r['text']}")
        elif kind == "event" and r["event"] == "DtmfPressed":
            lines.append(f"{t:8.3f}  caller pressed {r['digit']}")
        elif kind == "command" and r["command"] == "Synthesize":
            lines.append(f"{t:8.3f}  agent:  {r['text']}")
        elif kind == "command" and r["command"] in ("ClearAudio", "Hangup", "Transfer"):
            detail = r.get("reason", "") or r.get("to", "")
            lines.append(f"{t:8.3f}  >> {r['command']} {detail}".rstrip())
        elif kind == "footer":
            lines.append(f"{t:8.3f}  call ended: {r.get('reason', '?')}")
    return lines


def latency_table(records: Iterable[dict[str, Any]]) -> list[str]:
    """Per turn: caller stopped → first audio sent, and where the time went."""

    def ms(x: float | None) -> str:
        return "-" if x is None else f"{x * 1000:.0f} ms"

    tracker = LatencyTracker()
    for record in records:
        tracker.add(record)
    rows = ["reply  caller stopped  voice-to-voice  llm first text  tts first audio"]
    for lat in tracker.turns():
        d = lat.as_dict()
        rows.append(
            f"{d['utterance']:>5}  {d['caller_stopped']:>14.3f}  {ms(d['voice_to_voice']):>14}"
            f"  {ms(d['llm_first_text']):>14}  {ms(d['tts_first_audio']):>15}"
        )
    speculation = tracker.speculation()
    if speculation["started"]:
        rows.append(
            f"speculative replies: {speculation['started']} asked, "
            f"{speculation['wasted']} wasted (the caller went on)"
        )
    return rows
