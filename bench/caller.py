"""A lean load-generating Vobiz platform: many scripted callers, cheap enough to measure a server.

:mod:`adapters.simulator.caller` is the fidelity tool (recording, transcript, one task per
frame wake-up per call). Under load that fidelity costs more CPU than the server
being measured, and a late caller looks exactly like a slow server. This module
speaks the same protocol with the least work per frame:

- one ticker task paces every call's media on a shared absolute 20 ms grid;
- frames are filled into a precomputed template (base64 of every frame computed
  once, shared by all calls) and framed by hand as masked client text frames with
  a zero key, so there is no JSON encoding and no XOR per frame;
- a frame is written with one non-blocking ``send``; a call whose socket would
  block gets a small backlog flushed by its own writer, so it cannot stall the
  others (its frames are counted as late);
- each media frame carries ``"sent"``: ``perf_counter_ns()`` at the send, so the
  server side can separate transit plus its own delay from the caller's lateness;
- inbound frames are parsed by wsproto; playAudio is measured by its base64
  length, never decoded;
- due ``playedStream`` checkpoints sit in one heap served by the ticker, and
  each call's script is a small state machine stepped by the ticker;
- each call plays the agent's audio through a real-time playout buffer, and
  notes when that buffer ran dry inside an agent utterance (the caller hears
  a hole in a sentence): the one measure of a slow server that a user hears
  as such, taken where the user is, not from the server's own logs.

Timings follow the simulator's definitions, so the two can be compared.
"""

from __future__ import annotations

import base64
import contextlib
import heapq
import json
import math
import socket
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import attrs
import httpx
import trio
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)

from adapters.simulator.script import QUIET_BEFORE_SPEAKING, STALE_WINDOW, CallerScript, Turn
from adapters.simulator.wire import start_event, stream_url

RATE = 8000
FRAME_SECONDS = 0.02
FRAME_BYTES = 160
SILENCE = b"\xff" * FRAME_BYTES

#: A frame sent this much after its scheduled time counts as late (the caller's own lag).
LATE = 0.005

#: A hole in the agent's audio shorter than one frame is absorbed by any phone's jitter
#: buffer; from this length on the caller hears it.
DRY_MIN = FRAME_SECONDS

#: How every media frame begins, up to the timestamp's digits (the server-side probe in
#: ``bench/load.py`` reads the timestamp and ``sent`` straight after it).
MEDIA_PREFIX = b'{"event":"media","media":{"track":"inbound","timestamp":"'
_MEDIA_HEAD = MEDIA_PREFIX + b'%d","chunk":%d,"sent":%d'
_PLAY = '"playAudio"'
_PAYLOAD = '"payload":"'


def client_text_frame(payload: bytes) -> bytes:
    """A masked client text frame with an all-zero key: valid on the wire, payload as is."""
    n = len(payload)
    if n < 126:
        head = bytes((0x81, 0x80 | n))
    elif n < 65536:
        head = bytes((0x81, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x81, 0x80 | 127)) + n.to_bytes(8, "big")
    return head + b"\0\0\0\0" + payload


def _frame_tails(audio: bytes) -> tuple[bytes, ...]:
    """Each 20 ms frame's JSON after the per-frame numbers, base64 done once for all calls."""
    tails = []
    for i in range(0, len(audio), FRAME_BYTES):
        chunk = audio[i : i + FRAME_BYTES].ljust(FRAME_BYTES, b"\xff")
        tails.append(b',"payload":"' + base64.b64encode(chunk) + b'"}}')
    return tuple(tails)


