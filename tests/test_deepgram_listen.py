"""How a Deepgram recognizer's stream survives, tested once for Nova and once for Flux.

Both run on ``adapters/providers/deepgram_listen.py``: the same backlog, reconnect
loop and refusals, against the same loopback fake. Real sockets, virtual time.
"""

from __future__ import annotations

import logging

import pytest
import trio
from listening import KEY, play, run_call

from adapters.providers.deepgram_backlog import AudioBacklog
from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings
from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT
from engine.events import SttLost, SttRestored, Transcript
from fixtures.fake_deepgram import run_fake_deepgram, silence, tone


def nova(fake, **overrides) -> DeepgramSTT:
    return DeepgramSTT(DeepgramSettings(api_key=KEY, url=fake.url, **overrides))


def flux(fake, **overrides) -> DeepgramFlux:
    return DeepgramFlux(FluxSettings(api_key=KEY, url=fake.url, **overrides))


#: Each recognizer: how to make it, where the fake records it, how its stream ends normally,
#: how long the service waits for a sign of life, and what that sign is.
RECOGNIZERS = {
    "nova": (nova, "/v1/listen", 1000, 10.0, ["KeepAlive"] * 4),
    "flux": (flux, "/v2/listen", 1005, 60.0, []),  # a WebSocket ping is no message
}


@pytest.fixture(params=sorted(RECOGNIZERS))
def kind(request):
    return request.param


def sessions(fake, kind: str) -> list:
    return fake.flux_sessions if kind == "flux" else fake.listen_sessions


def finals(events: list) -> list[str]:
    return [e.text for e in events if isinstance(e, Transcript) and e.is_final]


def said(seconds: float) -> bytes:
    """Words, then silence long enough for either recognizer to end the turn."""
    return tone(seconds) + silence(1.6)


async def hear(kind: str, script, lines=(), api_key: str = KEY, fake_knobs=None, **settings):
    """Run recognizer ``kind`` against a fresh fake while ``script(send, fake)`` plays."""
    events: list = []
    async with run_fake_deepgram(api_key=api_key, **(fake_knobs or {})) as fake:
        fake.transcripts.extend(lines)
        recognizer = RECOGNIZERS[kind][0](fake, **settings)
        await run_call(recognizer, lambda send: script(send, fake), events)
    return events, fake


async def test_a_dropped_socket_reconnects_and_what_was_said_meanwhile_is_heard(
    autojump_clock, caplog, kind
):
    caplog.set_level(logging.WARNING)

    async def script(send, fake):
        await play(send, silence(0.2) + said(0.8))
        assert await fake.drop_listen() == 1
        await play(send, said(0.8))

    events, fake = await hear(kind, script, ["first question", "second question"])
    connections = sessions(fake, kind)
    assert finals(events) == ["first question", "second question"]
    assert len(connections) == 2
    assert "reconnecting in 0.25 s (attempt 1)" in caplog.text
    # Audio that arrived while disconnected was replayed on the new connection.
    assert tone(0.8) in bytes(connections[1].audio)


async def test_a_refused_key_is_not_retried(autojump_clock, caplog, kind):
    caplog.set_level(logging.WARNING)

    async def script(send, fake):
        await play(send, said(0.6))
        await trio.sleep(5)
        await play(send, said(0.6))

    with trio.fail_after(60):
        events, fake = await hear(kind, script, api_key="another-key")
    assert fake.rejected == [(RECOGNIZERS[kind][1], 401)]
    assert sessions(fake, kind) == []
    assert events == [SttLost("handshake refused with HTTP 401 (Invalid credentials.)")]
    assert "HTTP 401 (Invalid credentials.)" in caplog.text
    assert "not retrying" in caplog.text


async def test_a_server_error_on_the_handshake_is_retried_with_backoff(
    autojump_clock, caplog, kind
):
    caplog.set_level(logging.WARNING)

    async def script(send, fake):
        await play(send, silence(1.5))
        fake.refuse_listen = None
        await play(send, said(0.6))

    events, fake = await hear(kind, script, ["finally"], fake_knobs={"refuse_listen": 503})
    assert len(fake.rejected) >= 3
    for delay in ("0.25", "0.50", "1.00"):
        assert f"reconnecting in {delay} s" in caplog.text
    assert finals(events) == ["finally"]


async def test_an_outage_is_reported_and_what_the_caller_said_meanwhile_is_heard_after(
    autojump_clock, kind
):
    """Deepgram is down for 15 s while the caller talks: the engine is told, nothing is lost."""

    async def script(send, fake):
        await play(send, silence(0.2) + said(0.8))
        fake.refuse_listen = 503
        assert await fake.drop_listen() == 1
        await play(send, silence(1.0) + tone(1.2) + silence(12.0))
        fake.refuse_listen = None
        await play(send, silence(3.0))

    events, _ = await hear(kind, script, ["before the outage", "during the outage"])
    assert finals(events) == ["before the outage", "during the outage"]
    lost = [i for i, e in enumerate(events) if isinstance(e, SttLost)]
    back = [i for i, e in enumerate(events) if isinstance(e, SttRestored)]
    assert len(lost) == len(back) == 1 and lost[0] < back[0]
    heard = [i for i, e in enumerate(events) if isinstance(e, Transcript) and e.is_final]
    assert heard[1] > back[0]


@pytest.mark.parametrize("keep_alive", [True, False])
async def test_a_quiet_connection_stays_open_only_with_its_keep_alive(
    autojump_clock, caplog, kind, keep_alive
):
    caplog.set_level(logging.WARNING)
    _, _, closed, idle, signs = RECOGNIZERS[kind]

    async def script(send, fake):
        await play(send, silence(0.2))
        await trio.sleep(idle + 2)  # longer than the service waits for a sign of life
        await play(send, said(0.6))

    settings = {} if keep_alive else {"keepalive_after": idle * 3}
    events, fake = await hear(kind, script, ["still there"], **settings)
    connections = sessions(fake, kind)
    assert finals(events) == ["still there"]
    if keep_alive:
        assert [s.control_types() for s in connections] == [[*signs, "CloseStream"]]
        assert [s.close_code for s in connections] == [closed]
    else:
        assert [s.close_code for s in connections] == [1011, closed]
        assert "connection closed with 1011" in caplog.text


def test_the_backlog_is_bounded_and_confirmed_by_results():
    backlog = AudioBacklog(max_bytes=480)
    for i in range(5):
        backlog.append(bytes([i]) * 160, at=i * 0.02)
    assert [c.index for c in backlog.chunks] == [2, 3, 4]  # the oldest fell out
    for n, chunk in enumerate(backlog.chunks):
        chunk.sent_at = n * 160
    assert backlog.call_time_of(200) == pytest.approx(0.06 + 40 / 8000)
    backlog.confirm(320)
    assert [c.index for c in backlog.chunks] == [4]
    backlog.new_connection()
    assert backlog.call_time_of(0) is None
