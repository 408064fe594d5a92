"""CallSession on its own: a call driven through an in-memory transport."""

import json

import trio

from adapters.runner import CallOptions, CallSession, Providers, Transport
from adapters.vobiz import Start
from engine import events as ev
from engine.config import AgentConfig


class Silent:
    """A recognizer that hears nothing; a voice that finishes at once."""

    def __call__(self):
        return self

    async def run(self, audio, link):
        async for _ in audio:
            pass

    async def synthesize(self, turn, seq, text, link):
        await link.emit(ev.TtsDone(turn, seq))


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
    session = CallSession(Start("call-1", "stream-1"), options)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await session.serve_socket(Frames([json.dumps({"event": "stop"})]))
    lines = session.path.read_text().splitlines()
    assert json.loads(lines[-1])["kind"] == "footer"

    session.note("hangup_webhook", Event="Hangup")  # the webhook that came too late
    session.end_from_outside("hangup webhook")

    assert session.path.read_text().splitlines() == lines


def test_settling_warms_the_providers_and_freezes_the_heap_out_of_the_collector():
    import gc

    from adapters.cli import GC_THRESHOLDS, settle

    class Warmable(Silent):
        warmed = 0

        def warm(self):
            self.warmed += 1

    voice = Warmable()

    class App:
        class hub:
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
