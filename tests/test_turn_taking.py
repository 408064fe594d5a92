"""A false interruption costs the caller almost no dead air, and resumed sentences keep their order.

Run through the real runner on a mock clock: the engine, the provider work and
the media session as in a live call, with stand-in providers whose timing is
the test's to choose (a recognizer that hears a cough and says it had no words,
a voice with a first-byte delay).
"""

from __future__ import annotations

import json

import trio
from test_runner import Frames

from adapters.call.runner import CallOptions, CallRunner
from adapters.call.work import OrderedSlots, ProviderWork
from adapters.providers.interfaces import ProviderLink, Providers
from adapters.vobiz.protocol import Start
from engine import commands as cmd
from engine import events as ev
from engine.config import AgentConfig

FIRST_BYTE = 0.15  # the voice's time to its first audio


class Voice:
    """Each sentence: its first audio after FIRST_BYTE, 1 s of it in all."""

    def __init__(self) -> None:
        self.started: list[tuple[int, int]] = []

    async def synthesize(self, utterance, seq, text, link):
        self.started.append((utterance, seq))
        await trio.sleep(FIRST_BYTE)
        for _ in range(10):
            await link.emit(ev.TtsAudio(utterance, seq, b"\x10" * 800))
        await link.emit(ev.TtsDone(utterance, seq))


class Brain:
    async def complete(self, utterance, messages, link):
        await link.emit(ev.LlmText(utterance, "We have pasta. We have pizza. We have salads."))
        await link.emit(ev.LlmDone(utterance))


class CoughEar:
    """Hears a question at 1 s; then a 200 ms cough at ``cough`` that had no words.

    Its events follow the call's clock, as a recognizer beside a local VAD would
    send them: the VAD's onset 100 ms into the sound, its offset 200 ms after it,
    the recognizer's empty final ``final_after`` seconds after the sound began.
    """

    def __init__(self, cough: float, final_after: float = 0.48) -> None:
        self.cough = cough
        self.final_after = final_after
        self.final_at: float | None = None

    def __call__(self):
        return self

    async def run(self, audio, link: ProviderLink):
        await trio.sleep_until(link_t0(link) + 1.0)
        await link.emit(ev.Transcript("what do you have", is_final=True, speech_final=True))
        at = link_t0(link) + self.cough
        await trio.sleep_until(at + 0.1)
        await link.emit(ev.CallerSpeechStarted(at=self.cough, source="vad"))
        await trio.sleep_until(at + 0.4)
        await link.emit(ev.CallerSpeechStopped(at=self.cough + 0.2, source="vad"))
        await trio.sleep_until(at + self.final_after)
        self.final_at = link.now()
        await link.emit(ev.Transcript("", is_final=True, speech_final=True))
        await trio.sleep_forever()


def link_t0(link: ProviderLink) -> float:
    return trio.current_time() - link.now()


async def call_with_a_cough(tmp_path, ear: CoughEar, voice: Voice) -> list[dict]:
    options = CallOptions(
        config=AgentConfig(greeting="Hi."),
        providers=Providers(stt=ear, llm=Brain(), tts=voice),
        log_dir=tmp_path,
    )
    runner = CallRunner(Start("call-1", "stream-1"), options)
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        nursery.start_soon(runner.serve_socket, Frames([]))
        await trio.sleep(ear.cough + 3.0)
        runner.end_from_outside("test over")
    return [json.loads(line) for line in runner.path.read_text().split("\n")[:-1]]


async def test_after_a_cough_the_reply_resumes_within_150_ms_of_the_empty_final(
    tmp_path, autojump_clock
):
    ear, voice = CoughEar(cough=3.0), Voice()
    records = await call_with_a_cough(tmp_path, ear, voice)
    cleared = next(r["t"] for r in records if r.get("command") == "ClearAudio")
    resumed = [
        r
        for r in records
        if r.get("command") == "PlayAudio" and r["t"] > cleared and r["utterance"] == 3
    ]
    assert resumed, "the reply resumed"
    assert ear.final_at is not None
    delay = resumed[0]["t"] - ear.final_at
    assert delay <= 0.15 + FIRST_BYTE + 1e-6, delay
    # The timer is only the fallback: nowhere near its 1.5 s.
    assert resumed[0]["t"] - cleared < AgentConfig().false_interruption_timeout


async def test_resumed_sentences_are_synthesized_in_their_order(tmp_path, autojump_clock):
    for _ in range(10):  # trio's scheduler may reverse a batch of new tasks: try it often
        ear, voice = CoughEar(cough=3.0), Voice()
        await call_with_a_cough(tmp_path, ear, voice)
        resumed = [seq for utterance, seq in voice.started if utterance == 3]
        assert resumed == sorted(resumed), voice.started


async def test_look_ahead_slots_are_taken_in_the_order_they_were_asked_for(autojump_clock):
    slots, entered = OrderedSlots(2), []

    async def sentence(ticket: int) -> None:
        async with slots.slot(ticket):
            entered.append(ticket)
            await trio.sleep(0.1)

    for _ in range(20):
        entered.clear()
        async with trio.open_nursery() as nursery:
            for ticket in [slots.ticket() for _ in range(6)]:
                nursery.start_soon(sentence, ticket)
        assert entered == sorted(entered)


async def test_a_cancelled_request_gives_its_turn_to_the_next(autojump_clock):
    slots = OrderedSlots(1)
    first, second = slots.ticket(), slots.ticket()
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:
            scope.cancel()
            try:
                async with slots.slot(first):
                    await trio.sleep(1)
            except trio.Cancelled:
                pass
        with trio.fail_after(1):
            async with slots.slot(second):
                pass
        nursery.cancel_scope.cancel()


def test_provider_work_carries_out_only_its_own_commands():
    voice = Voice()
    work = ProviderWork(Providers(stt=voice, llm=Brain(), tts=voice), None, 0.0)  # type: ignore[arg-type]

    class Nursery:
        def start_soon(self, *args):
            pass

    work.start(Nursery())  # type: ignore[arg-type]
    assert work.carry_out(cmd.Synthesize(1, 0, "Hi.")) is True
    assert work.carry_out(cmd.ClearAudio()) is False
