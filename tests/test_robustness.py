"""Bad input, fuzz and drain over a live server and raw loopback sockets.

Each call's log must end with its footer and replay identically, whatever came in.
"""

import base64
import contextlib
import json
from pathlib import Path

import httpx
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from serving import finished, running_server, start
from stand_ins import Ear, Hears, Quiet, Talker, quiet
from trio_websocket import ConnectionClosed

from adapters.app.server import create_app
from adapters.app.serving import serve_on_loopback
from adapters.app.settings import ServerSettings
from adapters.call.runner import STT_BUFFER_FRAMES
from adapters.providers.interfaces import Providers
from adapters.providers.wsclient import open_client
from adapters.simulator.caller import simulate
from adapters.simulator.script import CallerLine, CallerScript
from adapters.simulator.wire import stream_url
from engine import events as ev
from engine.config import AgentConfig
from engine.replay import replay

SILENCE = base64.b64encode(b"\xff" * 160).decode()


def server_settings(tmp_path: Path, **kw) -> ServerSettings:
    return ServerSettings.from_env(
        {}, **({"call_log_dir": tmp_path / "calls", "stream_secret": "r" * 32} | kw)
    )


def media(payload: str = SILENCE) -> str:
    return json.dumps({"event": "media", "media": {"payload": payload}})


async def socket_url(base: str, call_id: str) -> str:
    async with httpx.AsyncClient() as client:
        reply = await client.post(f"{base}/answer", data={"CallUUID": call_id, "From": "+1"})
    return stream_url(reply.text)


SENTINEL = json.dumps({"event": "playedStream", "name": "sentinel"})


async def read_up_to_sentinel(ws, app, call_id: str) -> None:
    """Send a marker frame and wait until the server has logged it (or the call is over):
    everything sent before it has then been read, with no guessing at a delay."""
    with contextlib.suppress(ConnectionClosed):
        await ws.send_message(SENTINEL)
    with trio.fail_after(10):
        while (session := app.switchboard.live.get(call_id)) is not None:
            if '"name":"sentinel"' in session.path.read_text():
                return
            await trio.sleep(0.01)


def records(path: Path) -> list[dict]:
    lines = path.read_text().split("\n")[:-1]
    outcome = replay(lines)
    assert outcome.identical, outcome.divergence
    out = [json.loads(line) for line in lines]
    assert out[0]["kind"] == "header" and out[-1]["kind"] == "footer"
    return out


def notes(recs: list[dict], what: str) -> list[dict]:
    return [r for r in recs if r["kind"] == "note" and r["what"] == what]


async def raw_call(
    tmp_path, frames, *, before_start=(), providers=None, wait_for_server=False, **kw
):
    """One call over a raw socket: ``before_start`` frames, ``start``, ``frames``, then close."""
    async with running_server(
        server_settings(tmp_path, **kw), AgentConfig(), providers or quiet()
    ) as app:
        url = await socket_url(app.base_url, "call-raw")
        async with open_client(url) as ws:
            for frame in before_start:
                await ws.send_message(frame)
            await ws.send_message(start("call-raw"))
            try:
                for frame in frames:
                    await ws.send_message(frame)
            except ConnectionClosed:
                assert wait_for_server, "the server closed the socket"
            if wait_for_server:
                await finished(app)
            else:
                await read_up_to_sentinel(ws, app, "call-raw")
        (path,) = await finished(app)
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{app.base_url}/health")
        assert health.status_code == 200
    return records(path)


def errors(recs: list[dict]) -> list[dict]:
    return notes(recs, "protocol_error")


async def test_malformed_json_is_noted_and_the_call_goes_on(tmp_path):
    recs = await raw_call(tmp_path, ["{not json", media()])
    (note,) = errors(recs)
    assert note["problem"] == "malformed_json"
    assert recs[-1]["protocol_errors"] == {"malformed_json": 1}
    assert recs[-1]["reason"] == "socket closed"


async def test_an_unknown_event_is_noted_once_per_type(tmp_path):
    frames = [json.dumps({"event": e}) for e in ("mark2", "mark2", "other")]
    recs = await raw_call(tmp_path, frames)
    assert sorted(n["detail"] for n in errors(recs)) == ["mark2", "other"]
    assert recs[-1]["protocol_errors"] == {"unknown_event": 3}


