"""A small harness that drives the pure engine with explicit times."""

from engine import events as ev
from engine.calllog import LoggedEngine, LogWriter
from engine.config import AgentConfig
from engine.core import Engine

AUDIO = b"\xff" * 800  # 0.1 s of mu-law silence


class Drive:
    """Feeds events to a Engine at explicit times and keeps every command."""

    def __init__(self, writer: LogWriter | None = None, **config):
        """With ``writer``, every step is also written as a call log's records."""
        self.core = Engine(AgentConfig(**config))
        self.logged = LoggedEngine(self.core, writer) if writer is not None else None
        self.log: list[tuple[float, object]] = []

    def __call__(self, event, t):
        commands = (self.logged or self.core).handle(event, t)
        self.log.extend((t, c) for c in commands)
        return commands

    @property
    def state(self):
        return self.core.state

    def voice(self, utterance, seq, t, audio=AUDIO):
        """The TTS delivers one sentence's audio at ``t``."""
        return self(ev.TtsAudio(utterance, seq, audio), t) + self(ev.TtsDone(utterance, seq), t)

    def greet(self, t_heard=2.0):
        """Call start, greeting voiced and heard: the call is listening at ``t_heard``."""
        self(ev.CallStarted("call-1", "stream-1"), 0.0)
        self.voice(1, 0, 0.2)
        self(ev.AudioPlayed("1.0"), t_heard)
        assert self.state == "listening"

    def say(self, text, t):
        return self(ev.Transcript(text, is_final=True, speech_final=True), t)

    def reply(self, utterance, sentences, t, heard=True):
        """The model streams ``sentences``; each is voiced and (optionally) heard."""
        out = []
        for sentence in sentences:
            out += self(ev.LlmText(utterance, sentence + " "), t)
        out += self(ev.LlmDone(utterance), t)
        for seq in range(len(sentences)):
            out += self.voice(utterance, seq, t + 0.1)
            if heard:
                out += self(ev.AudioPlayed(f"{utterance}.{seq}"), t + 0.2 + seq)
        return out


def of(commands, kind):
    return [c for c in commands if isinstance(c, kind)]
