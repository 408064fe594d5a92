"""The webhooks and the media socket's front door, over real loopback sockets."""

import json
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
import trio
from serving import running_server

from adapters.app.settings import ServerSettings
from adapters.providers.interfaces import Providers
from adapters.vobiz import signature
from engine.config import AgentConfig


class Untouchable:
    """A provider that must never be reached (the socket should be refused first)."""

    def __call__(self):
        raise AssertionError("a provider was contacted")

    async def complete(self, *args):
        raise AssertionError("a provider was contacted")

    synthesize = complete


UNTOUCHABLE = Providers(stt=Untouchable(), llm=Untouchable(), tts=Untouchable())


# A WebSocket upgrade request (sent with httpx so the refusal's status is visible).
UPGRADE = {
    "Connection": "Upgrade",
    "Upgrade": "websocket",
    "Sec-WebSocket-Version": "13",
    "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
}


def settings(tmp_path: Path, **kw) -> ServerSettings:
    base = {"call_log_dir": tmp_path / "calls", "stream_secret": "s" * 32}
    return ServerSettings.from_env({}, **(base | kw))


async def answer(client: httpx.AsyncClient, base: str, call_id: str = "call-1", **headers):
    return await client.post(
        f"{base}/answer",
        data={"CallUUID": call_id, "From": "+15550001", "To": "+15550002", "Direction": "inbound"},
        headers=headers,
    )


def stream_url(xml: str) -> str:
    stream = ET.fromstring(xml).find("Stream")
    assert stream is not None
    assert stream.get("bidirectional") == "true"
    assert stream.get("keepCallAlive") == "true"
    assert stream.get("contentType") == "audio/x-mulaw;rate=8000"
    assert stream.get("statusCallbackUrl", "").endswith("/stream-status")
    return stream.text or ""


async def test_answer_returns_stream_xml_with_a_signed_token(tmp_path):
    async with (
        running_server(settings(tmp_path), AgentConfig(), UNTOUCHABLE) as app,
        httpx.AsyncClient() as client,
    ):
        response = await answer(client, app.base_url)
        health = await client.get(f"{app.base_url}/health")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/xml")
    url = stream_url(response.text)
    assert url.startswith(app.base_url.replace("http://", "ws://") + "/ws?token=")
    token = url.split("token=", 1)[1]
    assert app.switchboard.tokens.verify(token, time.time()) == "call-1"
    assert health.status_code == 200
    assert json.loads(health.text)["status"] == "ok"
    assert json.loads(health.text)["active_calls"] == 0


@pytest.mark.parametrize("problem", ["missing", "forged", "expired", "other call"])
async def test_the_media_socket_refuses_bad_tokens_before_any_provider(tmp_path, problem):
    async with running_server(settings(tmp_path), AgentConfig(), UNTOUCHABLE) as app:
        ws = app.base_url.replace("http://", "ws://") + "/ws"
        tokens = app.switchboard.tokens
        good = tokens.issue("call-1", time.time())
        url = {
            "missing": ws,
            "forged": f"{ws}?token={good[:-4]}AAAA",
            "expired": f"{ws}?token={tokens.issue('call-1', time.time() - 1000, ttl=10)}",
            "other call": f"{ws}?token={good.replace('v1.', 'v1.x', 1)}",
        }[problem]
        async with httpx.AsyncClient() as client:
            response = await client.get(url.replace("ws://", "http://"), headers=UPGRADE)
    assert response.status_code == 403
    assert not list((tmp_path / "calls").glob("*.jsonl"))


async def test_webhook_signatures_are_enforced_when_on(tmp_path):
    s = settings(tmp_path, vobiz_auth_token="secret-token", validate_signatures=True)
    async with running_server(s, AgentConfig(), UNTOUCHABLE) as app:
        url = f"{app.base_url}/answer"
        nonce = "12345"
        good = signature.sign(f"{url}.{nonce}", "secret-token")
        async with httpx.AsyncClient() as client:
            unsigned = await answer(client, app.base_url)
            signed = await answer(
                client,
                app.base_url,
                **{"X-Vobiz-Signature-V3": good, "X-Vobiz-Signature-V3-Nonce": nonce},
            )
            tampered = await answer(
                client,
                app.base_url,
                **{"X-Vobiz-Signature-V3": good, "X-Vobiz-Signature-V3-Nonce": "54321"},
            )
    assert unsigned.status_code == 403
    assert signed.status_code == 200
    assert tampered.status_code == 403


async def test_over_max_calls_or_draining_new_calls_get_a_busy_message(tmp_path):
    async with running_server(settings(tmp_path, max_calls=0), AgentConfig(), UNTOUCHABLE) as app:
        async with httpx.AsyncClient() as client:
            response = await answer(client, app.base_url)
        app.switchboard.draining = True
        async with httpx.AsyncClient() as client:
            health = await client.get(f"{app.base_url}/health")
    root = ET.fromstring(response.text)
    assert root.find("Stream") is None
    assert root.find("Hangup") is not None
    assert health.status_code == 503


async def test_unknown_call_webhooks_are_answered_quickly(tmp_path):
    async with (
        running_server(settings(tmp_path), AgentConfig(), UNTOUCHABLE) as app,
        httpx.AsyncClient() as client,
    ):
        with trio.fail_after(5):
            hangup = await client.post(
                f"{app.base_url}/hangup", data={"CallUUID": "nobody", "Event": "Hangup"}
            )
            status = await client.post(
                f"{app.base_url}/stream-status",
                data={"CallUUID": "nobody", "Event": "StartStream"},
            )
    assert hangup.status_code == 200
    assert status.status_code == 200
