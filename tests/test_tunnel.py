"""Reaching the server from a phone: ngrok discovery, ``serve --tunnel``, ``call`` without PUBLIC_URL."""

import importlib.util
import os
import signal
import subprocess
import sys

import httpx
import pytest
import trio
from serving import running_server
from stand_ins import quiet

from adapters.app.outbound import place_call
from adapters.app.settings import ServerSettings
from adapters.app.tunnel import TunnelError, forwards_to, open_tunnel, public_url_of
from engine.config import AgentConfig
from fixtures.fake_ngrok import fake_ngrok_api, tunnel_to
from fixtures.fake_vobiz_rest import fake_vobiz_rest


@pytest.mark.parametrize(
    ("addr", "port", "ours"),
    [
        ("http://localhost:8000", 8000, True),
        ("localhost:8000", 8000, True),
        ("8000", 8000, True),
        ("http://127.0.0.1:8000", 8000, True),
        ("http://[::1]:8000", 8000, True),
        ("http://localhost:8001", 8000, False),
        ("http://192.0.2.7:8000", 8000, False),  # another machine's port 8000 is not ours
        ("file:///srv", 8000, False),
    ],
)
def test_which_ngrok_addresses_reach_our_port(addr, port, ours):
    assert forwards_to(addr, port) is ours


async def test_a_running_agents_tunnel_to_our_port_is_used():
    tunnels = [
        tunnel_to(3000, "https://other.ngrok.example"),
        tunnel_to(8123, "http://plain.ngrok.example", proto="http"),
        tunnel_to(8123, "https://ours.ngrok.example"),
    ]
    async with fake_ngrok_api(tunnels) as ngrok:
        tunnel = await open_tunnel(8123, ngrok.url)
    assert tunnel.public_url == "https://ours.ngrok.example"
    assert ngrok.url in tunnel.source and tunnel.close is None
    assert not ngrok.opened


async def test_an_agent_without_our_tunnel_is_asked_for_one():
    async with fake_ngrok_api([tunnel_to(3000, "https://other.ngrok.example")]) as ngrok:
        tunnel = await open_tunnel(8123, ngrok.url)
    assert tunnel.public_url == "https://opened-8123.ngrok.example"
    assert ngrok.opened == [{"name": "voice-agent-8123", "proto": "http", "addr": "8123"}]


async def test_an_agent_that_will_not_open_one_says_what_to_run():
    async with fake_ngrok_api([tunnel_to(3000, "https://other.ngrok.example")], False) as ngrok:
        with pytest.raises(TunnelError) as info:
            await open_tunnel(8123, ngrok.url)
    message = str(info.value)
    assert "no https tunnel to port 8123" in message and "ngrok http 8123" in message
    assert "https://other.ngrok.example -> http://localhost:3000" in message
    assert "tunnel session limit reached" in message


async def test_no_agent_and_no_pyngrok_is_a_clear_error():
    if importlib.util.find_spec("pyngrok") is not None:
        pytest.skip("pyngrok is installed here: it would try to start ngrok")
    closed = await _closed_port()
    with pytest.raises(TunnelError) as info:
        await open_tunnel(8123, f"http://127.0.0.1:{closed}")
    message = str(info.value)
    assert f"no ngrok agent answers at http://127.0.0.1:{closed}" in message
    assert "ngrok http 8123" in message and "vobiz-voice-agent[tunnel]" in message


async def _closed_port() -> int:
    """A loopback port nobody listens on (bound, then released)."""
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return port


def _env(**extra: str) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("VOBIZ_", "OPENAI_", "DEEPGRAM_")) and k != "PUBLIC_URL"
    }
    return env | extra


