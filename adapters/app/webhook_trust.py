"""Whether a webhook comes from Vobiz: its signature checked, its nonce never seen before.

Vobiz signs only the URL and a nonce (:mod:`adapters.vobiz.signature`), so a
valid signature proves "Vobiz called this URL once": the nonce memory refuses
the same request sent again, and what the form says is trusted no further
than that. With signatures off (``VALIDATE_SIGNATURES=false``) nothing is
known of the sender, which the webhooks take into account.
"""

from __future__ import annotations

import logging

import attrs
from quart import Response, request

from adapters.app.settings import ServerSettings, reveal
from adapters.ops import metrics
from adapters.vobiz import signature
from adapters.vobiz.signature import NonceMemory

log = logging.getLogger("voice_agent.server")


def shown(text: str, limit: int = 80) -> str:
    """Untrusted text made safe for one console log line: bounded, control characters escaped."""
    return text[:limit].encode("unicode_escape").decode("ascii")


@attrs.frozen
class Trust:
    """``signed``: the sender proved it is Vobiz (a valid signature, a fresh nonce)."""

    signed: bool


def describe(settings: ServerSettings) -> str:
    """The start-up line that says what webhooks must carry."""
    if settings.validate_signatures:
        return (
            "webhook signatures ENFORCED (VALIDATE_SIGNATURES): Vobiz must sign callbacks "
            f"to PUBLIC_URL={settings.public_url} - configure callback authentication for the "
            "answer, hangup and stream-status URLs in the Vobiz console, or every call is "
            "refused with 403"
        )
    return (
        "webhook signatures NOT checked (VALIDATE_SIGNATURES=false): anyone who can reach "
        "/answer can start a call; /hangup and /stream-status from unsigned senders only "
        "end a call whose media socket has closed and never write into its log"
    )


async def check(settings: ServerSettings, nonces: NonceMemory) -> Trust | Response:
    """Check the current webhook (when enforced); a Response refuses it, saying why in the log."""
    if not settings.validate_signatures:
        return Trust(signed=False)
    verdict = await _verdict(settings)
    if not verdict.ok:
        log.warning("refused %s from %s: %s", request.path, request.remote_addr, verdict.problem)
        metrics.refused("webhook", "bad signature")
        return Response("bad signature", status=403)
    if not nonces.first_time(f"{verdict.scheme}:{verdict.nonce}"):
        log.warning(
            "refused %s from %s: a replay (nonce %s was used before)",
            request.path,
            request.remote_addr,
            shown(verdict.nonce, 40),
        )
        metrics.refused("webhook", "replayed request")
        return Response("replayed request", status=403)
    return Trust(signed=True)


async def _verdict(settings: ServerSettings) -> signature.Verdict:
    query = request.query_string.decode()
    # Vobiz signs the URL it was given, i.e. the public one, not what a proxy forwards.
    url = settings.public_url + request.path + (f"?{query}" if query else "")
    token = reveal(settings.vobiz_auth_token) or ""
    parent = reveal(settings.vobiz_parent_auth_token)
    if not signature.present(request.headers):  # refused from the headers: no body is read
        return signature.check(request.method, url, None, request.headers, token)
    verdict = signature.check(request.method, url, None, request.headers, token, parent)
    if verdict.ok:
        return verdict
    form = await request.form  # only the stricter Plivo form signs the form fields
    params = form.to_dict(flat=False)
    return signature.check(request.method, url, params, request.headers, token, parent)
