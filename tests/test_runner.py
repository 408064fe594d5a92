"""CallRunner on its own: a call driven through an in-memory transport."""

import base64
import json

import trio

from adapters.call.runner import CallOptions, CallRunner
from adapters.providers.interfaces import Providers, Transport
from adapters.vobiz.protocol import Start
from engine import events as ev
from engine.config import AgentConfig


class Silent:
    """A recognizer that hears nothing; a voice that finishes at once."""

    def __call__(self):
        return self

    async def run(self, audio, link):
        async for _ in audio:
            pass

    async def synthesize(self, utterance, seq, text, link):
        await link.emit(ev.TtsDone(utterance, seq))


class Frames(Transport):
    def __init__(self, frames):
        self.frames = list(frames)
        self.sent = []

    async def receive(self):
        if not self.frames:
            await trio.sleep_forever()
        return self.frames.pop(0)

    async def send(self, text):
        self.sent.append(text)


async def test_a_webhook_after_the_footer_is_not_written_and_does_not_raise(tmp_path):
    silent = Silent()
    options = CallOptions(
        config=AgentConfig(greeting="Hello."),
        providers=Providers(stt=silent, llm=silent, tts=silent),
        log_dir=tmp_path,
    )
    session = CallRunner(Start("call-1", "stream-1"), options)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await session.serve_socket(Frames([json.dumps({"event": "stop"})]))
    lines = session.path.read_text().split("\n")[:-1]
    assert json.loads(lines[-1])["kind"] == "footer"

    session.note("hangup_webhook", Event="Hangup")  # the webhook that came too late
    session.end_from_outside("hangup webhook")

    assert session.path.read_text().split("\n")[:-1] == lines


def test_settling_warms_the_providers_and_freezes_the_heap_out_of_the_collector():
    import gc

    from adapters.app.serving import GC_THRESHOLDS, settle

    class Warmable(Silent):
        warmed = 0

        def warm(self):
            self.warmed += 1

    voice = Warmable()

    class App:
        class switchboard:
            providers = Providers(stt=voice, llm=voice, tts=voice)

    thresholds = gc.get_threshold()
    try:
        settle(App)
        assert voice.warmed == 2  # the model and the voice
        assert gc.get_freeze_count() > 1000
        assert gc.get_threshold() == GC_THRESHOLDS
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


class Stalled(Frames):
    """A socket that takes one message and then nothing until ``drain`` is set."""

    def __init__(self):
        super().__init__([])
        self.drain = trio.Event()

    async def send(self, text):
        if self.sent:
            await self.drain.wait()
        self.sent.append(text)


class Talkative(Silent):
    """A voice that returns two seconds of audio at once, in 100 ms chunks."""

    async def synthesize(self, utterance, seq, text, link):
        for _ in range(20):
            await link.emit(ev.TtsAudio(utterance, seq, b"\x7f" * 800))
        await link.emit(ev.TtsDone(utterance, seq))


async def test_a_stalled_socket_does_not_delay_a_barge_in_and_unsent_audio_is_dropped(
    tmp_path, autojump_clock
):
    voice = Talkative()
    options = CallOptions(
        config=AgentConfig(greeting="Hello there.", greeting_interruptible=True),
        providers=Providers(stt=voice, llm=voice, tts=voice),
        log_dir=tmp_path,
    )
    session = CallRunner(Start("call-1", "stream-1"), options)
    socket = Stalled()
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        nursery.start_soon(session.serve_socket, socket)
        await trio.sleep(1.0)  # the greeting's 2 s of audio is queued; one frame got out
        assert len(socket.sent) == 1
        await session.events_tx.send(ev.CallerSpeechStarted(at=session.now(), source="vad"))
        await trio.sleep(0.2)  # past barge_in_min_speech, socket still stalled
        records = [json.loads(line) for line in session.path.read_text().split("\n")[:-1]]
        assert "ClearAudio" in [r.get("command") for r in records], "the engine was not blocked"
        socket.drain.set()
        await trio.sleep(0.1)
        session.end_from_outside("test over")

    kinds = [json.loads(text)["event"] for text in socket.sent]
    # One frame written, one caught mid-write by the stall, the greeting's checkpoint kept
    # (Vobiz answers it once the audio before it is gone); the other 98 frames never went.
    assert kinds == ["playAudio", "playAudio", "checkpoint", "clearAudio"]


async def test_a_failing_inline_vad_is_noted_once_and_the_call_goes_on(tmp_path):
    class Broken:
        def detector(self):
            return self

        def feed(self, chunk, now):
            raise RuntimeError("classifier exploded")

    silent = Silent()
    options = CallOptions(
        config=AgentConfig(greeting="Hello."),
        providers=Providers(stt=silent, llm=silent, tts=silent, vad=Broken()),
        log_dir=tmp_path,
    )
    session = CallRunner(Start("call-1", "stream-1"), options)
    payload = base64.b64encode(b"\xff" * 160).decode()
    media = json.dumps({"event": "media", "media": {"payload": payload}})
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await session.serve_socket(Frames([media] * 5 + [json.dumps({"event": "stop"})]))
    records = [json.loads(line) for line in session.path.read_text().split("\n")[:-1]]
    assert [r["what"] for r in records if r["kind"] == "note"] == ["vad_failed"]
    assert records[-1]["kind"] == "footer" and records[-1]["dropped_audio_frames"] == 0


async def test_quiet_caller_audio_reaches_the_recognizer_in_batches_and_speech_at_once():
    import logging

    from adapters.call.reader import SocketReader
    from adapters.media.vad import VadDetector
    from adapters.vobiz.session import MediaSession

    class Loudness:  # the VAD's verdict per frame: anything but silence is voice
        def is_speech(self, frame: bytes) -> bool:
            return frame != b"\xff" * 160

    events_tx, _events_rx = trio.open_memory_channel(100)
    audio_tx, audio_rx = trio.open_memory_channel(100)
    reader = SocketReader(
        MediaSession(Start("call-1", "stream-1")),
        events_tx,
        audio_tx,
        VadDetector(Loudness(), onset_s=0.1, offset_s=0.5),
        None,
        lambda *a, **k: None,
        lambda: 0.0,
        logging.LoggerAdapter(logging.getLogger("test"), {}),
        max_protocol_errors=20,
    )

    def media(chunk: bytes) -> str:
        payload = base64.b64encode(chunk).decode()
        return json.dumps({"event": "media", "media": {"payload": payload}})

    speech = b"\x10" * 160 * 15
    quiet = [media(b"\xff" * 160)] * 12
    voiced = [media(speech[i : i + 160]) for i in range(0, len(speech), 160)]
    after = [media(b"\xff" * 160)] * 30  # 600 ms: past the VAD's 500 ms offset
    frames = [*quiet, *voiced, *after, json.dumps({"event": "stop"})]
    await reader.read(Frames(frames), lambda: False)
    heard = []
    while True:
        try:
            heard.append(len(audio_rx.receive_nowait()))
        except trio.WouldBlock:
            break
    # Quiet and speech go in batches of up to 100 ms.
    assert sum(heard) == 160 * (12 + 15 + 30)
    assert heard[:5] == [800, 800, 800, 800, 800]  # 12 quiet and 13 voiced frames
    # Two voiced frames and the first silent one, then each silent frame until the VAD's
    # offset (25 frames) says the speech ended; then batches again, the rest at the end.
    assert heard[5:] == [480] + [160] * 23 + [800, 160]