async def test_media_before_start_is_dropped(tmp_path):
    ear = Ear()
    recs = await raw_call(tmp_path, [media()], before_start=[media()] * 5, providers=quiet(ear))
    assert ear.frames == 1
    assert recs[-1]["protocol_errors"] == {}


async def test_bad_base64_wrong_size_and_oversize_frames_are_noted(tmp_path):
    frames = [
        media("not base64!!"),
        media(""),
        media(base64.b64encode(b"\xff" * 10).decode()),  # fine: a short frame is still audio
        json.dumps({"event": "media", "media": {"payload": "A" * 64_100}}),
    ]
    ear = Ear()
    recs = await raw_call(tmp_path, frames, providers=quiet(ear))
    assert [n["problem"] for n in errors(recs)] == ["bad_base64", "bad_payload_size", "oversize"]
    assert ear.frames == 1


async def test_a_flood_is_bounded_and_the_server_keeps_answering(tmp_path):
    recs = await raw_call(
        tmp_path, [media()] * (STT_BUFFER_FRAMES + 150), providers=quiet(Ear(False))
    )
    assert recs[-1]["dropped_audio_frames"] >= 100


async def test_a_second_start_on_the_same_socket_is_a_note(tmp_path):
    recs = await raw_call(tmp_path, [start("call-raw", "stream-2")])
    (again,) = notes(recs, "start_again")
    assert again["stream_id"] == "stream-2"


async def test_too_many_protocol_errors_end_the_call(tmp_path):
    recs = await raw_call(tmp_path, ["{"] * 30, wait_for_server=True)
    assert recs[-1]["reason"] == "too many protocol errors"
    assert recs[-1]["protocol_errors"] == {"malformed_json": 20}


# -- fuzz --------------------------------------------------------------------------------------

_EVENTS = st.sampled_from(["media", "start", "stop", "dtmf", "playedStream", "clearedAudio", "x"])
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
_JSON_FRAME = st.builds(
    lambda event, extra: json.dumps({"event": event} | extra),
    _EVENTS,
    st.dictionaries(
        st.sampled_from(["media", "start", "dtmf", "name", "streamId", "stop", "digit"]),
        _VALUES,
        max_size=3,
    ),
)
_FRAME = _JSON_FRAME | st.text(max_size=100) | st.binary(max_size=60)


