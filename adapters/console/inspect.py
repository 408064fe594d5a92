"""The call inspector: one call log drawn as a timeline, in a page that needs no server.

:func:`call_view` reads the log's records into what the page draws (state
bands, the caller's and the agent's lanes, barge-ins and clears, latency per
turn, notes and provider errors); ``static/inspector.js`` draws it. The
console serves the same view for its call list, and ``voice-agent inspect
LOG`` writes it into one self-contained HTML file, so a log mailed by a
colleague opens in any browser, offline.

A call recorded with audio has a stereo WAV beside its log (caller left,
agent right: ``RECORD_AUDIO=true`` on the server, and the demo's WAV): the
view then carries a waveform of each side, and the page plays from the
moment clicked.
"""

from __future__ import annotations

import argparse
import base64
import json
import sys
import wave
import webbrowser
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from adapters.console.statechart import state_ids
from adapters.media.audio import PHONE_RATE
from engine.calllog import LogError, read_log, split_log
from engine.latency import turn_latencies

STATIC = Path(__file__).parent / "static"
#: Waveform columns per second of audio.
PEAKS_PER_SECOND = 50
#: The largest recording put into a page (a stereo 8 kHz WAV: about 16 minutes).
MAX_EMBEDDED_AUDIO = 64 * 1024 * 1024
#: Notes that report something going wrong (the rest are the runner's bookkeeping).
ERROR_NOTES = {"protocol_error", "stt_failed", "vad_failed", "transfer_unavailable"}
ERROR_EVENTS = {"LlmFailed", "TtsFailed", "SttLost"}


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The log's records with their line numbers; :class:`LogError` names a bad line."""
    lines, _cut = split_log(path.read_text(encoding="utf-8"))
    records = list(read_log(lines))
    if not records:
        raise LogError(1, "empty log")
    return records


def _detail(record: dict[str, Any], skip: tuple[str, ...]) -> str:
    return ", ".join(
        f"{k}={v}" for k, v in record.items() if k not in skip and not isinstance(v, dict | list)
    )


