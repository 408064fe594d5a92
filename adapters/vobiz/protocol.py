"""The Vobiz media WebSocket and answer XML, as plain values.

This module is the sans-I/O half of the Vobiz adapter: it turns one text
frame into one typed message and builds the frames and XML we send, with no
socket, clock or trio in sight. Keeping it pure means every quirk of the wire
(two shapes of ``start``, optional fields, hostile input) is pinned down by
table tests, and the receive task that calls :func:`parse` 50 times a second
per call stays a thin loop.

Every problem with an inbound frame raises :class:`ProtocolError` with a
stable ``kind``, so the caller can count and log by kind (once per unknown
event type, not 50 times a second) and keep the call up.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any

import attrs

from adapters.media.audio import L16, MULAW

#: Bytes per sample of each encoding Vobiz streams.
SAMPLE_WIDTH = {MULAW: 1, L16: 2}

#: The ``contentType`` values we ask of the Stream element: what Vobiz streams *inbound*.
#: Vobiz's Stream reference lists these three and says not to set
#: ``audio/x-l16;rate=24000`` (24 kHz is an outbound ``playAudio`` format only).
STREAM_CONTENT_TYPES = (
    "audio/x-mulaw;rate=8000",
    "audio/x-l16;rate=8000",
    "audio/x-l16;rate=16000",
)


def media_format_problem(content_type: str) -> str:
    """Why ``MEDIA_FORMAT`` cannot be used, in words that say what to set instead."""
    allowed = ", ".join(STREAM_CONTENT_TYPES)
    if content_type.replace(" ", "").lower() == "audio/x-l16;rate=24000":
        return (
            f"MEDIA_FORMAT={content_type!r}: Vobiz streams the caller's audio only as "
            f"{allowed}; its Stream reference says not to set 24 kHz (that rate exists only "
            "for audio sent to the caller). Use audio/x-l16;rate=16000 for the best quality."
        )
    return f"MEDIA_FORMAT={content_type!r}: use one of {allowed}"


#: A media frame carries 20 ms; anything past one second is not a frame.
MAX_FRAME_SECONDS = 1.0

DTMF_DIGITS = frozenset("0123456789*#ABCD")


class ProtocolError(Exception):
    """An inbound frame we cannot use; ``kind`` is stable, ``detail`` is for humans.

    For ``unknown_event`` the detail is exactly the event name, so a caller
    can keep a set of names it has already logged.
    """

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


# ---------------------------------------------------------------- inbound


@attrs.frozen
class Start:
    """The stream is up; ``encoding`` and ``sample_rate`` are what media will carry."""

    call_id: str
    stream_id: str
    account_id: str = ""
    encoding: str = MULAW
    sample_rate: int = 8000
    tracks: tuple[str, ...] = ("inbound",)


@attrs.frozen
class Media:
    """One chunk of caller audio, already base64-decoded."""

    payload: bytes
    chunk: int | None = None
    timestamp: str | None = None


@attrs.frozen
class PlayedStream:
    """Everything queued before checkpoint ``name`` has been played to the caller."""

    name: str
    stream_id: str | None = None


@attrs.frozen
class ClearedAudio:
    """A ``clearAudio`` flushed the playback queue."""

    stream_id: str | None = None


@attrs.frozen
class Dtmf:
    """The caller pressed a key."""

    digit: str


@attrs.frozen
class Stop:
    """The older examples' explicit end of stream (Vobiz itself just closes the socket)."""

    reason: str = ""


Inbound = Start | Media | PlayedStream | ClearedAudio | Dtmf | Stop


def parse(
    text: str | bytes,
    max_bytes: int = 64_000,
    *,
    encoding: str = MULAW,
    sample_rate: int = 8000,
) -> Inbound:
    """Translate one frame; ``encoding``/``sample_rate`` come from the call's ``start``.

    The media check needs the stream's format because a payload size is only
    wrong relative to it (an odd length is fine for mu-law, not for L16).
    """
    if not isinstance(text, str):
        raise ProtocolError("binary_frame", f"{len(text)} bytes; Vobiz sends text frames")
    if len(text) > max_bytes:
        raise ProtocolError("oversize", f"{len(text)} > {max_bytes}")
    try:
        msg = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("malformed_json", str(exc)[:200]) from None
    if not isinstance(msg, dict):
        raise ProtocolError("not_an_object", type(msg).__name__)
    event = msg.get("event")
    if event == "media":  # the hot path: 50 frames a second
        return _media(msg, encoding, sample_rate)
    if event is None:
        raise ProtocolError("missing_field", "event")
    if not isinstance(event, str):
        raise ProtocolError("bad_field_type", "event")
    handler = _HANDLERS.get(event)
    if handler is None:
        raise ProtocolError("unknown_event", event)
    return handler(msg)


