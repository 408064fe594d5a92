"""Reaching a server on a laptop from a real phone: a public https address through ngrok.

Vobiz must reach ``/answer`` and the media socket from the internet. ngrok's
agent already running on this machine is asked through its local API
(``http://127.0.0.1:4040/api/tunnels``; ``NGROK_API_URL`` overrides it) for
an https tunnel to our port, and asked to open one when it has none. With no
agent running, ``pyngrok`` (the ``tunnel`` extra) starts one. Each failure
says what to run instead.

``voice-agent call`` uses :func:`public_url_of` to learn the address of the
server that is running, from its ``/health``.
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

import attrs
import httpx
import trio

DEFAULT_API = "http://127.0.0.1:4040"
API_TIMEOUT = 3.0
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0", ""}


class TunnelError(Exception):
    """No public address could be had; the message says what to do."""


@attrs.frozen
class Tunnel:
    public_url: str
    #: Where it came from, for the start-up lines.
    source: str
    #: Closes a tunnel this process opened (None: it belongs to someone else).
    close: Callable[[], None] | None = attrs.field(default=None, eq=False)


def api_url(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    return (env.get("NGROK_API_URL") or DEFAULT_API).rstrip("/")


def forwards_to(addr: Any, port: int) -> bool:
    """Whether an ngrok ``config.addr`` (``http://localhost:8000``, ``localhost:8000``, ``8000``) is our port."""
    text = str(addr).strip()
    if text.isdigit():
        return int(text) == port
    parts = urlsplit(text if "://" in text else f"http://{text}")
    try:
        target = parts.port
    except ValueError:
        return False
    host = (parts.hostname or "").lower()
    if host not in LOCAL_HOSTS:
        try:
            if not ipaddress.ip_address(host).is_loopback:
                return False
        except ValueError:
            return False
    if target is None:
        target = 443 if parts.scheme == "https" else 80
    return target == port


def _https(tunnels: list[dict[str, Any]], port: int) -> str | None:
    for tunnel in tunnels:
        url = str(tunnel.get("public_url", ""))
        if url.startswith("https://") and forwards_to(tunnel.get("config", {}).get("addr"), port):
            return url.rstrip("/")
    return None


async def _from_agent(http: httpx.AsyncClient, api: str, port: int) -> Tunnel:
    try:
        reply = await http.get(f"{api}/api/tunnels")
        reply.raise_for_status()
        tunnels = reply.json().get("tunnels", [])
    except (httpx.HTTPStatusError, ValueError, AttributeError) as exc:
        raise TunnelError(f"the ngrok agent API at {api} answered oddly: {exc}") from None
    url = _https(tunnels, port)
    if url is not None:
        return Tunnel(url, f"ngrok agent at {api}")
    # The agent runs but forwards elsewhere (or nowhere): ask it for a tunnel to our port.
    body = {"name": f"voice-agent-{port}", "proto": "http", "addr": str(port)}
    try:
        created = await http.post(f"{api}/api/tunnels", json=body)
    except httpx.TransportError as exc:
        raise TunnelError(f"the ngrok agent at {api} stopped answering: {exc}") from None
    if created.status_code in (200, 201):
        url = _https([created.json()], port)
        if url is not None:
            return Tunnel(url, f"ngrok agent at {api} (tunnel opened for port {port})")
    others = ", ".join(
        f"{t.get('public_url')} -> {t.get('config', {}).get('addr')}" for t in tunnels
    )
    raise TunnelError(
        f"the ngrok agent at {api} has no https tunnel to port {port}"
        f" ({others or 'it has no tunnels'}) and did not open one"
        f" ({created.status_code}: {created.text[:200]}); run: ngrok http {port}"
    )


def _from_pyngrok(port: int, api: str, why: str) -> Tunnel:
    try:
        from pyngrok import ngrok
    except ImportError:
        raise TunnelError(
            f"no ngrok agent answers at {api} ({why}) and pyngrok is not installed. "
            f"Start one with `ngrok http {port}` (NGROK_API_URL if its API is elsewhere), "
            "or install the extra: pip install 'vobiz-voice-agent[tunnel]'"
        ) from None
    try:
        tunnel = ngrok.connect(str(port), "http")
    except Exception as exc:  # pyngrok raises its own errors, and OSError for the binary
        raise TunnelError(f"pyngrok could not open a tunnel to port {port}: {exc}") from None
    url = str(tunnel.public_url).replace("http://", "https://", 1).rstrip("/")
    return Tunnel(url, "pyngrok", close=lambda: ngrok.disconnect(tunnel.public_url))


async def open_tunnel(port: int, api: str | None = None) -> Tunnel:
    """An https address that reaches 127.0.0.1:``port``; raises :class:`TunnelError`."""
    api = api or api_url()
    async with httpx.AsyncClient(timeout=API_TIMEOUT) as http:
        try:
            return await _from_agent(http, api, port)
        except httpx.TransportError as exc:
            why = f"{type(exc).__name__}"
    return await trio.to_thread.run_sync(_from_pyngrok, port, api, why)


def _is_local_url(url: str) -> bool:
    host = (urlsplit(url).hostname or "").lower()
    if host in LOCAL_HOSTS:
        return True
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return False
    return address.is_loopback or address.is_private or address.is_unspecified


async def public_url_of(server: str) -> str:
    """The public URL the running server at ``server`` announces on ``/health``."""
    health = f"{server.rstrip('/')}/health"
    try:
        async with httpx.AsyncClient(timeout=API_TIMEOUT) as http:
            reply = await http.get(health)
        body = reply.json()
    except httpx.TransportError as exc:
        raise TunnelError(
            f"PUBLIC_URL is not set and no server answers at {health} ({type(exc).__name__}). "
            "Start `voice-agent serve --tunnel` first (--server URL if it is elsewhere), "
            "or set PUBLIC_URL."
        ) from None
    except ValueError:
        raise TunnelError(f"{health} did not answer with JSON: is that this server?") from None
    url = body.get("public_url") if isinstance(body, dict) else None
    if not url:
        raise TunnelError(f"{health} does not say its public URL: set PUBLIC_URL")
    if _is_local_url(url):
        raise TunnelError(
            f"the server at {server} is reachable only at {url}, which Vobiz cannot call: "
            "run `voice-agent serve --tunnel`, or set PUBLIC_URL to its public https address"
        )
    return str(url).rstrip("/")