def call_view(records: list[tuple[int, dict[str, Any]]]) -> dict[str, Any]:
    """What the inspector draws, from a log's ``(line, record)`` pairs."""
    header = records[0][1]
    body = [r for _, r in records[1:]]
    footer = next((r for r in reversed(body) if r["kind"] == "footer"), None)
    end = max((r.get("t", 0.0) for r in body), default=0.0)
    if footer is not None and isinstance(footer.get("duration"), int | float):
        end = max(end, float(footer["duration"]))

    known = state_ids()
    bands: list[dict[str, Any]] = []
    state, since = known[0], 0.0
    caller: list[dict[str, Any]] = []
    speech: list[dict[str, Any]] = []
    open_speech: dict[str, float] = {}
    sentences: dict[tuple[int, int], dict[str, Any]] = {}
    awaiting_ack: list[dict[str, Any]] = []
    marks: list[dict[str, Any]] = []
    barge_ins: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    dropped = 0
    last_event: dict[str, Any] | None = None
    last_speech_start: float | None = None
    playout_end = 0.0

    for line, r in records[1:]:
        kind, t = r["kind"], r.get("t", 0.0)
        if kind == "event":
            last_event = r
            name = r["event"]
            if name == "CallerSpeechStarted":
                last_speech_start = r["at"]
                open_speech.setdefault(r.get("source", "vad"), r["at"])
            elif name == "CallerSpeechStopped":
                started = open_speech.pop(r.get("source", "vad"), None)
                if started is not None:
                    speech.append({"start": started, "end": r["at"], "source": r.get("source")})
            elif name == "Transcript" and r.get("is_final") and r.get("text", "").strip():
                start = last_speech_start if last_speech_start is not None else t
                start = start if t - start < 15 else t
                caller.append({"start": start, "t": t, "text": r["text"], "kind": "words"})
            elif name == "DtmfPressed":
                caller.append({"start": t, "t": t, "text": f"[{r['digit']}]", "kind": "dtmf"})
            elif name == "AudioPlayed":
                turn, _, seq = str(r["name"]).partition(".")
                if turn.isdigit() and seq.isdigit():
                    sentence = sentences.get((int(turn), int(seq)))
                    if sentence is not None and sentence["heard"] is None:
                        sentence["heard"] = t
                        if sentence in awaiting_ack:
                            awaiting_ack.remove(sentence)
            elif name == "TimerFired" and r.get("name") == "playout" and awaiting_ack:
                awaiting_ack.pop(0)["heard"] = t  # the fallback: taken as heard
            if name in ERROR_EVENTS:
                what = name + (f" utterance {r['utterance']}" if "utterance" in r else "")
                errors.append({"t": t, "line": line, "what": what, "detail": r.get("reason", "")})
        elif kind == "transition":
            if r["from"] != state:  # a log cut or edited by hand: follow what it says
                state = r["from"]
            bands.append({"state": state, "start": since, "end": t})
            state, since = r["to"], t
        elif kind == "command":
            name = r["command"]
            if name == "Synthesize":
                sentence = {
                    "utterance": r["utterance"],
                    "seq": r["seq"],
                    "text": r["text"],
                    "asked": t,
                    "start": None,
                    "heard": None,
                    "cut": None,
                    "played_until": None,
                }
                sentences[(r["utterance"], r["seq"])] = sentence
            elif name == "PlayAudio":
                # Audio is sent ahead of the phone's playout: lay it the way the phone plays it.
                begins = max(t, playout_end)
                playout_end = begins + r["audio"]["bytes"] / PHONE_RATE
                sentence = sentences.get((r["utterance"], r["seq"]))
                if sentence is not None:
                    if sentence["start"] is None:
                        sentence["start"] = begins
                    sentence["played_until"] = playout_end
            elif name == "Checkpoint":
                turn, _, seq = str(r["name"]).partition(".")
                if turn.isdigit() and seq.isdigit():
                    sentence = sentences.get((int(turn), int(seq)))
                    if sentence is not None:
                        awaiting_ack.append(sentence)
            elif name == "ClearAudio":
                for sentence in sentences.values():
                    if sentence["start"] is None or sentence["heard"] is not None:
                        continue
                    if sentence["start"] >= t:  # sent, but dropped before a sample played
                        sentence["start"] = None
                    elif sentence["played_until"] > t:
                        sentence["cut"] = t
                playout_end = min(playout_end, t)
                awaiting_ack.clear()
                began = t
                trigger = (last_event or {}).get("event", "")
                if trigger == "CallerSpeechStarted":
                    began = last_event["at"]  # type: ignore[index]
                elif last_speech_start is not None and t - last_speech_start < 10:
                    began = last_speech_start
                marks.append({"t": t, "kind": "clear", "label": "clearAudio"})
                barge_in = trigger in ("CallerSpeechStarted", "Transcript", "DtmfPressed") or (
                    trigger == "TimerFired" and (last_event or {}).get("name") == "barge_in"
                )
                if barge_in:
                    marks.append({"t": began, "kind": "barge_in", "label": "barge-in"})
                    barge_ins.append(
                        {"speech_at": began, "clear_at": t, "latency": round(t - began, 4)}
                    )
            elif name in ("Hangup", "Transfer"):
                label = f"{name} {r.get('reason') or r.get('to') or ''}".strip()
                marks.append({"t": t, "kind": name.lower(), "label": label})
        elif kind == "dropped":
            dropped += 1
        elif kind == "note":
            detail = _detail(r, ("kind", "t", "what"))
            entry = {"t": t, "line": line, "what": r.get("what", "?"), "detail": detail}
            failed = r.get("ok") is False or r.get("what") in ERROR_NOTES
            (errors if failed else notes).append(entry)
    bands.append({"state": state, "start": since, "end": max(end, since)})
    for started in open_speech.values():
        speech.append({"start": started, "end": end, "source": None})

    agent = []
    for sentence in sentences.values():
        start = sentence["start"]
        stop = sentence["cut"] or sentence["heard"] or sentence["played_until"]
        if start is not None and start >= end and sentence["heard"] is None:
            start = None  # queued for a phone that had hung up
        elif start is not None and stop is not None:
            stop = max(stop, start)
            if stop > end and sentence["heard"] is None:
                stop, sentence["cut"] = end, end  # the call ended mid-sentence
        agent.append(
            {
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
        )
    return {
        "call": {
            k: header.get(k)
            for k in ("call_id", "caller", "callee", "started_at", "providers", "record_audio")
        },
        "duration": round(end, 6),
        "finished": footer is not None,
        "end_reason": (footer or {}).get("reason"),
        "states": known + sorted({b["state"] for b in bands} - set(known)),
        "bands": bands,
        "caller": caller,
        "speech": speech,
        "agent": agent,
        "marks": sorted(marks, key=lambda m: m["t"]),
        "turns": [lat.as_dict() for lat in turn_latencies(r for _, r in records)],
        "barge_ins": barge_ins,
        "notes": notes,
        "errors": errors,
        "dropped": dropped,
        "audio": None,
    }


def recording_path(log: Path) -> Path:
    return log.with_suffix(".wav")


def waveform(wav_path: Path) -> dict[str, Any] | None:
    """Min/max columns of each channel (caller, agent), or None for a WAV that cannot be read."""
    try:
        with wave.open(str(wav_path), "rb") as wav:
            channels, width, rate = wav.getnchannels(), wav.getsampwidth(), wav.getframerate()
            if width != 2 or channels not in (1, 2):
                return None
            data = np.frombuffer(wav.readframes(wav.getnframes()), dtype="<i2")
    except (OSError, EOFError, wave.Error):
        return None
    samples = data.reshape(-1, channels)
    step = max(1, rate // PEAKS_PER_SECOND)
    columns = len(samples) // step
    lanes = {}
    for i, name in enumerate(("caller", "agent")[:channels]):
        block = samples[: columns * step, i].reshape(columns, step) / 32768.0
        lanes[name] = [
            [round(float(lo), 3), round(float(hi), 3)]
            for lo, hi in zip(block.min(axis=1), block.max(axis=1), strict=True)
        ]
    return {
        "rate": rate / step,
        "duration": len(samples) / rate,
        "channels": channels,
        "peaks": lanes,
    }


def view_for(log: Path) -> dict[str, Any]:
    """The view of the log at ``log``, with its waveform when a recording lies beside it."""
    view = call_view(read_records(log))
    view["log"] = log.name
    wav = recording_path(log)
    if wav.is_file():
        view["audio"] = waveform(wav)
    return view


def _script_json(value: Any) -> str:
    """JSON that is safe inside a ``<script>`` element (no ``</script>`` can close it early)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def standalone_html(view: dict[str, Any], audio: bytes | None = None) -> str:
    """One self-contained page: the inspector's script, style and this call's view."""
    style = (STATIC / "style.css").read_text(encoding="utf-8")
    script = (STATIC / "inspector.js").read_text(encoding="utf-8")
    audio_url = ""
    if audio is not None:
        audio_url = "data:audio/wav;base64," + base64.b64encode(audio).decode("ascii")
    title = escape(f"call {view['call'].get('call_id') or view.get('log') or ''}")
    return (
        "<!doctype html>\n<html lang='en'><head><meta charset='utf-8'><link rel='icon' href='data:,'>"
        f"<title>{title}</title><style>{style}</style></head>"
        "<body class='inspector-page'><main id='inspector'></main>"
        f"<script>window.CALL_VIEW = {_script_json(view)};"
        f"window.CALL_AUDIO = {_script_json(audio_url)};</script>"
        f"<script>{script}</script>"
        "<script>Inspector.render(document.getElementById('inspector'), window.CALL_VIEW,"
        " window.CALL_AUDIO);</script></body></html>\n"
    )


def write_page(log: Path, out: Path) -> Path:
    view = view_for(log)
    wav = recording_path(log)
    audio = None
    if view["audio"] is not None and wav.stat().st_size <= MAX_EMBEDDED_AUDIO:
        audio = wav.read_bytes()
    out.write_text(standalone_html(view, audio), encoding="utf-8")
    return out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("log", type=Path, help="a call log (.jsonl)")
    parser.add_argument("--out", type=Path, help="the page to write (default: LOG with .html)")
    parser.add_argument("--open", action="store_true", help="open the page in a browser")


def run(args: argparse.Namespace) -> int:
    """``voice-agent inspect``: 0 written, 2 when the log cannot be read."""
    log: Path = args.log
    out: Path = args.out or log.with_suffix(".html")
    try:
        write_page(log, out)
    except (OSError, UnicodeDecodeError, LogError) as exc:
        print(f"voice-agent inspect: {log}: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    if args.open:
        webbrowser.open(out.resolve().as_uri())
    return 0