def _media(msg: dict, encoding: str, sample_rate: int) -> Media:
    media = msg.get("media")
    if media is None:
        raise ProtocolError("missing_field", "media")
    if not isinstance(media, dict):
        raise ProtocolError("bad_field_type", "media")
    payload = media.get("payload")
    if payload is None:
        raise ProtocolError("missing_field", "media.payload")
    if not isinstance(payload, str):
        raise ProtocolError("bad_field_type", "media.payload")
    try:
        audio = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ProtocolError("bad_base64", str(exc)[:200]) from None
    width = SAMPLE_WIDTH.get(encoding, 1)
    if not audio or len(audio) % width or len(audio) > width * sample_rate * MAX_FRAME_SECONDS:
        raise ProtocolError("bad_payload_size", f"{len(audio)} bytes of {encoding}@{sample_rate}")
    return Media(audio, _opt_int(media, "chunk"), _opt_str(media, "timestamp"))


def _start(msg: dict) -> Start:
    # Vobiz nests the ids under "start"; older examples put them at the top.
    body = msg.get("start", msg)
    if not isinstance(body, dict):
        raise ProtocolError("bad_field_type", "start")
    call_id = _bounded(_req_str(body, "callId"), "callId")
    stream_id = _bounded(_req_str(body, "streamId"), "streamId")
    account_id = _opt_str(body, "accountId") or ""
    tracks = body.get("tracks", ["inbound"])
    if not isinstance(tracks, list) or not all(isinstance(t, str) for t in tracks):
        raise ProtocolError("bad_field_type", "tracks")
    fmt = body.get("mediaFormat") or {}
    if not isinstance(fmt, dict):
        raise ProtocolError("bad_field_type", "mediaFormat")
    encoding = fmt.get("encoding", MULAW)
    if not isinstance(encoding, str):
        raise ProtocolError("bad_field_type", "mediaFormat.encoding")
    encoding = encoding.split(";", 1)[0].strip().lower()
    if encoding not in SAMPLE_WIDTH:
        raise ProtocolError("bad_field_type", f"mediaFormat.encoding {encoding!r}")
    rate = fmt.get("sampleRate", 8000)
    if isinstance(rate, str) and rate.isdigit():
        rate = int(rate)
    if not isinstance(rate, int) or isinstance(rate, bool) or not 0 < rate <= 48_000:
        raise ProtocolError("bad_field_type", "mediaFormat.sampleRate")
    return Start(call_id, stream_id, account_id, encoding, rate, tuple(tracks))


def _played_stream(msg: dict) -> PlayedStream:
    return PlayedStream(_bounded(_req_str(msg, "name"), "name"), _opt_str(msg, "streamId"))


def _cleared_audio(msg: dict) -> ClearedAudio:
    return ClearedAudio(_opt_str(msg, "streamId"))


def _dtmf(msg: dict) -> Dtmf:
    body = msg.get("dtmf", msg)
    if not isinstance(body, dict):
        raise ProtocolError("bad_field_type", "dtmf")
    digit = _req_str(body, "digit")
    if digit not in DTMF_DIGITS:
        raise ProtocolError("bad_field_type", f"digit {digit[:8]!r}")
    return Dtmf(digit)


def _stop(msg: dict) -> Stop:
    body = msg.get("stop")
    reason = _opt_str(body, "reason") if isinstance(body, dict) else None
    return Stop(reason or _opt_str(msg, "reason") or "")


_HANDLERS: dict[str, Callable[[dict[str, Any]], Inbound]] = {
    "start": _start,
    "playedStream": _played_stream,
    "clearedAudio": _cleared_audio,
    "dtmf": _dtmf,
    "stop": _stop,
}


def _req_str(obj: dict, key: str) -> str:
    value = obj.get(key)
    if value is None or value == "":
        raise ProtocolError("missing_field", key)
    if not isinstance(value, str):
        raise ProtocolError("bad_field_type", key)
    return value


#: The longest id or name we take from the wire: Vobiz's ids are UUIDs, our checkpoint names
#: are short; anything longer is not from Vobiz and would only bloat the call log.
MAX_NAME = 128


def _bounded(value: str, key: str) -> str:
    if len(value) > MAX_NAME:
        raise ProtocolError("bad_field_type", f"{key} longer than {MAX_NAME} characters")
    return value


def _opt_str(obj: dict, key: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise ProtocolError("bad_field_type", key)


def _opt_int(obj: dict, key: str) -> int | None:
    value = obj.get(key)
    if value is None or (isinstance(value, int) and not isinstance(value, bool)):
        return value
    if isinstance(value, str) and value.isdecimal() and len(value) < 19:
        return int(value)
    raise ProtocolError("bad_field_type", key)
