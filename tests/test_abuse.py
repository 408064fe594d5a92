"""Attacks and careless clients against the real server over loopback sockets.

Each test is one reproduction from an adversarial run: it failed on the
server before its fix. ``docs/security.md`` lists them with what is expected.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import serving
import trio
import trio_websocket
from serving import running_server, start, wait_live
from stand_ins import Ear, Talker, quiet
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Request, TextMessage

from adapters.app.settings import ServerSettings
from adapters.ops import logs
from adapters.providers.interfaces import Providers
from adapters.providers.wsclient import open_client
from adapters.simulator.wire import stream_url
from engine.config import AgentConfig
from engine.replay import replay
from fixtures.processes import free_port, server_process


def settings(tmp_path: Path, **kw) -> ServerSettings:
    base = {"call_log_dir": tmp_path / "calls", "stream_secret": "a" * 32}
    return ServerSettings.from_env({}, **(base | kw))


async def answer(base: str, call_id: str, **form) -> httpx.Response:
    async with httpx.AsyncClient() as client:
        return await client.post(f"{base}/answer", data={"CallUUID": call_id, **form})


#: Up to 100 calls end at once here: more time than a single call needs.
finished = functools.partial(serving.finished, within=20)


@contextlib.asynccontextmanager
async def live_call(
    app, call_id: str
) -> AsyncIterator[tuple[str, trio_websocket.WebSocketConnection]]:
    """A call answered, its media socket open and started, and live: the socket's URL and it."""
    url = stream_url((await answer(app.base_url, call_id)).text)
    async with open_client(url) as ws:
        await ws.send_message(start(call_id))
        await wait_live(app, call_id)
        yield url, ws


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
        async with live_call(app, "victim") as (url, caller):
            assert await refused(url)  # the attacker's socket never reaches the call
            greeting = json.loads(await caller.get_message())  # the caller still hears the agent
            assert greeting["event"] == "playAudio"
            assert "victim" in app.switchboard.live
        (path,) = await finished(app)
    assert "refused media socket: the call's media socket is open" in caplog.text
    lines = path.read_text().split("\n")
    assert replay(lines).identical
    assert json.loads(lines[-2])["reason"] == "socket closed"


async def test_a_token_dies_with_its_call_and_answer_mints_no_new_token_for_it(tmp_path):
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        async with live_call(app, "done") as (url, _ws):
            live_again = await answer(app.base_url, "done")
        await finished(app)
        ended_again = await answer(app.base_url, "done")
        assert await refused(url)
        assert len(app.switchboard.finished_logs) == 1  # no second call, no second log
    assert live_again.status_code == ended_again.status_code == 409
    assert "<Stream" not in live_again.text + ended_again.text
    assert len(list((tmp_path / "calls").glob("*.jsonl"))) == 1


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
        async with live_call(app, "huge") as (_url, ws):
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.send_message("x" * (64 * 1024 + 1))
                await ws.get_message()  # the greeting's audio, then the close
                await ws.get_message()
            assert ws.closed is not None and ws.closed.code == 1009
        (path,) = await finished(app)
    lines = path.read_text().split("\n")
    assert replay(lines).identical and json.loads(lines[-2])["kind"] == "footer"


# -- 6. a killed server leaves a log that replays as far as it goes -------------------------------


async def test_a_server_killed_mid_call_leaves_a_log_replay_calls_incomplete(tmp_path, capsys):
    import replay as replay_cli

    port = free_port()
    env = {"CALL_LOG_DIR": str(tmp_path / "calls"), "STREAM_SECRET": "k" * 32}
    async with server_process(port, **env) as server:
        url = stream_url((await answer(f"http://127.0.0.1:{port}", "killed")).text)
        async with open_client(url) as ws:
            await ws.send_message(start("killed"))
            await ws.get_message()  # the greeting is on its way: the call is running
            (log,) = (tmp_path / "calls").glob("*.jsonl")
            server.kill()  # SIGKILL: no footer, no flush
            await server.wait()
    assert replay_cli.main([str(log)]) == 3
    assert "incomplete: no footer" in capsys.readouterr().out


# -- 4. unauthenticated answers cannot exhaust memory or hold connections ----------------------


