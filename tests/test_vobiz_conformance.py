"""The server against a simulated Vobiz as strict as Vobiz's own documentation.

Each test stands for a way a real call went wrong against the platform as
documented today (``docs/vobiz-protocol.md``): audio without a ``streamId``,
a reconnect refused five minutes in, a 24 kHz stream, webhooks that could not
be checked or could be replayed, a hang-up sent twice, a status callback that
leaked the stream token into the call log.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import time

import httpx
import pytest
import serving
import trio
from serving import running_server
from stand_ins import Ear, Hears, Talker

from adapters.app import cli
from adapters.app.server import create_app
from adapters.app.settings import ServerSettings
from adapters.ops import logs
from adapters.providers.interfaces import Providers
from adapters.simulator import vobiz_rules
from adapters.simulator.caller import simulate
from adapters.simulator.script import CallerScript
from adapters.simulator.wire import signed_headers
from engine.config import AgentConfig
from engine.replay import replay

TOKEN = "vobiz-auth-token"
LOUD = b"\x00" * 1600  # 0.2 s of full-scale mu-law, for a caller whose words do not matter


def settings(tmp_path, **kw) -> ServerSettings:
    base = {"call_log_dir": tmp_path / "calls", "stream_secret": "c" * 32}
    return ServerSettings.from_env({}, **(base | kw))


def signed(**kw) -> dict:
    return {"vobiz_auth_token": TOKEN, "validate_signatures": True} | kw


def records(path) -> list[dict]:
    lines = path.read_text(encoding="utf-8").split("\n")
    assert replay(lines).identical
    return [json.loads(line) for line in lines if line]


def notes(recs, what) -> list[dict]:
    return [r for r in recs if r["kind"] == "note" and r["what"] == what]


#: Some calls here are the simulated caller's whole script, pauses included.
finished = functools.partial(serving.finished, within=30)


def speak(text: str) -> bytes:
    return LOUD


# -- the media socket: what Vobiz accepts ----------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "problem"),
    [
        ({"event": "playAudio", "media": {}}, "streamId None"),
        ({"event": "playAudio", "streamId": "old", "media": {}}, "streamId 'old'"),
        (
            {"event": "playAudio", "streamId": "s", "media": {"contentType": "audio/x-l16"}},
            "sampleRate None",
        ),
        (
            {
                "event": "playAudio",
                "streamId": "s",
                "media": {"contentType": "audio/x-mulaw", "sampleRate": 16000, "payload": "/w=="},
            },
            "sampleRate 16000",
        ),
        ({"event": "checkpoint", "streamId": "s"}, "without a name"),
        ({"event": "clearAudio"}, "streamId None"),
        ({"event": "stop", "streamId": "x"}, "streamId 'x'"),
        ({"event": "mark", "streamId": "s"}, "unknown command 'mark'"),
    ],
)
def test_the_simulated_platform_refuses_what_vobiz_refuses(frame, problem):
    assert problem in vobiz_rules.refusal(json.dumps(frame), "s")


def test_the_simulated_platform_takes_documented_frames_and_nothing_after_stop():
    play = {
        "event": "playAudio",
        "streamId": "s",
        "media": {"contentType": "audio/x-l16", "sampleRate": 24000, "payload": "AAA="[:4]},
    }
    play["media"]["payload"] = "AAAA"  # 3 bytes of L16 would be half a sample; 4 chars = 3 bytes
    assert "payload of 3 bytes" in vobiz_rules.refusal(json.dumps(play), "s")
    play["media"]["payload"] = "AAAAAA=="  # 4 bytes: two samples
    assert vobiz_rules.refusal(json.dumps(play), "s") is None
    checkpoint = json.dumps({"event": "checkpoint", "streamId": "s", "name": "1.0"})
    assert vobiz_rules.refusal(checkpoint, "s") is None
    assert vobiz_rules.refusal(checkpoint, "s", stopped=True) == "checkpoint after stop"


async def test_a_whole_call_passes_the_strict_platform_and_audio_names_its_stream(tmp_path):
    providers = Providers(stt=Hears(at_frame=10), llm=Talker(), tts=Talker())
    async with running_server(settings(tmp_path), AgentConfig(greeting="Hi."), providers) as app:
        script = CallerScript(lines=(), hang_up_after=3.0)
        result = await simulate(app.base_url, script, speak=speak)
        (path,) = await finished(app)
    assert result.violations == ()
    assert len(result.played_checkpoints) >= 2  # the greeting and the reply were played out
    recs = records(path)
    assert [r["command"] for r in recs if r["kind"] == "command"].count("PlayAudio") >= 2


# -- reconnects: the token lives as long as its call ------------------------------------------


async def test_a_reconnect_long_after_the_answer_goes_on_with_the_new_stream(
    tmp_path, autojump_clock
):
    """Vobiz retries a dropped stream six minutes into a call: same call, same token, new id."""
    config = AgentConfig(greeting="Hi.", idle_timeout=10_000)
    minutes = 6 * 60
    # The caller's words come 2 s after the reconnect: the reply must use the new stream's id.
    providers = Providers(stt=Hears(at_frame=(minutes + 3) * 50), llm=Talker(), tts=Talker())
    async with running_server(settings(tmp_path, stream_retries=1), config, providers) as app:
        wall = time.time() - trio.current_time()
        app.switchboard.wall_clock = lambda: wall + trio.current_time()
        script = CallerScript(lines=(), hang_up_after=minutes + 6, drop_stream_at=minutes)
        result = await simulate(app.base_url, script, speak=speak)
        (path,) = await finished(app)
    assert result.sockets == 2
    assert result.violations == ()
    recs = records(path)
    assert notes(recs, "stream_lost") and notes(recs, "stream_reconnected")
    reply = [r for r in recs if r.get("command") == "PlayAudio" and r["t"] > minutes]
    assert reply, "the agent answered after the reconnect"
    assert recs[-1]["reason"].startswith("socket closed")


# -- start-up: what the stream can carry -------------------------------------------------------


def test_a_24_khz_stream_is_refused_at_start_up_with_what_to_use(tmp_path):
    with pytest.raises(ValueError, match=r"not to set 24 kHz.*audio/x-l16;rate=16000"):
        create_app(
            settings(tmp_path, media_format="audio/x-l16;rate=24000"),
            AgentConfig(),
            Providers(stt=Ear(), llm=Talker(), tts=Talker()),
        )


def test_serve_exits_with_the_reason_instead_of_a_traceback(monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("MEDIA_FORMAT", "audio/x-l16;rate=24000")
    monkeypatch.setenv("CALL_LOG_DIR", str(tmp_path))
    assert cli.main(["serve", "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("voice-agent: MEDIA_FORMAT='audio/x-l16;rate=24000'")
    assert "Traceback" not in err


# -- webhooks: checked, explained, never replayed ---------------------------------------------


async def test_enforced_signatures_are_announced_and_a_refusal_says_what_to_fix(tmp_path, caplog):
    caplog.set_level(logging.INFO, "voice_agent.server")
    async with (
        running_server(
            settings(tmp_path, **signed()), AgentConfig(), Providers(Ear(), Talker(), Talker())
        ) as app,
        httpx.AsyncClient() as client,
    ):
        unsigned = await client.post(f"{app.base_url}/answer", data={"CallUUID": "c1"})
        url = f"{app.base_url}/answer"
        wrong = signed_headers(url, "some other token")
        badly = await client.post(url, data={"CallUUID": "c1"}, headers=wrong)
    assert unsigned.status_code == badly.status_code == 403
    text = caplog.text
    assert "webhook signatures ENFORCED" in text
    assert "no X-Vobiz-Signature-V3/-V2 header" in text and "callback authentication" in text
    assert f"does not match {url}" in text and "PUBLIC_URL" in text


async def test_a_sub_account_callback_signed_by_the_parent_account_is_accepted(tmp_path):
    s = settings(tmp_path, **signed(vobiz_parent_auth_token="parent-token"))
    async with (
        running_server(s, AgentConfig(), Providers(Ear(), Talker(), Talker())) as app,
        httpx.AsyncClient() as client,
    ):
        url = f"{app.base_url}/answer"
        parent = signed_headers(url, "parent-token")
        ma = {
            "X-Vobiz-Signature-MA-V3": parent["X-Vobiz-Signature-V3"],
            "X-Vobiz-Signature-V3-Nonce": parent["X-Vobiz-Signature-V3-Nonce"],
        }
        reply = await client.post(url, data={"CallUUID": "c-ma"}, headers=ma)
    assert reply.status_code == 200 and "<Stream" in reply.text


async def test_a_captured_signed_answer_sent_again_is_refused(tmp_path):
    async with (
        running_server(
            settings(tmp_path, **signed()), AgentConfig(), Providers(Ear(), Talker(), Talker())
        ) as app,
        httpx.AsyncClient() as client,
    ):
        url = f"{app.base_url}/answer"
        headers = signed_headers(url, TOKEN)
        first = await client.post(url, data={"CallUUID": "c-1"}, headers=headers)
        again = await client.post(url, data={"CallUUID": "c-2"}, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 403 and again.text == "replayed request"


# -- hang-ups: who may end a live call ---------------------------------------------------------


@contextlib.asynccontextmanager
async def call_in_progress(app, script: CallerScript, **kw):
    """A simulated call running in the background; yields once the server holds it."""
    async with trio.open_nursery() as nursery:
        out: dict = {}

        async def call() -> None:
            out["result"] = await simulate(
                app.base_url, script, speak=speak, call_id="live-1", **kw
            )

        nursery.start_soon(call)
        with trio.fail_after(10):
            while "live-1" not in app.switchboard.live:
                await trio.sleep(0.01)
        yield out


HANGUP = {"CallUUID": "live-1", "Event": "Hangup", "HangupCause": "NORMAL_CLEARING"}


async def test_an_unsigned_hangup_leaves_a_live_call_alone_until_its_socket_closes(tmp_path):
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    s = settings(tmp_path, stream_retries=2)  # a lost socket would wait for a reconnect...
    async with running_server(s, AgentConfig(greeting="Hi."), providers) as app:
        async with call_in_progress(app, CallerScript(lines=(), hang_up_after=2.0)):
            async with httpx.AsyncClient() as client:
                forged = await client.post(f"{app.base_url}/hangup", data=HANGUP)
            await trio.sleep(0.5)
            assert "live-1" in app.switchboard.live  # the caller is still on the line
        (path,) = await finished(app)
    assert forged.status_code == 200
    recs = records(path)
    # ...but the reported hang-up ends it the moment the socket goes, with no wait.
    assert recs[-1]["reason"] == "hangup webhook"
    assert not notes(recs, "stream_lost")
    assert recs[-1]["t"] > 1.5  # the caller's own hang-up at 2 s, not the forged one


async def test_a_signed_hangup_ends_a_live_call_and_cannot_be_sent_twice(tmp_path):
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    async with running_server(settings(tmp_path, **signed()), AgentConfig(), providers) as app:
        script = CallerScript(lines=(), hang_up_after=30.0)
        async with call_in_progress(app, script, auth_token=TOKEN):
            url = f"{app.base_url}/hangup"
            headers = signed_headers(url, TOKEN)
            async with httpx.AsyncClient() as client:
                first = await client.post(url, data=HANGUP, headers=headers)
                (path,) = await finished(app)
                again = await client.post(url, data=HANGUP, headers=headers)
    assert first.status_code == 200
    assert again.status_code == 403
    recs = records(path)
    assert recs[-1]["reason"] == "hangup webhook"
    assert recs[-1]["t"] < 10


# -- stream status callbacks ---------------------------------------------------------------------


async def test_stream_trouble_is_kept_in_the_log_without_the_stream_token(tmp_path, caplog):
    caplog.set_level(logging.INFO, "voice_agent")
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    async with running_server(settings(tmp_path, **signed()), AgentConfig(), providers) as app:
        script = CallerScript(lines=(), hang_up_after=1.5)
        async with call_in_progress(app, script, auth_token=TOKEN):
            url = f"{app.base_url}/stream-status"
            service_url = f"{app.base_url}/ws?token=the-live-stream-token"
            status = {
                "CallUUID": "live-1",
                "StreamID": "stream-x",
                "Event": "DroppedStream",
                "Error": "connection disconnected with the remote service",
                "ServiceURL": service_url,
            }
            async with httpx.AsyncClient() as client:
                ok = await client.post(url, data=status, headers=signed_headers(url, TOKEN))
        (path,) = await finished(app)
    assert ok.status_code == 200
    (note,) = notes(records(path), "stream_status")
    assert note["Event"] == "DroppedStream"
    assert note["Error"] == "connection disconnected with the remote service"
    assert "the-live-stream-token" not in path.read_text()
    assert "stream trouble" in caplog.text


async def test_no_log_line_and_no_call_log_holds_the_live_stream_token_or_a_key(tmp_path, caplog):
    """Every line written while a signed call runs, as JSON: the call's lines carry its id as a
    field, and neither they nor the call log hold its stream token (not even as the status
    callback's ``ServiceURL`` brings it back) or a key."""
    caplog.set_level(logging.INFO)
    written = io.StringIO()
    handler = logging.StreamHandler(written)
    handler.setFormatter(logs.formatter("json"))
    logging.getLogger().addHandler(handler)
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    try:
        async with running_server(settings(tmp_path, **signed()), AgentConfig(), providers) as app:
            board = app.switchboard
            board.wall_clock = lambda: 1_900_000_000.0  # so the test knows the token minted
            live_token = board.tokens.issue("live-1", board.wall_clock(), board.token_lifetime())
            async with call_in_progress(
                app, CallerScript(lines=(), hang_up_after=1.5), auth_token=TOKEN
            ):
                url = f"{app.base_url}/stream-status"
                status = {
                    "CallUUID": "live-1",
                    "StreamID": "stream-1",
                    "Event": "DroppedStream",
                    "ServiceURL": f"{board.settings.ws_base}/ws?token={live_token}",
                }
                async with httpx.AsyncClient() as client:
                    await client.post(url, data=status, headers=signed_headers(url, TOKEN))
            (path,) = await finished(app)
    finally:
        logging.getLogger().removeHandler(handler)
    lines = [json.loads(line) for line in written.getvalue().splitlines()]
    calls = [line for line in lines if line["logger"] == "voice_agent.call"]
    assert calls and all(line["call_id"] == "live-1" for line in calls)
    assert any(
        line.get("call_id") == "live-1" for line in lines if line["logger"] != "voice_agent.call"
    )
    assert any(
        "POST /answer" in line["message"]
        for line in lines
        if line["logger"] == "voice_agent.access"
    )
    everything = written.getvalue() + path.read_text()
    for secret in (live_token, live_token.rsplit(".", 1)[1], TOKEN, "c" * 32):
        assert secret not in everything


async def test_an_unsigned_stream_status_never_writes_into_a_call_log(tmp_path):
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    async with running_server(settings(tmp_path), AgentConfig(), providers) as app:
        script = CallerScript(lines=(), hang_up_after=1.0)
        async with call_in_progress(app, script), httpx.AsyncClient() as client:
            await client.post(
                f"{app.base_url}/stream-status",
                data={"CallUUID": "live-1", "Event": "StopStream", "Name": "x" * 10_000},
            )
        (path,) = await finished(app)
    assert not notes(records(path), "stream_status")


# -- voice-agent doctor --------------------------------------------------------------------------


def doctor_report(monkeypatch, capsys, env: dict[str, str], status: int) -> str:
    """What ``voice-agent doctor`` prints with ``env`` set; it must exit with ``status``."""
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert cli.main(["doctor"]) == status
    return capsys.readouterr().out


def test_doctor_explains_enforced_signatures_and_names_each_problem(monkeypatch, capsys):
    for key in ("PUBLIC_URL", "VALIDATE_SIGNATURES", "DEEPGRAM_API_KEY", "OPENAI_API_KEY"):
        monkeypatch.delenv(key, raising=False)
    env = {
        "VOBIZ_AUTH_ID": "MA_TEST",
        "VOBIZ_AUTH_TOKEN": "a-secret-auth-token-value",
        "MEDIA_FORMAT": "audio/x-l16;rate=24000",
    }
    out = doctor_report(monkeypatch, capsys, env, status=1)
    assert "ENFORCED" in out and "callback authentication" in out
    assert "PROBLEM  PUBLIC_URL" in out and "PROBLEM  MEDIA_FORMAT" in out
    assert "a-secret-auth-token-value" not in out and "alue" not in out
    assert out.rstrip().endswith("2 problem(s)")


def test_doctor_is_content_with_a_sound_public_setup(monkeypatch, capsys):
    env = {
        "PUBLIC_URL": "https://agent.example.com",
        "VALIDATE_SIGNATURES": "false",
        "MEDIA_FORMAT": "audio/x-mulaw;rate=8000",
    }
    out = doctor_report(monkeypatch, capsys, env, status=0)
    assert "wss://agent.example.com/ws" in out and "not checked" in out
