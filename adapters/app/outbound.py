"""``voice-agent call``: an outbound call through the Vobiz REST API, answered by this agent.

Vobiz dials the number and, once answered, asks the running server what to do
(its ``/answer``), so the call is placed with that server's public URL.
"""

from __future__ import annotations

import sys

from adapters.app.settings import ServerSettings, reveal
from adapters.app.tunnel import TunnelError, public_url_of
from adapters.vobiz.rest import VobizApiError, VobizRest


async def place_call(to: str, from_: str, server: str | None = None) -> int:
    """``voice-agent call``: the exit status; the call id on stdout, a clear reason on stderr.

    Without ``PUBLIC_URL`` the running server is asked for its own (``/health``), so a
    server started with ``serve --tunnel`` can be called through without copying its address.
    """
    try:
        settings = ServerSettings.from_env()
    except ValueError as exc:
        print(f"voice-agent call: {exc}", file=sys.stderr)
        return 2
    if not (settings.vobiz_auth_id and settings.vobiz_auth_token):
        print("voice-agent call: set VOBIZ_AUTH_ID and VOBIZ_AUTH_TOKEN first", file=sys.stderr)
        return 2
    public_url = settings.public_url
    if settings.source("public_url") == "default":
        try:
            public_url = await public_url_of(server or f"http://127.0.0.1:{settings.port}")
        except TunnelError as exc:
            print(f"voice-agent call: {exc}", file=sys.stderr)
            return 2
    token = reveal(settings.vobiz_auth_token) or ""
    rest = VobizRest(settings.vobiz_auth_id, token, settings.vobiz_api_url)
    try:
        async with rest:
            call_id = await rest.make_call(
                from_,
                to,
                f"{public_url}/answer",
                f"{public_url}/hangup",
            )
    except VobizApiError as exc:
        print(f"voice-agent call: {exc}", file=sys.stderr)
        return 1
    print(call_id)
    return 0