@settings(
    max_examples=1,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(st.lists(st.lists(_FRAME, max_size=12), min_size=30, max_size=30))
async def test_fuzzed_frames_never_hurt_a_concurrent_good_call(tmp_path_factory, sockets):
    tmp_path = tmp_path_factory.mktemp("fuzz")
    script = CallerScript(lines=(CallerLine("hello", wait_for_agent=False),), hang_up_after=2.0)
    async with running_server(server_settings(tmp_path), AgentConfig(), quiet()) as app:
        good = {}

        async def good_call():
            good["result"] = await simulate(
                app.base_url, script, speak=lambda text: b"\xff" * 4000, call_id="good"
            )

        async def fuzz(i: int, frames: list):
            url = await socket_url(app.base_url, f"fuzz-{i}")
            async with open_client(url) as ws:
                await ws.send_message(start(f"fuzz-{i}"))
                with contextlib.suppress(ConnectionClosed):
                    for frame in frames:
                        await ws.send_message(frame)
                await read_up_to_sentinel(ws, app, f"fuzz-{i}")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(good_call)
            for i, frames in enumerate(sockets):
                nursery.start_soon(fuzz, i, frames)
        paths = await finished(app, len(sockets) + 1)
    assert not good["result"].stopped_by_agent
    for path in paths:
        recs = records(path)
        if recs[0]["call_id"] == "good":
            assert recs[-1]["reason"] in ("socket closed", "stop")
            assert recs[-1]["protocol_errors"] == {}


# -- drain ---------------------------------------------------------------------------------------


async def test_shutdown_drains_refuses_new_calls_and_ends_live_ones(tmp_path):
    app = create_app(server_settings(tmp_path, drain_timeout=0.5), AgentConfig(), quiet())
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_on_loopback(nursery, app, shutdown)
        url = await socket_url(base, "live")
        async with open_client(url) as ws:
            await ws.send_message(start("live"))
            with trio.fail_after(5):
                while "live" not in app.switchboard.live:
                    await trio.sleep(0.01)
            shutdown.set()
            async with httpx.AsyncClient() as client:
                health = await client.get(f"{base}/health")
                busy = await client.post(f"{base}/answer", data={"CallUUID": "late"})
            (path,) = await finished(app)
    assert health.status_code == 503
    assert "<Stream" not in busy.text and "<Hangup" in busy.text
    recs = records(path)
    assert recs[-1]["reason"] == "server shutdown"


# -- REST hang-up and transfer ------------------------------------------------------------------


class Ends(Quiet):
    def __init__(self, tool: str, arguments: str = "{}"):
        self.tool, self.arguments = tool, arguments

    async def complete(self, utterance, messages, link):
        await link.emit(ev.LlmText(utterance, "Goodbye. "))
        await link.emit(ev.LlmToolCall(utterance, self.tool, self.arguments, "c1"))
        await link.emit(ev.LlmDone(utterance))


async def agent_ends_call(tmp_path, tool, arguments="{}", fail=None, close_on_stop=True):
    """The agent ends the call; the caller's side closes on ``stop`` as Vobiz does (or stays open)."""
    from fixtures.fake_vobiz_rest import fake_vobiz_rest

    async with fake_vobiz_rest() as fake:
        providers = Providers(stt=Hears(), llm=Ends(tool, arguments), tts=Quiet())
        s = server_settings(
            tmp_path,
            vobiz_auth_id=fake.auth_id,
            vobiz_auth_token=fake.auth_token,
            vobiz_api_url=fake.url,
            validate_signatures=False,
        )
        async with running_server(s, AgentConfig(), providers) as app:
            app.switchboard.stop_grace = 0.5
            fake.live_calls["call-rest"] = {}
            if fail:
                fake.fail_next(fail, "no such call")
            url = await socket_url(app.base_url, "call-rest")
            seen = []
            async with open_client(url) as ws:
                await ws.send_message(start("call-rest"))
                await ws.send_message(media())
                with trio.fail_after(10), contextlib.suppress(ConnectionClosed):
                    while True:
                        message = json.loads(await ws.get_message())
                        seen.append(message["event"])
                        if message["event"] == "checkpoint":
                            name = message["name"]
                            await ws.send_message(
                                json.dumps({"event": "playedStream", "name": name})
                            )
                        if message["event"] == "stop" and close_on_stop:
                            break
            (path,) = await finished(app)
        return seen, fake.requests, records(path)


async def test_an_agent_hangup_is_one_stop_and_no_rest_call_when_the_stream_closes(tmp_path):
    seen, requests, recs = await agent_ends_call(tmp_path, "end_call")
    assert seen.count("stop") == 1
    assert requests == []
    assert notes(recs, "hangup") == [notes(recs, "hangup")[0] | {"via": "stop", "ok": True}]
    assert not notes(recs, "rest_hangup")


async def test_a_stream_left_open_after_stop_is_hung_up_through_the_rest_api(tmp_path):
    seen, requests, recs = await agent_ends_call(tmp_path, "end_call", close_on_stop=False)
    assert "stop" in seen
    assert [(r.method, r.path.rsplit("/", 2)[-2]) for r in requests] == [("DELETE", "call-rest")]
    assert notes(recs, "rest_hangup")[0]["ok"] is True
    assert not notes(recs, "hangup")


async def test_a_rest_failure_is_a_note_not_a_crash(tmp_path):
    seen, _, recs = await agent_ends_call(tmp_path, "end_call", fail=404, close_on_stop=False)
    assert "stop" in seen
    (note,) = notes(recs, "rest_hangup")
    assert note["ok"] is False and "no such call" in note["error"]


# -- reconnect -----------------------------------------------------------------------------------


async def test_a_reconnected_stream_continues_the_same_call_on_the_new_socket(tmp_path):
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    settings_ = server_settings(tmp_path, stream_retries=2)
    async with running_server(settings_, AgentConfig(), providers) as app:
        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{app.base_url}/answer", data={"CallUUID": "call-again"})
        assert 'maxRetries="2"' in reply.text
        url = stream_url(reply.text)
        async with open_client(url) as first:
            await first.send_message(start("call-again", "stream-1"))
            greeting = json.loads(await first.get_message())
            assert greeting["event"] == "playAudio"
        # The first socket dropped; Vobiz opens a new one with a fresh start.
        async with open_client(url) as second:
            await second.send_message(start("call-again", "stream-2"))
            await second.send_message(json.dumps({"event": "dtmf", "dtmf": {"digit": "5"}}))
            with trio.fail_after(5):
                while True:
                    frame = json.loads(await second.get_message())
                    if frame["event"] == "checkpoint":
                        break
            assert frame["streamId"] == "stream-2"
            assert len(app.switchboard.live) == 1
        (path,) = await finished(app)
    recs = records(path)
    assert [r["kind"] for r in recs].count("header") == 1
    assert notes(recs, "stream_lost") and notes(recs, "stream_reconnected")
    assert any(r.get("event") == "DtmfPressed" for r in recs)  # heard on the new socket
    assert recs[-1]["reason"].startswith("socket closed")


async def test_without_retries_a_dropped_socket_ends_the_call_at_once(tmp_path):
    async with running_server(server_settings(tmp_path), AgentConfig(), quiet()) as app:
        url = await socket_url(app.base_url, "call-once")
        async with open_client(url) as ws:
            await ws.send_message(start("call-once"))
        (path,) = await finished(app)
    recs = records(path)
    assert not notes(recs, "stream_lost")
    assert recs[-1]["reason"] == "socket closed"


async def test_an_agent_transfer_moves_the_call_through_the_rest_api(tmp_path):
    arguments = json.dumps({"to": "+15550100"})
    seen, requests, recs = await agent_ends_call(tmp_path, "transfer_call", arguments)
    (request,) = requests
    assert (request.method, request.path.rsplit("/", 2)[-2]) == ("POST", "call-rest")
    assert request.body["aleg_url"].endswith("/transfer?to=%2B15550100")
    assert notes(recs, "rest_transfer")[0]["ok"] is True
    commands = [r for r in recs if r["kind"] == "command"]
    assert commands[-1] == {
        "kind": "command",
        "t": commands[-1]["t"],
        "command": "Transfer",
        "to": "+15550100",
        "reason": "transfer_call",
    }
    assert "stop" not in seen  # Vobiz runs the transfer's XML; a stop would hang up first


async def test_the_transfer_answer_dials_the_number(tmp_path):
    async with (
        running_server(server_settings(tmp_path), AgentConfig(), quiet()) as app,
        httpx.AsyncClient() as client,
    ):
        reply = await client.post(f"{app.base_url}/transfer?to=%2B15550100")
    assert "<Dial><Number>+15550100</Number></Dial>" in reply.text


# -- media formats -------------------------------------------------------------------------------


async def test_an_l16_stream_is_read_big_endian_and_answered_little_endian(tmp_path):
    import numpy as np

    ear = Ear()
    providers = Providers(stt=ear, llm=Talker(), tts=Talker())
    settings_ = server_settings(tmp_path, media_format="audio/x-l16;rate=16000")
    async with running_server(settings_, AgentConfig(), providers) as app:
        async with httpx.AsyncClient() as client:
            reply = await client.post(f"{app.base_url}/answer", data={"CallUUID": "call-l16"})
        assert 'contentType="audio/x-l16;rate=16000"' in reply.text
        body = {
            "callId": "call-l16",
            "streamId": "s",
            "mediaFormat": {"encoding": "audio/x-l16", "sampleRate": 16000},
        }
        tone = (np.sin(np.arange(320) * 2 * np.pi * 500 / 16000) * 8000).astype(">i2")
        async with open_client(stream_url(reply.text)) as ws:
            await ws.send_message(json.dumps({"event": "start", "start": body}))
            for _ in range(5):  # 20 ms of big-endian L16 at 16 kHz each
                await ws.send_message(media(base64.b64encode(tone.tobytes()).decode()))
            frame = json.loads(await ws.get_message())
            with trio.fail_after(5):
                while ear.frames < 5:
                    await trio.sleep(0.01)
        await finished(app)
    assert frame["event"] == "playAudio"
    assert frame["media"]["contentType"] == "audio/x-l16"
    assert frame["media"]["sampleRate"] == 16000
    out = np.frombuffer(base64.b64decode(frame["media"]["payload"]), dtype="<i2")
    # Whole 20 ms frames at 16 kHz (a message carries up to five), less the upsampler's
    # 2 ms filter delay held back on the first
    assert 288 <= len(out) <= 1600 and (len(out) + 32) % 320 == 0
    # The agent's "voice" is mu-law 0x7f (about -0): little-endian samples stay near zero,
    # where big-endian bytes read as little-endian would not.
    assert np.abs(out).max() < 64
