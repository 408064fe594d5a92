"""What the server sends on the Vobiz media socket: typed messages and their JSON frames.

Every command carries the ``streamId`` of the ``start`` that opened the socket
(Vobiz's stream-events reference). Messages wait in a call's outbox as typed
values and are encoded as they are written (:func:`encode`), so after a
reconnect everything still waiting goes out with the new stream's id.
"""

from __future__ import annotations

import base64
import json

import attrs

from adapters.vobiz.protocol import MULAW, SAMPLE_WIDTH, Start


def _dumps(obj: dict) -> str:
    return json.dumps(obj, separators=(",", ":"))


def play_audio(
    stream_id: str, payload: bytes, encoding: str = MULAW, sample_rate: int = 8000
) -> str:
    """Queue audio for the caller; format must match the ``start`` exactly.

    ``streamId`` is required (Vobiz's playAudio reference marks it so, and its
    stream-events page says to echo the ``start``'s id): audio without it may
    never be played. Outbound L16 is
    little-endian (inbound is big-endian): the caller of this function owns
    the byte order.
    """
    if encoding not in SAMPLE_WIDTH:
        raise ValueError(f"unsupported encoding {encoding!r}")
    media = {
        "contentType": encoding,
        "sampleRate": sample_rate,
        "payload": base64.b64encode(payload).decode("ascii"),
    }
    return _dumps({"event": "playAudio", "streamId": stream_id, "media": media})


def checkpoint(stream_id: str, name: str) -> str:
    """Ask for a ``playedStream`` named ``name`` once everything queued so far has played."""
    return _dumps({"event": "checkpoint", "streamId": stream_id, "name": name})


def clear_audio(stream_id: str) -> str:
    """Drop everything queued but not yet played (barge-in)."""
    return _dumps({"event": "clearAudio", "streamId": stream_id})


def stop(stream_id: str) -> str:
    """End the stream; Vobiz drops anything sent after it."""
    return _dumps({"event": "stop", "streamId": stream_id})


@attrs.frozen
class PlayAudio:
    """Agent audio, already in the stream's encoding, waiting to go out."""

    payload: bytes = attrs.field(repr=lambda a: f"<{len(a)} bytes>")


@attrs.frozen
class Checkpoint:
    name: str


@attrs.frozen
class ClearAudio:
    pass


@attrs.frozen
class StopStream:
    pass


#: What the server sends on the media socket, before it is given the stream's id and format.
Outbound = PlayAudio | Checkpoint | ClearAudio | StopStream


def encode(message: Outbound, start: Start) -> str:
    """One outbound message as a frame of the stream ``start`` opened.

    Messages are encoded as they are written, not when they are queued, so
    after a reconnect everything still waiting goes out with the new stream's id.
    """
    stream_id = start.stream_id
    match message:
        case PlayAudio(payload=payload):
            return play_audio(stream_id, payload, start.encoding, start.sample_rate)
        case Checkpoint(name=name):
            return checkpoint(stream_id, name)
        case ClearAudio():
            return clear_audio(stream_id)
        case StopStream():
            return stop(stream_id)
    raise TypeError(f"not an outbound message: {message!r}")
