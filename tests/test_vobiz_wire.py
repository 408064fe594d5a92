"""The Vobiz wire translation: every inbound shape, every error kind, every builder."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.vobiz import outbound
from adapters.vobiz import xml as vobiz_xml
from adapters.vobiz.protocol import (
    L16,
    MULAW,
    ClearedAudio,
    Dtmf,
    Media,
    PlayedStream,
    ProtocolError,
    Start,
    Stop,
    parse,
)

SILENCE = base64.b64encode(b"\xff" * 160).decode()

NESTED_START = {
    "event": "start",
    "sequenceNumber": 1,
    "start": {
        "callId": "c-1",
        "streamId": "s-1",
        "accountId": "MA1",
        "tracks": ["inbound"],
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000},
    },
}

VALID = [
    pytest.param(NESTED_START, Start("c-1", "s-1", "MA1", MULAW, 8000, ("inbound",)), id="start"),
    pytest.param(
        {"event": "start", "streamId": "s-2", "callId": "c-2"},
        Start("c-2", "s-2"),
        id="start-flat-no-format",
    ),
    pytest.param(
        {
            "event": "start",
            "start": {
                "callId": "c",
                "streamId": "s",
                "mediaFormat": {"encoding": "audio/x-l16;rate=16000", "sampleRate": "16000"},
            },
        },
        Start("c", "s", "", L16, 16000),
        id="start-l16-rate-in-string",
    ),
    pytest.param(
        {
            "event": "media",
            "media": {"track": "inbound", "timestamp": "1712", "chunk": 3, "payload": SILENCE},
        },
        Media(b"\xff" * 160, 3, "1712"),
        id="media",
    ),
    pytest.param(
        {"event": "media", "media": {"payload": SILENCE, "chunk": "7", "timestamp": 20}},
        Media(b"\xff" * 160, 7, "20"),
        id="media-chunk-as-string-timestamp-as-int",
    ),
    pytest.param(
        {"event": "media", "media": {"payload": SILENCE}},
        Media(b"\xff" * 160),
        id="media-minimal",
    ),
    pytest.param(
        {"event": "playedStream", "name": "turn1-seq2"},
        PlayedStream("turn1-seq2"),
        id="playedStream-no-stream-id",
    ),
    pytest.param(
        {"event": "playedStream", "name": "n", "streamId": "s"},
        PlayedStream("n", "s"),
        id="playedStream",
    ),
    pytest.param({"event": "clearedAudio", "streamId": "s"}, ClearedAudio("s"), id="clearedAudio"),
    pytest.param({"event": "clearedAudio"}, ClearedAudio(), id="clearedAudio-bare"),
    pytest.param({"event": "dtmf", "dtmf": {"digit": "5"}}, Dtmf("5"), id="dtmf-plivo"),
    pytest.param({"event": "dtmf", "digit": "#"}, Dtmf("#"), id="dtmf-flat"),
    pytest.param({"event": "stop"}, Stop(""), id="stop-bare"),
    pytest.param(
        {"event": "stop", "stop": {"callId": "c", "reason": "hangup"}}, Stop("hangup"), id="stop"
    ),
]


@pytest.mark.parametrize(("frame", "expected"), VALID)
def test_parses_every_event_shape(frame, expected):
    assert parse(json.dumps(frame)) == expected


def test_l16_media_uses_the_stream_format():
    payload = base64.b64encode(bytes(640)).decode()
    frame = json.dumps({"event": "media", "media": {"payload": payload}})
    assert parse(frame, encoding=L16, sample_rate=16000).payload == bytes(640)


def media(payload: object) -> str:
    return json.dumps({"event": "media", "media": {"payload": payload}})


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


ERRORS = [
    pytest.param(b'{"event":"media"}', {}, "binary_frame", id="binary"),
    pytest.param("x" * 65_000, {}, "oversize", id="oversize"),
    pytest.param('{"event": "media", ', {}, "malformed_json", id="truncated"),
    pytest.param("[" * 5000 + "]" * 5000, {}, "malformed_json", id="deep-nesting"),
    pytest.param("[1, 2]", {}, "not_an_object", id="array"),
    pytest.param('"media"', {}, "not_an_object", id="string"),
    pytest.param('{"event": "connected"}', {}, "unknown_event", id="unknown"),
    pytest.param('{"streamId": "s"}', {}, "missing_field", id="no-event"),
    pytest.param('{"event": 5}', {}, "bad_field_type", id="event-not-string"),
    pytest.param('{"event": "media"}', {}, "missing_field", id="media-missing"),
    pytest.param('{"event": "media", "media": "x"}', {}, "bad_field_type", id="media-not-object"),
    pytest.param('{"event": "media", "media": {}}', {}, "missing_field", id="payload-missing"),
    pytest.param(media(123), {}, "bad_field_type", id="payload-not-string"),
    pytest.param(media("not base64!"), {}, "bad_base64", id="base64-chars"),
    pytest.param(media("/w="), {}, "bad_base64", id="base64-padding"),
    pytest.param(media("ÿÿÿÿ"), {}, "bad_base64", id="base64-non-ascii"),
    pytest.param(media(""), {}, "bad_payload_size", id="empty-payload"),
    pytest.param(media(b64(bytes(161))), {"encoding": L16}, "bad_payload_size", id="odd-l16"),
    pytest.param(media(b64(bytes(8001))), {}, "bad_payload_size", id="over-1s-mulaw"),
    pytest.param(
        media(b64(bytes(16_002))), {"encoding": L16}, "bad_payload_size", id="over-1s-l16"
    ),
    pytest.param(
        json.dumps({"event": "media", "media": {"payload": SILENCE, "chunk": True}}),
        {},
        "bad_field_type",
        id="chunk-bool",
    ),
    pytest.param(
        json.dumps({"event": "media", "media": {"payload": SILENCE, "timestamp": [1]}}),
        {},
        "bad_field_type",
        id="timestamp-list",
    ),
    pytest.param(
        '{"event": "start", "start": {"streamId": "s"}}', {}, "missing_field", id="no-cid"
    ),
    pytest.param('{"event": "start", "callId": "c"}', {}, "missing_field", id="flat-no-sid"),
    pytest.param('{"event": "start", "start": []}', {}, "bad_field_type", id="start-not-object"),
    pytest.param(
        '{"event": "start", "callId": 1, "streamId": "s"}', {}, "bad_field_type", id="cid-int"
    ),
    pytest.param(
        '{"event":"start","callId":"c","streamId":"s","mediaFormat":{"encoding":"audio/opus"}}',
        {},
        "bad_field_type",
        id="unknown-encoding",
    ),
    pytest.param(
        '{"event":"start","callId":"c","streamId":"s","mediaFormat":{"sampleRate":-8000}}',
        {},
        "bad_field_type",
        id="negative-rate",
    ),
    pytest.param(
        '{"event":"start","callId":"c","streamId":"s","tracks":"inbound"}',
        {},
        "bad_field_type",
        id="tracks-not-list",
    ),
    pytest.param('{"event": "playedStream"}', {}, "missing_field", id="played-no-name"),
    pytest.param('{"event": "clearedAudio", "streamId": {}}', {}, "bad_field_type", id="cleared"),
    pytest.param('{"event": "dtmf", "dtmf": {}}', {}, "missing_field", id="dtmf-no-digit"),
    pytest.param('{"event": "dtmf", "dtmf": {"digit": "55"}}', {}, "bad_field_type", id="dtmf-2"),
    pytest.param('{"event": "dtmf", "dtmf": "5"}', {}, "bad_field_type", id="dtmf-not-object"),
]


@pytest.mark.parametrize(("frame", "fmt", "kind"), ERRORS)
def test_every_problem_has_a_stable_kind(frame, fmt, kind):
    with pytest.raises(ProtocolError) as info:
        parse(frame, **fmt)
    assert info.value.kind == kind


def test_unknown_event_carries_the_event_name():
    with pytest.raises(ProtocolError) as info:
        parse('{"event": "mark", "mark": {}}')
    assert (info.value.kind, info.value.detail) == ("unknown_event", "mark")


def test_max_bytes_is_configurable():
    frame = media(SILENCE)
    parse(frame, max_bytes=len(frame))
    with pytest.raises(ProtocolError, match="oversize"):
        parse(frame, max_bytes=len(frame) - 1)


def test_one_second_is_the_largest_frame():
    assert len(parse(media(b64(bytes(8000)))).payload) == 8000
    big = media(b64(bytes(48_000)))  # a whole second of 24 kHz L16 needs a larger max_bytes
    assert len(parse(big, 70_000, encoding=L16, sample_rate=24_000).payload) == 48_000


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=12,
)
frames = st.fixed_dictionaries(
    {"event": st.sampled_from(["start", "media", "playedStream", "clearedAudio", "dtmf", "stop"])},
    optional={
        "start": json_values,
        "media": st.fixed_dictionaries({}, optional={"payload": st.text(), "chunk": json_values})
        | json_values,
        "dtmf": json_values,
        "name": json_values,
        "streamId": json_values,
        "callId": json_values,
        "digit": json_values,
        "stop": json_values,
    },
).map(json.dumps)


@settings(max_examples=400, deadline=None)
@given(st.one_of(st.text(), st.binary(), frames))
def test_parse_raises_nothing_but_protocol_error(frame):
    try:
        parse(frame)
    except ProtocolError as exc:
        assert exc.kind in {
            "binary_frame",
            "oversize",
            "malformed_json",
            "not_an_object",
            "unknown_event",
            "missing_field",
            "bad_base64",
            "bad_payload_size",
            "bad_field_type",
        }


# ---------------------------------------------------------------- outbound


def test_play_audio_matches_the_documented_frame():
    assert json.loads(outbound.play_audio("s1", b"\xff\x7f", MULAW, 8000)) == {
        "event": "playAudio",
        "streamId": "s1",
        "media": {"contentType": "audio/x-mulaw", "sampleRate": 8000, "payload": "/38="},
    }


def test_play_audio_refuses_unknown_encodings():
    with pytest.raises(ValueError):
        outbound.play_audio("s1", b"", "audio/x-wav", 8000)


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (
            outbound.checkpoint("s1", "t1-0"),
            {"event": "checkpoint", "streamId": "s1", "name": "t1-0"},
        ),
        (outbound.clear_audio("s1"), {"event": "clearAudio", "streamId": "s1"}),
        (outbound.stop("s1"), {"event": "stop", "streamId": "s1"}),
    ],
)
def test_control_frames(built, expected):
    assert json.loads(built) == expected


def test_answer_xml_puts_the_escaped_url_in_the_element_text():
    url = "wss://agent.example/ws?token=a.b&x=1"
    xml = vobiz_xml.answer_xml(url, 'https://agent.example/status?a=1&b="2"', max_retries=2)
    assert xml.startswith('<?xml version="1.0" encoding="UTF-8"?>')
    assert "?token=a.b&amp;x=1</Stream>" in xml
    stream = ET.fromstring(xml.split("\n", 1)[1]).find("Stream")
    assert stream.text == url
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-mulaw;rate=8000",
        "statusCallbackUrl": 'https://agent.example/status?a=1&b="2"',
        "statusCallbackMethod": "POST",
        "maxRetries": "2",
    }


def test_answer_xml_without_callback_or_retries():
    xml = vobiz_xml.answer_xml("ws://127.0.0.1:8000/ws", None, "audio/x-l16;rate=16000")
    stream = ET.fromstring(xml.split("\n", 1)[1]).find("Stream")
    assert stream.attrib == {
        "bidirectional": "true",
        "keepCallAlive": "true",
        "contentType": "audio/x-l16;rate=16000",
    }


@pytest.mark.parametrize(
    ("url", "content_type", "retries"),
    [
        ("https://x/ws", "audio/x-mulaw;rate=8000", 0),
        ("wss://x/ws", "audio/x-mulaw", 0),
        ("wss://x/ws", "audio/x-mulaw;rate=8000", 11),
    ],
)
def test_answer_xml_refuses_what_vobiz_would_reject(url, content_type, retries):
    with pytest.raises(ValueError):
        vobiz_xml.answer_xml(url, None, content_type, retries)


def test_busy_xml():
    root = ET.fromstring(vobiz_xml.busy_xml("All lines busy <& try later>").split("\n", 1)[1])
    assert [child.tag for child in root] == ["Speak", "Hangup"]
    assert root.find("Speak").text == "All lines busy <& try later>"
