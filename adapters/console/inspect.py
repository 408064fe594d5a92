"""The call inspector: one call log drawn as a timeline, in a page that needs no server.

:func:`~adapters.console.callview.call_view` reads the log's records into what
the page draws (state bands, the caller's and the agent's lanes, barge-ins and
clears, latency per turn, notes and provider errors); ``static/inspector.js``
draws it. The console serves the same view for its call list, and
``voice-agent inspect LOG`` writes it into one self-contained HTML file, so a
log mailed by a colleague opens in any browser, offline.

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

from adapters.console.callview import call_view
from engine.calllog import LogError, read_log, split_log

STATIC = Path(__file__).parent / "static"
#: Waveform columns per second of audio.
PEAKS_PER_SECOND = 50
#: The largest recording put into a page (a stereo 8 kHz WAV: about 16 minutes).
MAX_EMBEDDED_AUDIO = 64 * 1024 * 1024


def read_records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    """The log's records with their line numbers; :class:`LogError` names a bad line."""
    lines, _cut = split_log(path.read_text(encoding="utf-8"))
    records = list(read_log(lines))
    if not records:
        raise LogError(1, "empty log")
    return records


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
