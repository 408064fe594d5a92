"""One call's Vobiz media stream, sans I/O: frames in, typed events out; commands in, frames out.

Like h11's ``Connection``, the session never touches a socket or a clock. The
runner hands it each text frame the socket delivered (:meth:`MediaSession.receive`)
and gets back what the frame means for the call; it hands it the engine's
commands for the phone (:meth:`MediaSession.send`) and writes whatever
:meth:`MediaSession.next_frame` gives it. In between, the session owns what
the stream's format asks for: converting the caller's audio to the 8 kHz mu-law
the call works in and the agent's back to the stream's format (L16 is
big-endian in, little-endian out), cutting the agent's audio into messages of
whole 20 ms frames (up to :data:`PLAY_FRAMES` of them), and an outbox of typed
messages, encoded only when written so that after a reconnect they carry the
new stream's id.

Vobiz documents no largest ``playAudio``; it recommends "approximately 20-60 ms
chunks ... a recommendation, not a requirement". We send up to 100 ms: five
times fewer messages than 20 ms frames (each one is a JSON encoding, a WebSocket
frame and a system call here, and a message to parse at Vobiz), a message that
still fits one TCP segment (about 1.1 KB of base64 for mu-law), and at most
100 ms of audio in flight in one message, were a ``clearAudio`` to let the
message being played finish; that is as long as the caller must speak before
their barge-in counts. Nothing ready is held back to fill a message.
"""

from __future__ import annotations

from collections import deque

import attrs

from adapters.media.audio import Framer, InboundConverter, OutboundConverter
from adapters.vobiz import outbound as out
from adapters.vobiz.protocol import (
    ClearedAudio,
    Dtmf,
    Media,
    PlayedStream,
    Start,
    Stop,
    parse,
)
from engine import commands as cmd
from engine import events as ev


@attrs.frozen
class CallerAudio:
    """A frame of the caller's audio as 8 kHz mu-law, whatever format the stream carries."""

    ulaw: bytes = attrs.field(repr=lambda a: f"<{len(a)} bytes>")


@attrs.frozen
class StartedAgain:
    """A second ``start`` on the same socket: noted, and the call goes on as it was."""

    stream_id: str


#: What one inbound frame means for the call.
Received = (
    CallerAudio | ev.AudioPlayed | ev.AudioCleared | ev.DtmfPressed | ev.CallEnded | StartedAgain
)

#: Frames of 20 ms in one ``playAudio`` at most (see the module's doc for why 100 ms).
PLAY_FRAMES = 5

#: The engine's commands that are the phone's business.
PhoneCommand = cmd.PlayAudio | cmd.Checkpoint | cmd.ClearAudio | cmd.Hangup


class MediaSession:
    """The media stream of one call, across reconnects."""

    def __init__(
        self, start: Start, max_frame_bytes: int = 64_000, play_frames: int = PLAY_FRAMES
    ) -> None:
        self.max_frame_bytes = max_frame_bytes
        self.framer = Framer(max_frames=play_frames)
        self.outbox: deque[out.Outbound] = deque()
        self.start = start
        self._use(start)

    def _use(self, start: Start) -> None:
        self.start = start
        self._inbound = InboundConverter(start.encoding, start.sample_rate)
        self._outbound = OutboundConverter(start.encoding, start.sample_rate)
        self.framer.reset()

    @property
    def stream_id(self) -> str:
        return self.start.stream_id

    def reconnected(self, start: Start) -> None:
        """Vobiz reconnected the stream: a new stream id and format, the same call."""
        self._use(start)

    # -- inbound ---------------------------------------------------------------------
    def receive(self, frame: str | bytes) -> Received:
        """What one frame from Vobiz means; :class:`ProtocolError` when it means nothing."""
        message = parse(
            frame,
            self.max_frame_bytes,
            encoding=self.start.encoding,
            sample_rate=self.start.sample_rate,
        )
        if isinstance(message, Media):
            return CallerAudio(self._inbound.to_ulaw8k(message.payload))
        if isinstance(message, PlayedStream):
            return ev.AudioPlayed(message.name)
        if isinstance(message, ClearedAudio):
            return ev.AudioCleared()
        if isinstance(message, Dtmf):
            return ev.DtmfPressed(message.digit)
        if isinstance(message, Stop):
            return ev.CallEnded("stop")
        return StartedAgain(message.stream_id)

    # -- outbound --------------------------------------------------------------------
    def send(self, command: PhoneCommand) -> None:
        """Queue what the engine wants the phone to do."""
        match command:
            case cmd.PlayAudio(audio=audio):
                for frame in self.framer.push(bytes(audio)):  # type: ignore[arg-type]
                    self._play(frame)
            case cmd.Checkpoint(name=name):
                tail = self.framer.flush()
                if tail:
                    self._play(tail)
                self.outbox.append(out.Checkpoint(name))
            case cmd.ClearAudio():
                self.framer.reset()
                self._outbound.reset()
                # Audio not yet written is dropped here rather than sent and then cleared.
                self.outbox = deque(m for m in self.outbox if not isinstance(m, out.PlayAudio))
                self.outbox.append(out.ClearAudio())
            case cmd.Hangup():
                self.outbox.append(out.StopStream())

    def _play(self, frame: bytes) -> None:
        self.outbox.append(out.PlayAudio(self._outbound.from_ulaw8k(frame)))

    def next_frame(self) -> str | None:
        """The next frame to write, encoded for the stream the socket carries now."""
        if not self.outbox:
            return None
        return out.encode(self.outbox.popleft(), self.start)
