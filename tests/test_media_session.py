"""The Vobiz media session without a socket: frames in, events out; commands in, frames out."""

import base64
import json

import numpy as np
import pytest

from adapters.vobiz.protocol import L16, ProtocolError, Start
from adapters.vobiz.session import CallerAudio, MediaSession, StartedAgain
from engine import commands as cmd
from engine import events as ev

ULAW_20MS = b"\x7f" * 160


def media(payload: bytes) -> str:
    return json.dumps({"event": "media", "media": {"payload": base64.b64encode(payload).decode()}})


def frames(session: MediaSession) -> list[dict]:
    out = []
    while (frame := session.next_frame()) is not None:
        out.append(json.loads(frame))
    return out


@pytest.mark.parametrize(
    ("frame", "received"),
    [
        (json.dumps({"event": "playedStream", "name": "2.0"}), ev.AudioPlayed("2.0")),
        (json.dumps({"event": "clearedAudio", "streamId": "s1"}), ev.AudioCleared()),
        (json.dumps({"event": "dtmf", "dtmf": {"digit": "7"}}), ev.DtmfPressed("7")),
        (json.dumps({"event": "stop"}), ev.CallEnded("stop")),
        (
            json.dumps({"event": "start", "start": {"callId": "c", "streamId": "s9"}}),
            StartedAgain("s9"),
        ),
        (media(ULAW_20MS), CallerAudio(ULAW_20MS)),
    ],
)
def test_each_inbound_frame_means_one_thing_for_the_call(frame, received):
    assert MediaSession(Start("c", "s1")).receive(frame) == received


def test_a_frame_that_means_nothing_is_a_protocol_error():
    with pytest.raises(ProtocolError) as info:
        MediaSession(Start("c", "s1")).receive("{not json")
    assert info.value.kind == "malformed_json"


def test_l16_caller_audio_is_read_big_endian_and_handed_on_as_ulaw():
    session = MediaSession(Start("c", "s1", encoding=L16, sample_rate=8000))
    silence = np.zeros(160, dtype=">i2").tobytes()
    received = session.receive(media(silence))
    assert isinstance(received, CallerAudio) and len(received.ulaw) == 160
    assert set(received.ulaw) <= {0xFF, 0x7F}  # mu-law's two zeros


def test_agent_audio_goes_out_in_whole_20_ms_frames_up_to_100_ms_a_message():
    session = MediaSession(Start("c", "s1"))
    session.send(cmd.PlayAudio(2, 0, b"\x10" * 1050))  # 131 ms
    session.send(cmd.PlayAudio(2, 0, b"\x10" * 400))  # 50 ms more
    session.send(cmd.Checkpoint("2.0"))
    out = frames(session)
    assert [f["event"] for f in out] == ["playAudio"] * 4 + ["checkpoint"]
    assert all(f["streamId"] == "s1" for f in out)
    sizes = [len(base64.b64decode(f["media"]["payload"])) for f in out[:4]]
    # What is ready goes at once, in whole frames; the checkpoint flushes the tail, padded
    # with silence to a frame.
    assert sizes == [800, 160, 480, 160]
    assert out[-1]["name"] == "2.0"


def test_clear_audio_drops_what_was_not_written_yet():
    session = MediaSession(Start("c", "s1"))
    session.send(cmd.PlayAudio(2, 0, b"\x10" * 1600))
    session.send(cmd.Checkpoint("2.0"))
    session.send(cmd.ClearAudio())
    assert [f["event"] for f in frames(session)] == ["checkpoint", "clearAudio"]


def test_after_a_reconnect_waiting_frames_carry_the_new_stream_id():
    session = MediaSession(Start("c", "s1"))
    session.send(cmd.PlayAudio(2, 0, ULAW_20MS))
    session.reconnected(Start("c", "s2"))
    session.send(cmd.Hangup("agent"))
    assert [(f["event"], f["streamId"]) for f in frames(session)] == [
        ("playAudio", "s2"),
        ("stop", "s2"),
    ]


def test_outbound_l16_is_little_endian_at_the_streams_rate():
    session = MediaSession(Start("c", "s1", encoding=L16, sample_rate=16000))
    session.send(cmd.PlayAudio(2, 0, ULAW_20MS * 2))
    (first, *_) = frames(session)
    assert first["media"]["contentType"] == L16 and first["media"]["sampleRate"] == 16000
    samples = np.frombuffer(base64.b64decode(first["media"]["payload"]), dtype="<i2")
    assert np.abs(samples).max() < 64  # mu-law 0x7f is about zero; big-endian would not be
