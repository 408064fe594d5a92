"""Attacks and careless clients against the real server over loopback sockets.

Each test is one reproduction from an adversarial run: it failed on the
server before its fix. ``docs/security.md`` lists them with what is expected.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import socket
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import trio
import trio_websocket
from serving import running_server
from stand_ins import Ear, Talker, quiet
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from adapters.runner import Providers
from adapters.settings import ServerSettings
from adapters.wsclient import open_client
from engine.config import AgentConfig
from engine.replay import replay
from fixtures.simulator import stream_url


def settings(tmp_path: Path, **kw) -> ServerSettings:
    base = {"call_log_dir": tmp_path / "calls", "stream_secret": "a" * 32}
    return ServerSettings.from_env({}, **(base | kw))


def start(call_id: str, stream_id: str = "stream-1") -> str:
    body = {"callId": call_id, "streamId": stream_id, "mediaFormat": {"encoding": "audio/x-mulaw"}}
    return json.dumps({"event": "start", "start": body})


async def answer(base: str, call_id: str, **form) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{base}/answer", data={"CallUUID": call_id, **form})


async def wait_live(app, call_id: str) -> None:
    with trio.fail_after(10):
        while call_id not in app.hub.live:
            await trio.sleep(0.01)


async def finished(app, count: int = 1) -> list[Path]:
    with trio.fail_after(20):
        while len(app.hub.finished) < count:
            await trio.sleep(0.01)
    return list(app.hub.finished)


async def refused(url: str) -> bool:
    """Whether the server refuses a WebSocket to ``url`` at the handshake."""
    try:
        async with open_client(url):
            return False
    except trio_websocket.HandshakeError:
        return True


# -- 1. a live call cannot be taken over ---------------------------------------------------------


async def test_a_second_socket_with_a_live_calls_token_is_refused(tmp_path, caplog):
    providers = Providers(stt=Ear(), llm=Talker(), tts=Talker())
    async with running_server(settings(tmp_path), AgentConfig(greeting="Hi."), providers) as app:
        url = stream_url((await answer(app.base_url, "victim")).text)
        async with open_client(url) as caller:
            await caller.send_message(start("victim"))
            await wait_live(app, "victim")
            assert await refused(url)  # the attacker's socket never reaches the call
            greeting = json.loads(await caller.get_message())  # the caller still hears the agent
            assert greeting["event"] == "playAudio"
            assert "victim" in app.hub.live
        (path,) = await finished(app)
    assert "refused media socket: the call's media socket is open" in caplog.text
    lines = path.read_text().split("\n")
    assert replay(lines).identical
    assert json.loads(lines[-2])["reason"] == "socket closed"


async def test_a_token_dies_with_its_call_and_answer_mints_no_new_token_for_it(tmp_path):
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        url = stream_url((await answer(app.base_url, "done")).text)
        async with open_client(url) as ws:
            await ws.send_message(start("done"))
            await wait_live(app, "done")
            live_again = await answer(app.base_url, "done")
        await finished(app)
        ended_again = await answer(app.base_url, "done")
        assert await refused(url)
        assert len(app.hub.finished) == 1  # no second call, no second log
    assert live_again.status_code == ended_again.status_code == 409
    assert "<Stream" not in live_again.text + ended_again.text
    assert len(list((tmp_path / "calls").iterdir())) == 1


# -- 3. MAX_CALLS counts answered calls too -------------------------------------------------------


async def test_max_calls_counts_answered_calls_whose_socket_has_not_come_yet(tmp_path):
    async with running_server(settings(tmp_path, max_calls=5), AgentConfig(), quiet()) as app:
        replies = [await answer(app.base_url, f"burst-{i}") for i in range(20)]
        async with httpx.AsyncClient() as client:
            health = (await client.get(f"{app.base_url}/health")).json()
    streams = [r for r in replies if ET.fromstring(r.text).find("Stream") is not None]
    busy = [r for r in replies if ET.fromstring(r.text).find("Hangup") is not None]
    assert len(streams) == 5 and len(busy) == 15
    assert health["held_calls"] == 5


# -- 2. a socket the server closes is freed even while the client keeps sending ----------------


def open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


MEDIA = json.dumps({"event": "media", "media": {"payload": "/" * 212 + "w=="}})


async def burst_and_leave(url: str, frames: list[str]) -> None:
    """A careless client: one write of all its frames, then it hangs up without reading."""
    parts = urlsplit(url)
    stream = await trio.open_tcp_stream(parts.hostname, parts.port)
    ws = WSConnection(ConnectionType.CLIENT)
    await stream.send_all(ws.send(Request(host=parts.netloc, target=f"{parts.path}?{parts.query}")))
    while not any(isinstance(e, AcceptConnection) for e in ws.events()):
        ws.receive_data(await stream.receive_some(65536))
    await stream.send_all(b"".join(ws.send(TextMessage(frame)) for frame in frames))
    await stream.aclose()


async def test_a_client_that_keeps_sending_after_the_server_ends_its_call_leaks_nothing(tmp_path):
    """The call ends (a ``stop``) with 30 frames behind it, past hypercorn's 10-message queue."""
    async with running_server(settings(tmp_path, max_calls=200), AgentConfig(), quiet()) as app:
        await answer(app.base_url, "warm-up")
        baseline = open_descriptors()
        for i in range(100):
            call_id = f"burst-{i}"
            url = stream_url((await answer(app.base_url, call_id)).text)
            stop = json.dumps({"event": "stop"})
            await burst_and_leave(url, [start(call_id), stop] + [MEDIA] * 30)
        await finished(app, 100)
        with trio.fail_after(10):
            while open_descriptors() > baseline:
                await trio.sleep(0.05)


