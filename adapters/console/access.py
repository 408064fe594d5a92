"""Who may use the console: this machine's own browser, or whoever holds the console token.

The console shows what callers said and hears the developer's microphone, so
it answers only a browser on this machine. A request is taken as local when
it comes from a loopback address, names a loopback host (a DNS-rebinding page
names its own), and carries no proxy header: a tunnel or reverse proxy on
this machine connects from loopback too, but says whom it forwards. A
WebSocket must also come from a page of the console's own origin, since any
web page the developer has open may open one to a loopback port.

``CONSOLE_TOKEN`` (or ``--token``) lets other requests in when they present
it (``?token=`` or ``Authorization: Bearer``); without it they are refused.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

#: Headers a forwarding proxy adds; a request carrying one did not start on this machine.
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip", "x-forwarded-host")
LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1", "[::1]"}


def _is_loopback(address: str | None) -> bool:
    if not address:
        return False
    try:
        return ipaddress.ip_address(address.split("%")[0]).is_loopback
    except ValueError:
        return False


def _host_name(host: str) -> str:
    """``Host`` without its port (``[::1]:80`` → ``::1``)."""
    if host.startswith("["):
        return host[1 : host.find("]")] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def _presented_token(headers: Mapping[str, str], args: Mapping[str, str]) -> str:
    auth = headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    return args.get("token", "")


def refusal(
    remote_addr: str | None,
    headers: Mapping[str, str] | Any,
    args: Mapping[str, str] | Any,
    token: str | None,
    websocket: bool = False,
) -> str | None:
    """Why this request may not use the console, or None when it may."""
    headers = {k.lower(): v for k, v in headers.items()}
    host = headers.get("host", "")
    if websocket:
        origin = headers.get("origin", "")
        if not origin or urlsplit(origin).netloc.lower() != host.lower():
            return "the WebSocket does not come from a console page"
    if token:
        given = _presented_token(headers, args)
        if given and hmac.compare_digest(given.encode(), token.encode()):
            return None
    if not _is_loopback(remote_addr):
        return "not from this machine"
    if any(name in headers for name in PROXY_HEADERS):
        return "forwarded by a proxy or tunnel (set CONSOLE_TOKEN to allow it)"
    if _host_name(host.lower()) not in LOOPBACK_NAMES:
        return "the Host is not a loopback name"
    return None
