"""``voice-agent doctor``: what this configuration will do on a real Vobiz number, and what will fail.

A misconfigured server fails in ways a caller only hears as silence: every
answer refused 403 because callback authentication is not set up in the
Vobiz console, a stream format Vobiz will not connect, a stream URL Vobiz
cannot reach. The doctor reads the same settings ``serve`` reads and says,
line by line, what is enforced and what to change. Secrets are never shown.
"""

from __future__ import annotations

from urllib.parse import urlsplit

import attrs

from adapters.app.settings import ServerSettings
from adapters.app.settings_messages import masked
from adapters.vobiz import protocol as vobiz

OK, NOTE, PROBLEM = "ok", "note", "PROBLEM"


@attrs.frozen
class Finding:
    level: str  # ok | note | PROBLEM
    topic: str
    text: str


def examine(settings: ServerSettings) -> list[Finding]:
    """Every finding about these settings, in the order an operator should read them."""
    found = [*_public_url(settings), *_signatures(settings), *_stream(settings)]
    rest = bool(settings.vobiz_auth_id and settings.vobiz_auth_token)
    found.append(
        Finding(
            OK,
            "REST API",
            f"VOBIZ_AUTH_ID and VOBIZ_AUTH_TOKEN ({masked(settings.vobiz_auth_token)})",
        )
        if rest
        else Finding(
            NOTE,
            "REST API",
            "VOBIZ_AUTH_ID/VOBIZ_AUTH_TOKEN not both set: no transfers, no `voice-agent call`, "
            "and no REST fallback when a stream stays open after the agent's stop",
        )
    )
    for key, what in (("deepgram_api_key", "Deepgram"), ("openai_api_key", "OpenAI")):
        secret = getattr(settings, key)
        level = OK if secret is not None else NOTE
        found.append(
            Finding(
                level,
                what,
                f"{key.upper()} {masked(secret)}"
                + ("" if secret is not None else ": offline stand-in"),
            )
        )
    found.append(
        Finding(
            NOTE,
            "DTMF",
            "Vobiz documents no keypad event on the media stream (only start, media, "
            "playedStream, clearedAudio) and <Gather> cannot run beside a live <Stream>: "
            "keypad digits are unverified on Vobiz (see docs/vobiz-protocol.md)",
        )
    )
    return found


def _public_url(settings: ServerSettings) -> list[Finding]:
    url = settings.public_url
    host = urlsplit(url).hostname or ""
    local = host in ("127.0.0.1", "localhost", "::1") or host.startswith("192.168.")
    found = [
        Finding(
            OK,
            "URLs",
            f"answer URL {url}/answer (POST), hangup URL {url}/hangup; the media stream "
            f"connects to {settings.ws_base}/ws",
        )
    ]
    if local:
        found.append(
            Finding(PROBLEM, "PUBLIC_URL", f"{url} is not reachable from Vobiz: set PUBLIC_URL")
        )
    elif not url.startswith("https://"):
        found.append(
            Finding(NOTE, "PUBLIC_URL", "not https: Vobiz wants wss:// media streams in production")
        )
    return found


def _signatures(settings: ServerSettings) -> list[Finding]:
    if not settings.validate_signatures:
        return [
            Finding(
                NOTE,
                "webhook signatures",
                "not checked (VALIDATE_SIGNATURES=false): anyone who reaches /answer starts a "
                "call on your provider accounts; unsigned hang-ups only end calls whose stream "
                "has closed",
            )
        ]
    if not settings.vobiz_auth_token:
        return [
            Finding(
                PROBLEM,
                "webhook signatures",
                "VALIDATE_SIGNATURES is on but VOBIZ_AUTH_TOKEN is not set: every webhook "
                "will be refused",
            )
        ]
    found = [
        Finding(
            OK,
            "webhook signatures",
            f"ENFORCED with VOBIZ_AUTH_TOKEN ({masked(settings.vobiz_auth_token)}): "
            "X-Vobiz-Signature-V3 or -V2 must match, each nonce is accepted once",
        ),
        Finding(
            NOTE,
            "Vobiz console",
            "Vobiz signs a callback only when its URL has callback authentication configured: "
            "set it on the answer and hangup URLs (and the stream status URL), or every call "
            "is answered 403 and the caller hears nothing. Set VALIDATE_SIGNATURES=false only "
            "while testing.",
        ),
    ]
    if settings.vobiz_parent_auth_token:
        found.append(
            Finding(
                OK, "sub-account", "X-Vobiz-Signature-MA-* checked with VOBIZ_PARENT_AUTH_TOKEN"
            )
        )
    return found


def _stream(settings: ServerSettings) -> list[Finding]:
    found = []
    if settings.media_format in vobiz.STREAM_CONTENT_TYPES:
        found.append(Finding(OK, "MEDIA_FORMAT", settings.media_format))
    else:
        found.append(
            Finding(PROBLEM, "MEDIA_FORMAT", vobiz.media_format_problem(settings.media_format))
        )
    if settings.stream_secret:
        found.append(Finding(OK, "STREAM_SECRET", "set: stream tokens verify in every process"))
    else:
        found.append(
            Finding(
                NOTE,
                "STREAM_SECRET",
                "not set: a random secret per process (fine for one process only)",
            )
        )
    retries = settings.stream_retries
    found.append(
        Finding(
            OK if retries else NOTE,
            "STREAM_RETRIES",
            f"{retries}: a dropped stream reconnects and the call goes on"
            if retries
            else "0: a dropped media stream ends the call (Vobiz maxRetries 0)",
        )
    )
    return found


def report(findings: list[Finding]) -> tuple[str, int]:
    """The printed report and the exit status (1 when anything is a problem)."""
    width = max(len(f.topic) for f in findings)
    lines = [f"{f.level:>7}  {f.topic:<{width}}  {f.text}" for f in findings]
    problems = sum(f.level == PROBLEM for f in findings)
    lines.append(f"\n{problems} problem(s)" if problems else "\nno problems found")
    return "\n".join(lines), int(bool(problems))


def main(settings: ServerSettings) -> int:
    """``voice-agent doctor``: the report on stdout; the exit status (1 when anything is a problem)."""
    text, status = report(examine(settings))
    print(text)
    return status