def resident_kib() -> int:
    for line in Path("/proc/self/status").read_text().split("\n"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError("no VmRSS")


async def test_huge_answer_forms_are_refused_and_memory_stays_flat(tmp_path):
    async with running_server(settings(tmp_path, max_calls=10_000), AgentConfig(), quiet()) as app:
        body = b"CallUUID=big&From=" + b"9" * 400_000 + b"&To=" + b"8" * 400_000
        form = {"Content-Type": "application/x-www-form-urlencoded"}
        before = resident_kib()
        refused = 0
        async with httpx.AsyncClient() as client:
            for _ in range(60):
                # The server answers 413 and closes before the body is in: the client may
                # see either its 413 or its own write fail on the closed connection.
                with contextlib.suppress(httpx.TransportError):
                    reply = await client.post(f"{app.base_url}/answer", content=body, headers=form)
                    assert reply.status_code == 413
                refused += 1
        grown = resident_kib() - before
        assert app.switchboard.book.held == 0
    assert refused == 60
    assert grown < 20_000, f"{grown} KiB more after 60 oversized answers"


async def test_an_oversized_body_gets_413_and_a_silent_client_is_dropped(tmp_path, autojump_clock):
    from adapters.app.serving import READ_TIMEOUT

    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        parts = urlsplit(app.base_url)
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        await stream.send_all(
            b"POST /answer HTTP/1.1\r\nHost: x\r\nContent-Length: 800000\r\n"
            b"Content-Type: application/x-www-form-urlencoded\r\n\r\nCallUUID=a&From=999"
        )
        reply = b""
        with trio.fail_after(READ_TIMEOUT + 5):
            while chunk := await stream.receive_some(4096):
                reply += chunk
        await stream.aclose()
    assert reply.startswith(b"HTTP/1.1 413")


async def test_overlong_numbers_are_not_kept_and_a_bad_call_id_is_refused(tmp_path):
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        long_number = await answer(app.base_url, "ok-id", From="1" * 300, To="+15550002")
        long_id = await answer(app.base_url, "x" * 129)
        newline_id = await answer(app.base_url, "a\nb")
        url = stream_url(long_number.text)
        async with open_client(url) as ws:
            await ws.send_message(start("ok-id"))
            await wait_live(app, "ok-id")
        (path,) = await finished(app)
    assert long_id.status_code == newline_id.status_code == 400
    header = json.loads(path.read_text().split("\n")[0])
    assert header["caller"] == "" and header["callee"] == "+15550002"


async def test_a_slow_body_is_cut_off_by_the_body_deadline(tmp_path, autojump_clock):
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        parts = urlsplit(app.base_url)
        stream = await trio.open_tcp_stream(parts.hostname, parts.port)
        head = (
            "POST /answer HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\n\r\nCallUUID=slo"
        )
        await stream.send_all(head.encode())
        started = trio.current_time()
        with trio.fail_after(60):
            reply = await stream.receive_some(4096)
        waited = trio.current_time() - started
        await stream.aclose()
    assert reply.startswith(b"HTTP/1.1 408")
    assert waited <= 6  # the body deadline (5 s), not the client's patience


# -- 5. call logs: one file per call, never overwritten ------------------------------------------


async def test_call_ids_that_squash_alike_get_logs_of_their_own(tmp_path):
    ids = ["coll/x", "coll.x", "coll x", "coll_x"]
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        for call_id in ids:
            async with live_call(app, call_id):
                pass
        paths = await finished(app, len(ids))
    assert len(set(paths)) == len(ids) == len(list((tmp_path / "calls").glob("*.jsonl")))
    heads = {json.loads(p.read_text().split("\n")[0])["call_id"] for p in paths}
    assert heads == set(ids)


def test_a_log_is_created_never_truncated(tmp_path):
    import datetime

    from adapters.call.record import create_log, log_path

    wall = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)
    taken = log_path(tmp_path, "c-1", wall)
    taken.write_text("an earlier call's log\n")
    path, file = create_log(tmp_path, "c-1", wall)
    file.close()
    assert path != taken and path.name.endswith("-2.jsonl")
    assert taken.read_text() == "an earlier call's log\n"


async def test_a_huge_checkpoint_name_is_a_protocol_error_not_megabytes_of_log(tmp_path):
    async with running_server(settings(tmp_path), AgentConfig(), quiet()) as app:
        url = stream_url((await answer(app.base_url, "names")).text)
        async with open_client(url) as ws:
            await ws.send_message(start("names"))
            await ws.send_message(json.dumps({"event": "playedStream", "name": "n" * 60_000}))
        (path,) = await finished(app)
    assert path.stat().st_size < 20_000
    footer = json.loads(path.read_text().split("\n")[-2])
    assert footer["protocol_errors"] == {"bad_field_type": 1}


# -- 8. a draining server answers the last hang-up webhook before it exits ------------------------


async def test_a_draining_server_waits_for_vobizs_last_hangup_then_exits(tmp_path):
    from adapters.app.server import create_app
    from adapters.app.serving import serve_on_loopback

    app = create_app(settings(tmp_path, drain_timeout=0.2), AgentConfig(), quiet())
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_on_loopback(nursery, app, shutdown)
        url = stream_url((await answer(base, "last")).text)
        async with open_client(url) as ws:
            await ws.send_message(start("last"))
            await wait_live(app, "last")
            shutdown.set()
            await finished(app)  # the drain ended the call; its socket closes
        await trio.sleep(0.5)  # Vobiz's hang-up webhook comes a moment later
        async with httpx.AsyncClient() as client:
            hangup = await client.post(f"{base}/hangup", data={"CallUUID": "last"})
        exit_started = trio.current_time()
    assert hangup.status_code == 200
    assert trio.current_time() - exit_started < 2.0  # it left once the hang-up was in


async def test_a_newline_in_a_webhooks_call_id_cannot_forge_a_console_line(tmp_path, caplog):
    caplog.set_level(logging.INFO, "voice_agent")
    forged = "x\n2026-11-28 INFO voice_agent.call: [call victim] ended (hangup)"
    async with (
        running_server(settings(tmp_path), AgentConfig(), quiet()) as app,
        httpx.AsyncClient() as client,
    ):
        for path in ("/hangup", "/stream-status"):
            await client.post(f"{app.base_url}{path}", data={"CallUUID": forged})
    ours = [r for r in caplog.records if r.name.startswith("voice_agent")]
    text = [logs.formatter("text").format(r) for r in ours]
    lines = [json.loads(logs.formatter("json").format(r)) for r in ours]
    assert any("[call x\\n2026" in line for line in text)  # the call id: a field, escaped
    assert any(line.get("call_id", "").startswith("x\\n2026") for line in lines)
    assert not any("\n" in line for line in text)
