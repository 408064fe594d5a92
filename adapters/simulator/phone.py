"""The simulated phone of one call: it sends the caller's audio and plays the agent's.

Agent audio goes into a playout queue that drains at real-time rate, so
``playedStream`` is sent when the audio would really have been heard and
``clearAudio`` cuts what was not; caller media goes out every 20 ms on an
absolute schedule. Each frame the server sends is checked against what Vobiz
accepts (:mod:`adapters.simulator.vobiz_rules`). After a scripted drop it
reconnects with a fresh ``start``, as Vobiz's stream retries do.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import uuid
from collections.abc import Callable

import trio
import trio_websocket

from adapters.providers.wsclient import open_client
from adapters.simulator import vobiz_rules
from adapters.simulator.script import (
    FRAME_BYTES,
    FRAME_SECONDS,
    POLL,
    QUIET_BEFORE_SPEAKING,
    RATE,
    SILENCE,
    STALE_WINDOW,
    AgentText,
    CallerScript,
    PlayedSentence,
    SimulationResult,
    TranscriptEntry,
    Turn,
    heard_part,
)
from adapters.simulator.wire import VobizRefused, start_event


class SimulatedPhone:
    """The live state of one simulated call; all times are relative to ``t0``."""

    def __init__(
        self,
        call_id: str,
        on_event: Callable[[TranscriptEntry], None] | None,
        *,
        strict: bool = True,
        max_retries: int = 0,
        agent_text: AgentText | None = None,
    ) -> None:
        self.ws: trio_websocket.WebSocketConnection | None = None  # None while disconnected
        self.call_id = call_id
        self.stream_id = ""
        self.on_event = on_event
        self.strict = strict
        self.max_retries = max_retries
        self.sockets = 0
        self.sequence = 0  # Vobiz numbers every frame of a stream, from 0 at ``start``
        self.stopped = False  # the agent sent ``stop``: the stream is over
        self.violations: list[str] = []
        self.refused_socket = ""
        self.streaming = trio.Event()  # the first stream has started: the call's time 0
        self.agent_text = agent_text
        self.t0 = 0.0
        self.send_lock = trio.Lock()
        self.ended = trio.Event()
        self.stopped_by_agent = False
        # Caller side.
        self.sent = bytearray()
        self.utterance = b""
        self.utterance_pos = 0
        self.utterance_text = ""
        self.utterance_done = trio.Event()
        self.utterance_started = self.utterance_ended = 0.0
        self.speaking = False  # an utterance is being sent
        self.duration = 0.0
        self.nursery: trio.Nursery | None = None
        # Phone playout.
        self.playout_end = 0.0
        self.segments: list[list] = []  # [start, bytearray]
        self.pending: list[tuple[float, trio.CancelScope]] = []
        self.played: list[tuple[float, str]] = []
        self.agent_audio_times: list[float] = []
        self.clear_times: list[float] = []
        self.agent_spoke = False  # since the last caller line started
        self.agent_started_at: float | None = None  # start of playout since the last line
        self.stale = 0
        self.sentence_start: float | None = None  # playout start of audio not yet checkpointed
        self.sentences: list[PlayedSentence] = []
        self.transcript: list[TranscriptEntry] = []
        self.turns: list[dict] = []

    def now(self) -> float:
        return trio.current_time() - self.t0

    def note(self, t: float, who: str, what: str) -> None:
        entry = TranscriptEntry(round(t, 3), who, what)
        self.transcript.append(entry)
        if self.on_event is not None:
            self.on_event(entry)

    async def send(self, msg: dict) -> None:
        """Send on the live socket; while the stream is down (a drop), frames are lost."""
        ws = self.ws
        if ws is None:
            return
        msg = {"sequenceNumber": self.sequence, **msg}
        self.sequence += 1
        async with self.send_lock:
            with contextlib.suppress(trio_websocket.ConnectionClosed):
                await ws.send_message(json.dumps(msg, separators=(",", ":")))

    # ------------------------------------------------------------ caller media

    async def media_loop(self) -> None:
        n = 0
        while True:
            await trio.sleep_until(self.t0 + n * FRAME_SECONDS)
            frame = SILENCE
            if self.utterance_pos < len(self.utterance):
                if self.utterance_pos == 0:
                    self.speaking = True
                    self.utterance_started = n * FRAME_SECONDS
                    self.note(self.utterance_started, "caller", self.utterance_text)
                frame = self.utterance[self.utterance_pos : self.utterance_pos + FRAME_BYTES]
                frame = frame.ljust(FRAME_BYTES, b"\xff")
                self.utterance_pos += FRAME_BYTES
                if self.utterance_pos >= len(self.utterance):
                    self.speaking = False
                    self.utterance_ended = (n + 1) * FRAME_SECONDS
                    self.utterance_done.set()
            media = {
                "track": "inbound",
                "timestamp": str(n * 20),
                "chunk": n,
                "payload": base64.b64encode(frame).decode("ascii"),
            }
            self.sent += frame
            await self.send({"streamId": self.stream_id, "event": "media", "media": media})
            n += 1

    async def say(self, text: str, audio: bytes, barge_in: bool) -> None:
        """Hand the utterance to the media loop and wait until its last frame is out.

        The media loop stamps start and end with the frames' scheduled times,
        so latencies are measured against what the server could have heard.
        """
        self.agent_spoke = False
        self.agent_started_at = None
        self.utterance_done = trio.Event()
        self.utterance_text = text
        self.utterance, self.utterance_pos = audio or SILENCE, 0
        await self.utterance_done.wait()
        await trio.sleep_until(self.t0 + self.utterance_ended)  # the last frame's 20 ms
        self.turns.append(
            {
                "text": text,
                "started": self.utterance_started,
                "ended": self.utterance_ended,
                "barge_in": barge_in,
            }
        )

    # ------------------------------------------------------------ agent side

    async def receive_loop(self, ws: trio_websocket.WebSocketConnection) -> bool:
        """Take the agent's frames until the agent stops the stream; True when the socket was
        lost instead (closed without a ``stop``: a crashed or cut-off server)."""
        while True:
            try:
                text = await ws.get_message()
            except trio_websocket.ConnectionClosed:
                return True
            problem = vobiz_rules.refusal(text, self.stream_id, self.stopped)
            if problem is not None:
                self.refuse(problem)
                continue
            msg = json.loads(text)
            event = msg["event"]
            if event == "playAudio":
                self.on_play(base64.b64decode(msg["media"]["payload"]))
            elif event == "checkpoint":
                self.on_checkpoint(msg["name"])
            elif event == "clearAudio":
                now = self.now()
                self.note(now, "clear", self.describe_cut(now))
                self.cut(now)
                self.clear_times.append(now)
                await self.send({"event": "clearedAudio", "streamId": self.stream_id})
            elif event == "stop":  # Vobiz stops the stream at once and closes the socket
                self.cut(self.now())
                self.stopped = self.stopped_by_agent = True
                self.ended.set()
                return False

    def refuse(self, problem: str) -> None:
        """A frame Vobiz would ignore: recorded, and fatal in strict mode."""
        self.violations.append(problem)
        if self.strict:
            raise VobizRefused(problem)

    def on_play(self, audio: bytes) -> None:
        now = self.now()
        self.agent_audio_times.append(now)
        if self.clear_times and now - self.clear_times[-1] <= STALE_WINDOW and self.speaking:
            self.stale += 1
        start = max(now, self.playout_end)
        if start == now and self.agent_text is None:
            self.note(now, "agent", "(speaking)")
        if self.sentence_start is None:
            self.sentence_start = start
        if self.agent_started_at is None:
            self.agent_started_at = start
        self.agent_spoke = True
        self.segments.append([start, bytearray(audio)])
        self.playout_end = start + len(audio) / RATE

    def on_checkpoint(self, name: str) -> None:
        scope = trio.CancelScope()
        at = max(self.now(), self.playout_end)
        self.pending = [(t, s) for t, s in self.pending if t > self.now()]
        self.pending.append((at, scope))
        assert self.nursery is not None
        self.nursery.start_soon(self._played_at, at, name, scope)
        start, self.sentence_start = self.sentence_start, None
        if self.agent_text is not None and start is not None:
            sentence = PlayedSentence(start, at, self.agent_text(self.call_id, name))
            self.sentences.append(sentence)
            if start <= self.now():  # already playing: its first audio went straight out
                self.note(start, "agent", sentence.text or "(speaking)")
            else:
                said = trio.CancelScope()
                self.pending.append((start, said))
                self.nursery.start_soon(self._spoken_at, sentence, said)

    async def _spoken_at(self, sentence: PlayedSentence, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(self.t0 + sentence.start)
            self.note(sentence.start, "agent", sentence.text or "(speaking)")

    def describe_cut(self, now: float) -> str:
        """clearAudio, and which sentence it cut and how far in, when that is known."""
        for sentence in self.sentences:
            if sentence.start <= now < sentence.end and sentence.text:
                fraction = (now - sentence.start) / (sentence.end - sentence.start)
                said = heard_part(sentence.text, fraction)
                into = now - sentence.start
                return f'clearAudio: agent cut off {into:.1f} s into its sentence, after "{said}"'
        return "clearAudio"

    async def _played_at(self, at: float, name: str, scope: trio.CancelScope) -> None:
        with scope:
            await trio.sleep_until(self.t0 + at)
            self.played.append((self.now(), name))
            # Vobiz's playedStream carries only the event and the checkpoint's name.
            await self.send({"event": "playedStream", "name": name})

    def cut(self, now: float) -> None:
        """Drop everything queued past ``now``: the phone never plays it, Vobiz never confirms it."""
        self.sentence_start = None
        self.sentences = [s for s in self.sentences if s.start < now]
        for sentence in self.sentences:
            sentence.end = min(sentence.end, now)
        for seg in self.segments:
            keep = max(0, round((now - seg[0]) * RATE))
            del seg[1][keep:]
        self.segments = [seg for seg in self.segments if seg[1]]
        self.playout_end = min(self.playout_end, now)
        for at, scope in self.pending:
            if at > now:
                scope.cancel()
        self.pending = [(at, scope) for at, scope in self.pending if at <= now]

    # ------------------------------------------------------------ script

    async def run_script(self, script: CallerScript, audio: list[bytes]) -> None:
        for line, utterance in zip(script.lines, audio, strict=True):
            barge_in = not line.wait_for_agent and line.barge_in_after is not None
            if line.wait_for_agent:
                while not (
                    self.agent_spoke and self.now() >= self.playout_end + QUIET_BEFORE_SPEAKING
                ):
                    await trio.sleep(POLL)
            elif barge_in:
                while self.agent_started_at is None or self.now() < self.agent_started_at:
                    await trio.sleep(POLL)
                await trio.sleep_until(self.t0 + self.agent_started_at + (line.barge_in_after or 0))
            await trio.sleep(line.pause)
            if line.text:
                await self.say(line.text, utterance, barge_in)
            if line.dtmf:
                await self.press(line.dtmf, after_speech=bool(line.text))

    async def press(self, digits: str, after_speech: bool) -> None:
        """Keys 100 ms apart, Plivo-style; the turn's voice-to-voice counts from the last key."""
        if not after_speech:
            self.agent_spoke = False
            self.agent_started_at = None
        started = self.now()
        self.note(started, "caller", f"[DTMF {digits}]")
        for i, digit in enumerate(digits):
            if i:
                await trio.sleep(0.1)
            await self.send({"event": "dtmf", "dtmf": {"digit": digit}})
        if after_speech:
            self.turns[-1]["ended"] = self.now()
        else:
            turn = {"text": f"[DTMF {digits}]", "started": started, "barge_in": False}
            self.turns.append({**turn, "ended": self.now()})

    async def run(self, url: str, script: CallerScript, audio: list[bytes]) -> None:
        """The call from its first ``start`` (time 0) until either side ends it."""
        with trio.CancelScope() as limit:
            async with trio.open_nursery() as nursery:
                self.nursery = nursery

                async def when_streaming() -> None:
                    await self.streaming.wait()
                    limit.deadline = self.t0 + script.hang_up_after
                    nursery.start_soon(self.media_loop)
                    nursery.start_soon(self.run_script, script, audio)

                nursery.start_soon(when_streaming)
                await self.connect(url, script)
                nursery.cancel_scope.cancel()
        self.cut(self.now())
        self.duration = self.now()

    async def connect(self, url: str, script: CallerScript) -> None:
        """Open the media socket; after a drop or a lost socket, reconnect as Vobiz's retries do."""
        drop_at = script.drop_stream_at
        attempts = 0
        while True:
            attempts += 1
            lost = await self.one_socket(url, drop_at)
            if not lost or attempts > self.max_retries:
                return
            drop_at = None
            await trio.sleep(script.reconnect_after)

    async def one_socket(self, url: str, drop_at: float | None) -> bool:
        """One stream: a fresh ``start`` with a new stream id; True when it was lost (a retry
        may follow): dropped by the script, closed without ``stop``, or refused on a retry."""
        try:
            async with open_client(url) as ws:
                self.ws, self.sockets, self.sequence = ws, self.sockets + 1, 0
                self.refused_socket = ""
                self.stream_id = f"stream-{uuid.uuid4().hex[:12]}"
                if not self.streaming.is_set():
                    self.t0 = trio.current_time()
                await self.send(start_event(self.call_id, self.stream_id))
                self.streaming.set()
                deadline = math.inf if drop_at is None else self.t0 + drop_at
                with trio.move_on_at(deadline) as drop:
                    lost = await self.receive_loop(ws)
                self.ws = None
        except (trio_websocket.HandshakeError, OSError) as exc:
            self.note(self.now(), "clear", f"media socket refused: {exc}")
            self.refused_socket = str(exc)
            return self.streaming.is_set()  # a retry may find the call elsewhere
        if drop.cancelled_caught:
            self.cut(self.now())  # what was queued on the dropped stream is never played
            self.note(self.now(), "clear", "(network drop: media socket lost)")
            return True
        if lost and not self.stopped:
            self.cut(self.now())
            self.note(self.now(), "clear", "(media socket closed without stop)")
            return True
        return False

    def result(self) -> SimulationResult:
        turns = []
        for turn in self.turns:
            after = [t for t in self.agent_audio_times if t >= turn["ended"]]
            v2v = after[0] - turn["ended"] if after else None
            clear = None
            if turn["barge_in"]:
                clears = [t for t in self.clear_times if t >= turn["started"]]
                clear = clears[0] - turn["started"] if clears else None
            turns.append(Turn(voice_to_voice=v2v, barge_in_to_clear=clear, **turn))
        return SimulationResult(
            call_id=self.call_id,
            duration=self.duration,
            stopped_by_agent=self.stopped_by_agent,
            transcript=tuple(self.transcript),
            turns=tuple(turns),
            stale_audio_after_clear=self.stale,
            played_checkpoints=tuple(self.played),
            cleared=len(self.clear_times),
            caller_audio=bytes(self.sent),
            agent_segments=tuple((start, bytes(audio)) for start, audio in self.segments),
            violations=tuple(self.violations),
            sockets=self.sockets,
        )