def played_seconds(text: str) -> float | None:
    """Duration of a playAudio frame from its base64 length alone, or None if not one.

    Mu-law at 8 kHz: one byte per sample.
    """
    if _PLAY not in text[:40]:
        return None
    i = text.find(_PAYLOAD)
    if i < 0:
        return 0.0
    i += len(_PAYLOAD)
    j = text.find('"', i)
    length = j - i
    pad = (text[j - 1] == "=") + (text[j - 2] == "=") if length >= 2 else 0
    return (length // 4 * 3 - pad) / RATE


@attrs.frozen
class CallOutcome:
    """One call as the phone saw it; times are seconds since its media started.

    ``frames_late`` counts frames this process sent more than :data:`LATE` after
    their schedule (including those held back because the socket would block,
    ``frames_backlogged``): when it is not ~0 the caller, not the server, is slow.
    ``error`` is set when the call failed; a failed call is a result, not a crash.
    """

    call_id: str
    duration: float
    stopped_by_agent: bool
    turns: tuple[Turn, ...]
    stale_audio_after_clear: int
    cleared: int
    played_checkpoints: int
    frames_sent: int
    frames_late: int
    frames_backlogged: int
    max_lateness: float
    error: str | None = None
    #: Seconds of agent audio the phone played (what a clear cut off is not counted).
    agent_audio: float = 0.0
    #: Holes in the playout inside an agent utterance: their total length, how many, and
    #: how many utterances (of ``utterances``) had at least one.
    dry_seconds: float = 0.0
    dry_gaps: int = 0
    dry_utterances: int = 0
    utterances: int = 0
    #: ``/answer`` said no: the caller heard ``busy_message`` and the call was not placed.
    refused: bool = False
    busy_message: str = ""


@attrs.frozen
class _Line:
    """A script line with its audio already framed."""

    text: str
    tails: tuple[bytes, ...]
    wait_for_agent: bool
    barge_in_after: float | None
    pause: float


class _Checkpoint:
    __slots__ = ("at", "call", "cancelled", "name")

    def __init__(self, at: float, call: _Call, name: str) -> None:
        self.at, self.call, self.name, self.cancelled = at, call, name, False


@attrs.define
class _Gap:
    """The playout ran dry and then more audio came: a hole, to be judged at the end.

    The wire does not say which agent utterance a playAudio belongs to; the checkpoint
    that follows it does (this server names them ``<utterance>.<sentence>``). So each
    side of the hole is tied to the checkpoint after it: ``before`` and ``after`` are
    how many checkpoints had come when the audio on each side arrived, ``clears`` how
    many clearAudio, ``phrases`` how many lines the caller had started.
    """

    seconds: float
    before: int
    after: int
    clears: int
    phrases_between: int


class Playout:
    """The phone's playout buffer for one call, in real time, and the holes in it.

    Audio plays from arrival, back to back; a clear drops what has not played. A hole is
    *inside an agent utterance* when the audio on both sides of it belongs to the same
    utterance: same checkpoint ahead of both (one sentence), or checkpoints of the same
    utterance. When a clear cut the later side before its checkpoint came, the caller
    not having spoken in between decides (a new utterance only ever follows a caller's
    line here).
    """

    def __init__(self) -> None:
        self.end = 0.0  # when everything received so far will have played
        self.played = 0.0  # seconds of audio played or due to play
        self.checkpoints: list[tuple[str, int]] = []  # name, clears seen when it came
        self.clears = 0
        self.phrases = 0
        self.gaps: list[_Gap] = []
        self._last: tuple[int, int] | None = None  # checkpoints and phrases at the last audio

    def audio(self, now: float, seconds: float) -> None:
        last = self._last
        if last is not None and now - self.end >= DRY_MIN:
            before, phrases = last
            self.gaps.append(
                _Gap(
                    now - self.end,
                    before,
                    len(self.checkpoints),
                    self.clears,
                    self.phrases - phrases,
                )
            )
        self._last = (len(self.checkpoints), self.phrases)
        self.end = max(now, self.end) + seconds
        self.played += seconds

    def checkpoint(self, name: str) -> None:
        self.checkpoints.append((name, self.clears))

    def clear(self, now: float) -> None:
        if self.end > now:
            self.played -= self.end - now
            self.end = now
        self.clears += 1
        self._last = None  # what comes next is not the same run of audio

    def phrase(self) -> None:
        self.phrases += 1

    def _utterance(self, index: int, clears: int) -> str | None:
        if index >= len(self.checkpoints):
            return None
        name, seen = self.checkpoints[index]
        return name.split(".", 1)[0] if seen == clears else None

    def holes(self) -> tuple[float, int, int, int]:
        """Seconds dry inside utterances, holes, utterances with a hole, utterances."""
        seconds, count, dry = 0.0, 0, set()
        for gap in self.gaps:
            before = self._utterance(gap.before, gap.clears)
            after = self._utterance(gap.after, gap.clears)
            if gap.before == gap.after:
                inside = True
            elif before is not None and after is not None:
                inside = before == after
            else:
                inside = gap.phrases_between == 0
            if inside:
                seconds += gap.seconds
                count += 1
                dry.add(after or before or f"cut-{gap.clears}")
        utterances = {name.split(".", 1)[0] for name, _ in self.checkpoints}
        return seconds, count, len(dry), len(utterances)


class _Call:
    """One live call's socket, phone playout model and script state (trio clock times)."""

    def __init__(
        self,
        platform: LeanPlatform,
        call_id: str,
        stream_id: str,
        lines: tuple[_Line, ...],
        noise_offset: int = 0,
    ) -> None:
        self.platform = platform
        self.lines = lines
        self.noise_offset = noise_offset
        self.slot = 0  # which of the ticker's slots in 20 ms this call's frames go in
        self.call_id = call_id
        self.stream_id = stream_id
        self.sock: socket.socket | None = None
        self.stream: trio.SocketStream | None = None
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.backlog = bytearray()
        self.flushing = False
        self.wake_writer = trio.Event()
        self.closed = False
        self.ended = trio.Event()
        self.reader_scope = trio.CancelScope()
        self.stopped_by_agent = False
        self.error: str | None = None
        self.busy_message: str | None = None
        # Media clock: frame n is due at t0 + n * 20 ms; set by the first tick.
        self.k0: int | None = None
        self.t0 = 0.0
        self.n = 0
        self.frames_sent = self.frames_late = self.frames_backlogged = 0
        self.max_lateness = 0.0
        # Script.
        self.line = 0
        self.phase = "wait"
        self.until = 0.0  # wait: not before; pause: until
        self.pos = 0
        self.speaking = False
        self.turns: list[dict] = []
        # Phone playout.
        self.playout = Playout()
        self.agent_spoke = False
        self.agent_started_at: float | None = None
        self.pending: list[_Checkpoint] = []
        self.clears: list[float] = []
        self.played = 0
        self.stale = 0

    # ------------------------------------------------------------ writing

    def write(self, data: bytes) -> bool:
        """Send now if the socket takes it; else queue for the writer. True if sent at once."""
        if self.closed:
            return False
        if not (self.flushing or self.backlog):
            try:
                sent = self.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                self.closed = True
                self.reader_scope.cancel()
                return False
            if sent == len(data):
                return True
            data = data[sent:]
        self.backlog += data
        self.wake_writer.set()
        return False

    async def writer(self) -> None:
        while True:
            await self.wake_writer.wait()
            self.wake_writer = trio.Event()
            self.flushing = True
            while self.backlog:
                chunk = bytes(self.backlog)
                self.backlog.clear()
                await self.stream.send_all(chunk)
            self.flushing = False

    def send_json(self, msg: dict) -> None:
        self.write(client_text_frame(json.dumps(msg, separators=(",", ":")).encode()))

    # ------------------------------------------------------------ ticker side

    def tick(self, k: int, now: float) -> None:
        """This call's share of one tick: hang up, step the script, send one media frame."""
        if self.k0 is None:
            self.k0, self.t0 = k, now
        n = k - self.k0
        if now >= self.t0 + self.platform.script.hang_up_after:
            self.hang_up()
            return
        self.step_script(now)
        background = self.platform.background
        tail = background[(n + self.noise_offset) % len(background)]
        if self.phase == "speak":
            line = self.lines[self.line]
            if self.pos == 0:
                self.speaking = True
                self.playout.phrase()
                self.turns.append(
                    {
                        "text": line.text,
                        "started": n * FRAME_SECONDS,
                        "ended": None,
                        "barge_in": self._is_barge_in(line),
                        "voice_to_voice": None,
                        "barge_in_to_clear": None,
                    }
                )
            tail = line.tails[self.pos]
            self.pos += 1
            if self.pos >= len(line.tails):
                self.speaking = False
                ended = (n + 1) * FRAME_SECONDS
                self.turns[-1]["ended"] = ended
                self.line += 1
                self.phase = "wait" if self.line < len(self.lines) else "done"
                self.until = self.t0 + ended
        sent_ns = time.perf_counter_ns()
        frame = _MEDIA_HEAD % (n * 20, n, sent_ns) + tail
        on_time = self.write(client_text_frame(frame))
        self.n = n + 1
        self.frames_sent += 1
        lateness = sent_ns / 1e9 + self.platform.clock_offset - now
        self.max_lateness = max(self.max_lateness, lateness)
        if not on_time:
            self.frames_backlogged += 1
        if lateness > LATE or not on_time:
            self.frames_late += 1

    @staticmethod
    def _is_barge_in(line: _Line) -> bool:
        return not line.wait_for_agent and line.barge_in_after is not None

    def step_script(self, now: float) -> None:
        if self.phase == "wait":
            if now < self.until:
                return
            line = self.lines[self.line]
            if line.wait_for_agent:
                if self.agent_spoke and now >= self.playout.end + self.platform.quiet:
                    self.phase, self.until = "pause", now + line.pause
            elif self._is_barge_in(line):
                if self.agent_started_at is not None and now >= self.agent_started_at:
                    start = self.agent_started_at + line.barge_in_after
                    self.phase, self.until = "pause", max(now, start) + line.pause
            else:
                self.phase, self.until = "pause", now + line.pause
        if self.phase == "pause" and now >= self.until:
            self.phase, self.pos = "speak", 0
            self.agent_spoke = False
            self.agent_started_at = None

    def hang_up(self) -> None:
        self.platform.live.discard(self)
        self.reader_scope.cancel()

    # ------------------------------------------------------------ reader side

    def rel(self) -> float:
        return trio.current_time() - self.t0

    async def read(self) -> None:
        parts: list[str] = []
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return
            self.ws.receive_data(data)
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        text = "".join(parts) if len(parts) > 1 else parts[0]
                        parts.clear()
                        if self.on_text(text):
                            return
                elif isinstance(event, Ping):
                    self.write(self.ws.send(event.response()))
                elif isinstance(event, CloseConnection):
                    return

    def on_text(self, text: str) -> bool:
        """Handle one server message; True when the agent stopped the call."""
        now = trio.current_time()
        seconds = played_seconds(text)
        if seconds is not None:
            self.on_play(now, seconds)
            return False
        msg = json.loads(text)
        event = msg.get("event") if isinstance(msg, dict) else None
        if event == "checkpoint":
            at = max(now, self.playout.end)
            self.playout.checkpoint(str(msg.get("name", "")))
            self.pending = [c for c in self.pending if c.at > now]
            cp = _Checkpoint(at, self, str(msg.get("name", "")))
            self.pending.append(cp)
            self.platform.due(cp)
        elif event == "clearAudio":
            self.cut(now)
            # What was cut was never heard: the agent has not answered yet. Without this,
            # reply audio still arriving just after a barge-in starts would count as the
            # answer, and the next line would start over the real one.
            self.agent_spoke = False
            self.agent_started_at = None
            self.clears.append(now - self.t0)
            for turn in self.turns:
                if turn["barge_in"] and turn["barge_in_to_clear"] is None:
                    turn["barge_in_to_clear"] = now - self.t0 - turn["started"]
            self.send_json({"event": "clearedAudio", "streamId": self.stream_id})
        elif event == "stop":
            self.cut(now)
            self.stopped_by_agent = True
            return True
        return False

    def on_play(self, now: float, seconds: float) -> None:
        t = now - self.t0
        if self.clears and t - self.clears[-1] <= STALE_WINDOW and self.speaking:
            self.stale += 1
        for turn in self.turns:
            if turn["voice_to_voice"] is None and turn["ended"] is not None and t >= turn["ended"]:
                turn["voice_to_voice"] = t - turn["ended"]
        start = max(now, self.playout.end)
        if self.agent_started_at is None:
            self.agent_started_at = start
        self.agent_spoke = True
        self.playout.audio(now, seconds)

    def cut(self, now: float) -> None:
        """The phone drops what it has not played; Vobiz never confirms those checkpoints."""
        self.playout.clear(now)
        for cp in self.pending:
            if cp.at > now:
                cp.cancelled = True
        self.pending = [cp for cp in self.pending if not cp.cancelled]

    def outcome(self, error: str | None = None) -> CallOutcome:
        dry, gaps, dry_utterances, utterances = self.playout.holes()
        return CallOutcome(
            call_id=self.call_id,
            duration=max(0.0, self.n * FRAME_SECONDS),
            stopped_by_agent=self.stopped_by_agent,
            turns=tuple(Turn(**t) for t in self.turns if t["ended"] is not None),
            stale_audio_after_clear=self.stale,
            cleared=len(self.clears),
            played_checkpoints=self.played,
            frames_sent=self.frames_sent,
            frames_late=self.frames_late,
            frames_backlogged=self.frames_backlogged,
            max_lateness=self.max_lateness,
            error=error,
            agent_audio=self.playout.played,
            dry_seconds=dry,
            dry_gaps=gaps,
            dry_utterances=dry_utterances,
            utterances=utterances,
            refused=self.busy_message is not None,
            busy_message=self.busy_message or "",
        )


class LeanPlatform:
    """Places scripted calls against one server and paces all of them from one ticker.

    Every call follows ``script`` unless ``scripts`` gives call ``i`` its own lines (the
    hang-up time is always ``script``'s). Between lines a call sends ``background``
    (digital silence by default), looped, each call from its own offset; a
    ``wait_for_agent`` line waits until the agent has been quiet for ``quiet`` seconds.

    ``phases`` > 1 spreads the calls' frames over the 20 ms: call ``i`` sends in slot
    ``i % phases`` of it, as calls on a real platform do (each on its own clock); with 1,
    every call's frame leaves at the same instant, a burst no platform sends.
    """

    def __init__(
        self,
        base_url: str,
        script: CallerScript,
        speak: Callable[[str], bytes],
        scripts: Sequence[CallerScript] | None = None,
        background: bytes = SILENCE,
        quiet: float = QUIET_BEFORE_SPEAKING,
        phases: int = 1,
    ) -> None:
        self.base_url = base_url
        self.phases = phases
        self.script = script
        self.speak = speak
        self._tails: dict[str, tuple[bytes, ...]] = {}
        self.lines = self.framed(script)
        self.scripts = [self.framed(s) for s in scripts] if scripts is not None else None
        self.background = _frame_tails(background)
        self.quiet = quiet
        self.live: set[_Call] = set()
        self.checkpoints: list[tuple[float, int, _Checkpoint]] = []
        self._seq = 0
        # trio's clock is perf_counter plus a constant; lateness compares the two.
        self.clock_offset = trio.current_time() - time.perf_counter()

    def framed(self, script: CallerScript) -> tuple[_Line, ...]:
        """A script's lines with their audio framed, each distinct text once for all calls."""
        lines = []
        for line in script.lines:
            tails = self._tails.get(line.text)
            if tails is None:
                audio = self.speak(line.text) if line.text else SILENCE
                tails = self._tails[line.text] = _frame_tails(audio)
            lines.append(
                _Line(line.text, tails, line.wait_for_agent, line.barge_in_after, line.pause)
            )
        return tuple(lines)

    def due(self, cp: _Checkpoint) -> None:
        self._seq += 1
        heapq.heappush(self.checkpoints, (cp.at, self._seq, cp))

    async def run(self, starts: Sequence[float], prefix: str = "lean") -> list[CallOutcome]:
        """Start call ``i`` at ``starts[i]`` seconds from now; return when all have ended."""
        outcomes: list[CallOutcome | None] = [None] * len(starts)
        limits = httpx.Limits(max_connections=200, keepalive_expiry=2.0)
        async with (
            httpx.AsyncClient(base_url=self.base_url, timeout=30.0, limits=limits) as http,
            trio.open_nursery() as ticker,
        ):
            ticker.start_soon(self._ticker)
            async with trio.open_nursery() as calls:
                for i, delay in enumerate(starts):
                    calls.start_soon(self._one, http, f"{prefix}-{i}", delay, outcomes, i)
            ticker.cancel_scope.cancel()
        return [o for o in outcomes if o is not None]

    async def _ticker(self) -> None:
        t_start = trio.current_time()
        phases = self.phases
        m = 0
        while True:
            at = t_start + m * FRAME_SECONDS / phases
            await trio.sleep_until(at)
            now = trio.current_time()
            heap = self.checkpoints
            while heap and heap[0][0] <= now:
                cp = heapq.heappop(heap)[2]
                call = cp.call
                if not cp.cancelled and call in self.live:
                    call.played += 1
                    msg = {"event": "playedStream", "streamId": call.stream_id, "name": cp.name}
                    call.send_json(msg)
            k, slot = divmod(m, phases)
            for call in list(self.live):
                if call.slot != slot:
                    continue
                try:
                    call.tick(k, at)
                except Exception as exc:  # one broken call must not stop the others
                    call.error = f"tick: {exc!r}"[:200]
                    call.hang_up()
            m += 1

    async def _one(
        self,
        http: httpx.AsyncClient,
        call_id: str,
        delay: float,
        outcomes: list,
        i: int,
    ) -> None:
        await trio.sleep(delay)
        lines = self.lines if self.scripts is None else self.scripts[i]
        call = _Call(self, call_id, f"stream-{call_id}", lines, noise_offset=7 * i)
        call.slot = i % self.phases
        try:
            await self._call(http, call)
            outcomes[i] = call.outcome(call.error)
        except Exception as exc:  # a failed call is a result here, not a crash
            self.live.discard(call)
            outcomes[i] = call.outcome(f"{exc!r}"[:200])
        finally:
            if call.stream is not None:
                with trio.CancelScope(shield=True):
                    await call.stream.aclose()

    async def _call(self, http: httpx.AsyncClient, call: _Call) -> None:
        form = {"CallUUID": call.call_id, "From": "+15550100", "To": "+15550199"}
        reply = await http.post("/answer", data={**form, "Direction": "inbound"})
        reply.raise_for_status()
        if "<Stream" not in reply.text:  # turned away: the busy message, then the hang-up
            call.busy_message = " ".join(ET.fromstring(reply.text).itertext()).strip()
            await http.post("/hangup", data={**form, "Event": "Hangup", "Duration": "0"})
            return
        await self._connect(call, stream_url(reply.text))
        call.send_json(start_event(call.call_id, call.stream_id))
        self.live.add(call)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(call.writer)
            with call.reader_scope:
                await call.read()
            self.live.discard(call)
            await self._close(call)
            nursery.cancel_scope.cancel()
        hangup = {
            **form,
            "Event": "Hangup",
            "HangupCause": "NORMAL_CLEARING",
            "Duration": str(math.ceil(call.n * FRAME_SECONDS)),
        }
        await http.post("/hangup", data=hangup)

    async def _connect(self, call: _Call, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme != "ws":
            raise ValueError(f"only ws:// on loopback, got {url!r}")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        tsock = trio.socket.from_stdlib_socket(sock)
        try:
            await tsock.connect((parts.hostname, parts.port or 80))
        except BaseException:
            tsock.close()
            raise
        call.sock, call.stream = sock, trio.SocketStream(tsock)
        target = parts.path + (f"?{parts.query}" if parts.query else "")
        await call.stream.send_all(call.ws.send(Request(host=parts.netloc, target=target)))
        while True:
            data = await call.stream.receive_some(65536)
            if not data:
                raise ConnectionError("closed during the WebSocket handshake")
            call.ws.receive_data(data)
            for event in call.ws.events():
                if isinstance(event, AcceptConnection):
                    return
                if isinstance(event, RejectConnection):
                    raise ConnectionError(f"WebSocket refused: HTTP {event.status_code}")

    async def _close(self, call: _Call) -> None:
        """Flush, say goodbye, and give the server a moment to answer the close."""
        with trio.move_on_after(2.0):
            while call.backlog or call.flushing:
                await trio.sleep(0.01)
            if call.closed:
                return
            if call.ws.state is ConnectionState.OPEN:
                call.write(call.ws.send(CloseConnection(code=1000)))
                call.closed = True  # nothing more goes out after the close frame
                while call.backlog or call.flushing:
                    await trio.sleep(0.01)
                with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                    await call.read()
        call.closed = True


async def run_calls(
    base_url: str,
    script: CallerScript,
    *,
    speak: Callable[[str], bytes],
    starts: Sequence[float] = (0.0,),
    prefix: str = "lean",
    scripts: Sequence[CallerScript] | None = None,
    background: bytes = SILENCE,
    quiet: float = QUIET_BEFORE_SPEAKING,
    phases: int = 1,
) -> list[CallOutcome]:
    """Place ``len(starts)`` scripted calls against ``base_url``, call ``i`` at ``starts[i]``
    (with ``scripts[i]`` when given; see :class:`LeanPlatform`)."""
    platform = LeanPlatform(base_url, script, speak, scripts, background, quiet, phases)
    return await platform.run(starts, prefix)
