"""What the recognizer tests share: a link that records events, and a phone that plays audio.

Nova and Flux are driven the same way, 20 ms frames 20 ms apart on the trio clock,
so under ``autojump_clock`` their event times are exact.
"""

from __future__ import annotations

import logging

import trio

from adapters.providers.interfaces import ProviderLink
from fixtures.fake_deepgram import silence, tone

KEY = "test-key"


def make_link(events: list, times: list | None = None) -> ProviderLink:
    """Events go to ``events``; with ``times``, the call time each arrived goes there too."""

    async def emit(event) -> None:
        events.append(event)
        if times is not None:
            times.append(trio.current_time())

    log = logging.LoggerAdapter(logging.getLogger("test.deepgram"), {"call_id": "c1"})
    return ProviderLink(call_id="c1", emit=emit, now=trio.current_time, log=log)


async def play(send: trio.MemorySendChannel, audio: bytes) -> None:
    """Deliver audio the way the phone does: 20 ms frames, 20 ms apart."""
    for i in range(0, len(audio), 160):
        await send.send(audio[i : i + 160])
        await trio.sleep(0.02)


async def run_call(recognizer, script, events: list, times: list | None = None) -> None:
    """Run ``recognizer`` while ``script(send)`` plays audio, then end the audio."""
    send, recv = trio.open_memory_channel[bytes](100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(recognizer.run, recv, make_link(events, times))
        async with send:
            await script(send)


def utterance(seconds: float = 1.0) -> bytes:
    return silence(0.2) + tone(seconds) + silence(1.6)
