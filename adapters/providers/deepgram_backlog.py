"""The caller audio a live recognizer has not confirmed yet, kept to replay after a reconnect.

Deepgram counts time in seconds of audio received on one connection, and its
clock restarts at zero on every connection. So a chunk's place is kept per
connection (the byte offset it was sent at), a result covering ``[0, end)``
confirms what was sent before ``end``, and a reconnect replays what is left
from offset zero: words said while the socket was down are still heard, and a
result's offsets still map back to when the phone delivered the audio.
"""

from __future__ import annotations

import bisect
from collections import deque

import attrs
import trio

from adapters.media.audio import PHONE_RATE


@attrs.define
class _Chunk:
    index: int
    at: float  # call time it arrived from the phone
    data: bytes
    sent_at: int | None = None  # byte offset on the current connection, once sent


@attrs.define
class AudioBacklog:
    """Caller audio Deepgram has not confirmed with a result yet.

    Offsets are per connection because Deepgram's clock restarts at zero on
    every connection: a result covering ``[0, end)`` confirms the chunks sent
    before ``end``; a reconnect replays what is left from offset zero.
    """

    max_bytes: int
    chunks: deque[_Chunk] = attrs.Factory(deque)
    size: int = 0
    closed: bool = False
    next_index: int = 0
    _changed: trio.Event = attrs.Factory(trio.Event)

    def append(self, data: bytes, at: float) -> None:
        self.chunks.append(_Chunk(self.next_index, at, data))
        self.next_index += 1
        self.size += len(data)
        while self.size > self.max_bytes and len(self.chunks) > 1:
            self.size -= len(self.chunks.popleft().data)
        self._wake()

    def close(self) -> None:
        self.closed = True
        self._wake()

    def _wake(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def wait_changed(self) -> None:
        await self._changed.wait()

    def first_index(self) -> int:
        return self.chunks[0].index if self.chunks else self.next_index

    def unsent_from(self, index: int, limit: int) -> list[_Chunk]:
        """Chunks from ``index`` on (or the oldest kept, if it was dropped), up to ``limit`` bytes."""
        out: list[_Chunk] = []
        total = 0
        # Indices are consecutive, so go straight to ``index``. This runs for every chunk,
        # and what is unsent sits at the newest end of up to 30 s of backlog: a deque is
        # indexed from its nearer end, where walking it from the oldest would pass them all.
        chunks = self.chunks
        for position in range(max(0, index - self.first_index()), len(chunks)):
            chunk = chunks[position]
            if out and total + len(chunk.data) > limit:
                break
            out.append(chunk)
            total += len(chunk.data)
        return out

    def new_connection(self) -> None:
        for chunk in self.chunks:
            chunk.sent_at = None

    def confirm(self, until_offset: int) -> None:
        """A result covered the audio before ``until_offset`` on this connection."""
        while self.chunks:
            head = self.chunks[0]
            if head.sent_at is None or head.sent_at + len(head.data) > until_offset:
                break
            self.size -= len(head.data)
            self.chunks.popleft()

    def call_time_of(self, offset: int) -> float | None:
        """When the phone delivered the audio at ``offset`` of this connection, if still known."""
        sent = [(c.sent_at, c) for c in self.chunks if c.sent_at is not None]
        i = bisect.bisect_right([at for at, _ in sent], offset) - 1
        if i < 0 or offset >= sent[i][0] + len(sent[i][1].data):
            return None
        sent_at, chunk = sent[i]
        return chunk.at + (offset - sent_at) / PHONE_RATE
