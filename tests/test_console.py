"""The console's server side over real loopback sockets: who may use it, the live feed, the logs.

The page itself runs in Chromium in ``test_console_browser.py``; these tests talk
to the same routes with an HTTP client and a WebSocket client.
"""

import json
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest
import trio
import trio_websocket
from serving import running_server
from stand_ins import Hears, Talker

from adapters.app.cli import main as voice_agent
from adapters.app.settings import ServerSettings
from adapters.call.recording import Recording
from adapters.console import access, install
from adapters.console.callview import call_view
from adapters.console.feed import ConsoleCalls, feed_record
from adapters.console.inspect import read_records
from adapters.console.statechart import changes, state_ids, svg
from adapters.media.audio import ulaw_encode
from adapters.providers.interfaces import Providers
from adapters.providers.wsclient import open_client
from adapters.simulator.caller import simulate
from adapters.simulator.script import CallerLine, CallerScript
from engine.calllog import read_log, split_log
from engine.config import AgentConfig

LOCAL = {"host": "127.0.0.1:8765"}


@pytest.mark.parametrize(
    ("remote", "headers", "args", "token", "websocket", "refused"),
    [
        ("127.0.0.1", LOCAL, {}, None, False, None),
        ("::1", {"host": "[::1]:8765"}, {}, None, False, None),
        ("127.0.0.1", {"host": "localhost:8765"}, {}, None, False, None),
        ("192.0.2.9", LOCAL, {}, None, False, "not from this machine"),
        # a tunnel or proxy on this machine connects from loopback but says whom it forwards
        ("127.0.0.1", LOCAL | {"X-Forwarded-For": "203.0.113.5"}, {}, None, False, "proxy"),
        ("127.0.0.1", LOCAL | {"Forwarded": "for=203.0.113.5"}, {}, None, False, "proxy"),
        # a DNS-rebinding page reaches loopback under its own name
        ("127.0.0.1", {"host": "evil.example:8765"}, {}, None, False, "Host"),
        # the token lets a forwarded request in, and only the right token
        ("127.0.0.1", LOCAL | {"X-Forwarded-For": "x"}, {"token": "s3cret"}, "s3cret", False, None),
        ("192.0.2.9", {"authorization": "Bearer s3cret"}, {}, "s3cret", False, None),
        ("192.0.2.9", LOCAL, {"token": "guess"}, "s3cret", False, "not from this machine"),
        # any page the developer has open may open a WebSocket to loopback: origin must match
        ("127.0.0.1", LOCAL | {"origin": "http://127.0.0.1:8765"}, {}, None, True, None),
        ("127.0.0.1", LOCAL | {"origin": "https://evil.example"}, {}, None, True, "console page"),
        ("127.0.0.1", LOCAL, {}, None, True, "console page"),
    ],
)
def test_who_may_use_the_console(remote, headers, args, token, websocket, refused):
    reason = access.refusal(remote, headers, args, token, websocket)
    if refused is None:
        assert reason is None
    else:
        assert reason is not None and refused in reason


def test_the_state_chart_is_drawn_from_the_machine():
    drawing = svg()
    for state in state_ids():
        assert f'data-state="{state}"' in drawing
    for a, b in changes():
        assert f'data-from="{a}" data-to="{b}"' in drawing
    assert ("listening", "thinking") in changes() and ("ended", "greeting") not in changes()


def test_a_recording_lays_the_agent_as_the_phone_plays_it(tmp_path):
    recording = Recording()
    caller = bytes(ulaw_encode(np.full(160, 1000, np.int16)))
    for n in range(1, 51):  # one second of caller frames, each received as it ends
        recording.caller(caller, n * 0.02)
    agent = bytes(ulaw_encode(np.full(8000, -1000, np.int16)))
    recording.agent(agent, 0.5)  # one second of agent audio, sent at once at 0.5 s
    recording.agent(agent, 0.6)  # queued behind it: plays from 1.5 s
    recording.clear(2.0)  # the caller barged in: nothing after 2.0 s was played
    recording.write_wav(tmp_path / "call.wav", 3.0)
    with wave.open(str(tmp_path / "call.wav")) as wav:
        assert (wav.getnchannels(), wav.getframerate()) == (2, 8000)
        samples = np.frombuffer(wav.readframes(wav.getnframes()), "<i2").reshape(-1, 2)
    assert len(samples) == 16000  # the agent's track was cut at 2.0 s; the caller's is 1 s
    assert (samples[:8000, 0] > 0).all() and (samples[8000:, 0] == 0).all()
    assert (samples[:4000, 1] == 0).all() and (samples[4000:16000, 1] < 0).all()


def test_the_inspector_view_of_a_barge_in():
    view = call_view(read_records(Path("fixtures/calls/barge_in_new_turn.jsonl")))
    assert [b["state"] for b in view["bands"]] == [
        "greeting",
        "listening",
        "thinking",
        "speaking",
        "interrupted",
        "thinking",
        "ended",
    ]
    assert view["barge_ins"] == [{"speech_at": 5.4, "clear_at": 5.5, "latency": 0.1}]
    assert [m["kind"] for m in view["marks"]] == ["barge_in", "clear"]
    texts = {a["text"]: a for a in view["agent"]}
    assert texts["We open at nine."]["heard"]
    assert not texts["On Sundays we rest."]["played"]  # synthesized, never sent before the clear
    assert [c["text"] for c in view["caller"]] == ["What are your opening hours?", "And on Sunday?"]
    assert view["finished"] and view["turns"][0]["voice_to_voice"] == 0.8