# -- 8. a message bigger than the protocol needs closes the socket ------------------------------


async def test_a_message_over_64_kib_closes_the_socket_and_the_call_keeps_its_log(tmp_path):
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        url = stream_url((await answer(app.base_url, "huge")).text)
        async with open_client(url) as ws:
            await ws.send_message(start("huge"))
            await wait_live(app, "huge")
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.send_message("x" * (64 * 1024 + 1))
                await ws.get_message()  # the greeting's audio, then the close
                await ws.get_message()
            assert ws.closed is not None and ws.closed.code == 1009
        (path,) = await finished(app)
    lines = path.read_text().split("\n")
    assert replay(lines).identical and json.loads(lines[-2])["kind"] == "footer"


# -- 6. a killed server leaves a log that replays as far as it goes -------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


async def test_a_server_killed_mid_call_leaves_a_log_replay_calls_incomplete(tmp_path, capsys):
    import replay as replay_cli

    port = free_port()
    env = os.environ | {"CALL_LOG_DIR": str(tmp_path / "calls"), "STREAM_SECRET": "k" * 32}
    for key in ("DEEPGRAM_API_KEY", "OPENAI_API_KEY", "VOBIZ_AUTH_TOKEN", "PUBLIC_URL"):
        env.pop(key, None)
    command = [sys.executable, "-m", "adapters.cli", "serve", "--port", str(port)]
    base = f"http://127.0.0.1:{port}"
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(trio.run_process, command, env=env, check=False)
        )
        try:
            with trio.fail_after(60):
                while True:
                    with contextlib.suppress(httpx.TransportError):
                        async with httpx.AsyncClient() as client:
                            if (await client.get(f"{base}/health")).status_code == 200:
                                break
                    await trio.sleep(0.1)
            url = stream_url((await answer(base, "killed")).text)
            async with open_client(url) as ws:
                await ws.send_message(start("killed"))
                await ws.get_message()  # the greeting is on its way: the call is running
                (log,) = (tmp_path / "calls").iterdir()
                server.kill()  # SIGKILL: no footer, no flush
                await server.wait()
        finally:
            nursery.cancel_scope.cancel()
    assert replay_cli.main([str(log)]) == 3
    assert "incomplete: no footer" in capsys.readouterr().out
