"""Stand-in providers for tests over the real server: they answer at once and never use threads.

Threads would let trio's autojump clock leap ahead while they run, so tests on a
MockClock use these instead of the offline speech providers.
"""

import trio

from adapters.providers.interfaces import Providers
from engine import events as ev


class Ear:
    """A recognizer that counts the frames it is given (or never reads, to fill the buffer)."""

    def __init__(self, read: bool = True):
        self.read = read
        self.frames = 0

    def __call__(self):
        return self

    async def run(self, audio, link):
        if not self.read:
            await trio.sleep_forever()
        async for _ in audio:
            self.frames += 1


class Quiet:
    """A model and a voice that finish at once and say nothing."""

    async def complete(self, utterance, messages, link):
        await link.emit(ev.LlmDone(utterance))

    async def synthesize(self, utterance, seq, text, link):
        await link.emit(ev.TtsDone(utterance, seq))


def quiet(ear: Ear | None = None) -> Providers:
    return Providers(stt=ear or Ear(), llm=Quiet(), tts=Quiet())


class Talker(Quiet):
    """Answers every utterance with "Noted." and voices each sentence as 0.1 s of audio."""

    async def complete(self, utterance, messages, link):
        await link.emit(ev.LlmText(utterance, "Noted."))
        await link.emit(ev.LlmDone(utterance))

    async def synthesize(self, utterance, seq, text, link):
        await link.emit(ev.TtsAudio(utterance, seq, b"\x7f" * 800))
        await link.emit(ev.TtsDone(utterance, seq))


class Hears:
    """A recognizer that hears one final sentence at frame ``at_frame`` (counted from 1)."""

    def __init__(self, at_frame: int = 1, text: str = "that is all"):
        self.at_frame = at_frame
        self.text = text

    def __call__(self):
        return self

    async def run(self, audio, link):
        frames = 0
        async for _ in audio:
            frames += 1
            if frames == self.at_frame:
                await link.emit(ev.Transcript(self.text, is_final=True, speech_final=True))