def test_the_feed_keeps_only_the_consoles_calls_and_never_the_audio_bytes():
    calls = ConsoleCalls()
    mine = calls.new_call()
    calls.listen("from-vobiz", {"kind": "header"})
    record = {"kind": "command", "command": "PlayAudio", "audio": {"bytes": 2, "b64": "AAA="}}
    calls.listen(mine, record)
    assert calls.subscribe("from-vobiz") is None
    backlog, _channel = calls.subscribe(mine)
    assert backlog == [{"kind": "command", "command": "PlayAudio", "audio": {"bytes": 2}}]


def _settings(tmp_path: Path) -> ServerSettings:
    return ServerSettings.from_env(
        {}, call_log_dir=tmp_path / "calls", stream_secret="c" * 32, record_audio=True
    )


def _providers() -> Providers:
    return Providers(stt=Hears(at_frame=25, text="a table for two"), llm=Talker(), tts=Talker())


SCRIPT = CallerScript(lines=(CallerLine("a table for two"),), hang_up_after=2.5)


def _silence(_text: str) -> bytes:
    return b"\xff" * 1600


async def test_the_feed_follows_a_console_call_from_header_to_footer(tmp_path):
    async with running_server(_settings(tmp_path), AgentConfig(), _providers()) as app:
        calls = install(app)
        base = app.base_url
        call_id = calls.new_call()
        feed_url = base.replace("http://", "ws://") + f"/console/api/feed?call={call_id}"
        records: list[dict] = []
        async with trio.open_nursery() as nursery:

            async def follow() -> None:
                async with open_client(feed_url, headers=[(b"Origin", base.encode())]) as feed:
                    while True:
                        try:
                            records.append(json.loads(await feed.get_message()))
                        except trio_websocket.ConnectionClosed:
                            return

            nursery.start_soon(follow)
            with trio.fail_after(30):
                await simulate(base, SCRIPT, speak=_silence, call_id=call_id)
                while not records or records[-1]["kind"] != "footer":
                    await trio.sleep(0.02)
        (log,) = (tmp_path / "calls").glob("*.jsonl")
        lines, _ = split_log(log.read_text())
        written = [r for _, r in read_log(lines)]
        # every record, in order; the recorded audio bytes stay in the log
        assert any("b64" in r.get("audio", {}) for r in written)
        assert records == [feed_record(r) for r in written]
        assert log.with_suffix(".wav").is_file()

        async with httpx.AsyncClient(base_url=base) as http:
            found = (await http.get(f"/console/api/calls/{call_id}")).json()
            assert found["log"] == log.name
            listed = (await http.get("/console/api/logs")).json()["logs"]
            assert [entry["name"] for entry in listed] == [log.name]
            assert listed[0]["audio"] and listed[0]["finished"]
            view = (await http.get(f"/console/api/logs/{log.name}")).json()
            assert view["call"]["call_id"] == call_id and view["audio"]["channels"] == 2
            wav = await http.get(f"/console/api/logs/{log.name}/audio")
            assert wav.headers["content-type"] == "audio/wav" and wav.content[:4] == b"RIFF"
            for bad in ("..%2F..%2Fetc%2Fpasswd", ".hidden.jsonl", "nothing.jsonl"):
                assert (await http.get(f"/console/api/logs/{bad}")).status_code == 404


async def test_the_feed_refuses_other_pages_vobiz_calls_and_proxies(tmp_path):
    async with running_server(_settings(tmp_path), AgentConfig(), _providers()) as app:
        calls = install(app)
        base = app.base_url
        mine = calls.new_call()
        ws = base.replace("http://", "ws://")

        async def refused(url: str, headers: list[tuple[str, str]]) -> None:
            with pytest.raises(trio_websocket.HandshakeError):
                async with open_client(url, [(k.encode(), v.encode()) for k, v in headers]):
                    pass

        await refused(f"{ws}/console/api/feed?call={mine}", [("Origin", "https://evil.example")])
        await refused(f"{ws}/console/api/feed?call={mine}", [])
        await refused(f"{ws}/console/api/feed?call=from-vobiz", [("Origin", base)])
        forwarded = [("Origin", base), ("X-Forwarded-For", "203.0.113.5")]
        await refused(f"{ws}/console/api/feed?call={mine}", forwarded)
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/console/")).status_code == 200
            tunnelled = await http.get("/console/api/logs", headers={"X-Forwarded-For": "x"})
            assert tunnelled.status_code == 403 and "CONSOLE_TOKEN" in tunnelled.text
            # a cross-site form can post, but not JSON: it cannot start console calls
            form = await http.post("/console/api/calls", data={"a": "b"})
            assert form.status_code == 415


async def test_a_console_token_lets_a_forwarded_request_in(tmp_path):
    async with running_server(_settings(tmp_path), AgentConfig(), _providers()) as app:
        install(app, token="t0ken-for-the-tunnel")
        async with httpx.AsyncClient(base_url=app.base_url) as http:
            forwarded = {"X-Forwarded-For": "203.0.113.5"}
            assert (await http.get("/console/api/logs", headers=forwarded)).status_code == 403
            bearer = forwarded | {"Authorization": "Bearer t0ken-for-the-tunnel"}
            assert (await http.get("/console/api/logs", headers=bearer)).status_code == 200
            query = await http.get(
                "/console/api/logs?token=t0ken-for-the-tunnel", headers=forwarded
            )
            assert query.status_code == 200


def test_the_inspector_says_why_a_log_cannot_be_read(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"kind":"header","schema":2}\n{not json\n')
    assert voice_agent(["inspect", str(bad)]) == 2
    assert "line 2: not JSON" in capsys.readouterr().err