async def test_serve_with_tunnel_prints_the_urls_and_health_tells_call(tmp_path, monkeypatch):
    """The whole path: `serve --tunnel` takes the agent's tunnel, `call` finds it on /health."""
    port = await _closed_port()
    tunnels = [tunnel_to(port, "https://agent-7f3a.ngrok.example")]
    async with fake_ngrok_api(tunnels) as ngrok, fake_vobiz_rest() as vobiz:
        env = _env(
            NGROK_API_URL=ngrok.url,
            CALL_LOG_DIR=str(tmp_path),
            STT_PROVIDER="offline",
            LLM_PROVIDER="scripted",
            TTS_PROVIDER="offline",
        )
        cmd = [sys.executable, "-m", "adapters.app.cli", "serve", "--port", str(port), "--tunnel"]
        server = await trio.lowlevel.open_process(
            cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
        )
        try:
            out = await _read_until(server, b"Hangup URL", 60)
            assert "public URL https://agent-7f3a.ngrok.example" in out
            assert "Answer URL: https://agent-7f3a.ngrok.example/answer" in out
            assert "Hangup URL: https://agent-7f3a.ngrok.example/hangup" in out
            async with httpx.AsyncClient() as http:
                health = (await http.get(f"http://127.0.0.1:{port}/health")).json()
            assert health["public_url"] == "https://agent-7f3a.ngrok.example"

            for name, value in {
                "VOBIZ_AUTH_ID": vobiz.auth_id,
                "VOBIZ_AUTH_TOKEN": vobiz.auth_token,
                "VOBIZ_API_URL": vobiz.url,
            }.items():
                monkeypatch.setenv(name, value)
            monkeypatch.delenv("PUBLIC_URL", raising=False)
            status = await place_call("+15550002", "+15550001", f"http://127.0.0.1:{port}")
            assert status == 0
            (body,) = vobiz.live_calls.values()
            assert body["answer_url"] == "https://agent-7f3a.ngrok.example/answer"
            assert body["hangup_url"] == "https://agent-7f3a.ngrok.example/hangup"
        finally:
            server.send_signal(signal.SIGINT)
            with trio.move_on_after(20):
                await server.wait()
            if server.returncode is None:
                server.kill()
                await server.wait()
    assert server.returncode == 0


async def test_serve_with_tunnel_and_no_ngrok_exits_2_saying_why(tmp_path):
    closed, port = await _closed_port(), await _closed_port()
    env = _env(NGROK_API_URL=f"http://127.0.0.1:{closed}", CALL_LOG_DIR=str(tmp_path))
    env |= {"STT_PROVIDER": "offline", "LLM_PROVIDER": "scripted", "TTS_PROVIDER": "offline"}
    cmd = [sys.executable, "-m", "adapters.app.cli", "serve", "--port", str(port), "--tunnel"]
    with trio.fail_after(60):
        done = await trio.run_process(
            cmd, env=env, capture_stdout=True, capture_stderr=True, check=False
        )
    assert done.returncode == 2
    assert b"--tunnel: no ngrok agent answers at" in done.stderr


async def _read_until(process: trio.Process, marker: bytes, timeout: float) -> str:
    out = b""
    with trio.fail_after(timeout):
        while marker not in out:
            chunk = await process.stdout.receive_some(65536)
            if not chunk:
                raise AssertionError(f"the server exited early:\n{out.decode(errors='replace')}")
            out += chunk
        # the rest of the block the marker is in
        with trio.move_on_after(0.5):
            while not out.endswith(b"\n"):
                out += await process.stdout.receive_some(65536)
    return out.decode(errors="replace")


async def test_call_finds_the_public_url_on_a_running_servers_health(tmp_path):
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="t" * 32)
    async with running_server(settings, AgentConfig(), quiet()) as app:
        settings = app.switchboard.settings
        app.switchboard.settings = settings.with_values(public_url="https://a.example.net")
        assert await public_url_of(app.base_url) == "https://a.example.net"


async def test_call_refuses_a_server_vobiz_cannot_reach(tmp_path):
    settings = ServerSettings.from_env({}, call_log_dir=tmp_path, stream_secret="t" * 32)
    async with running_server(settings, AgentConfig(), quiet()) as app:
        with pytest.raises(TunnelError) as info:
            await public_url_of(app.base_url)
    assert "Vobiz cannot call" in str(info.value) and "--tunnel" in str(info.value)


async def test_call_with_no_server_and_no_public_url_says_what_to_do():
    closed = await _closed_port()
    with pytest.raises(TunnelError) as info:
        await public_url_of(f"http://127.0.0.1:{closed}")
    message = str(info.value)
    assert "PUBLIC_URL is not set" in message and "serve --tunnel" in message
