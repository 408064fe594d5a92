"""Offline recognition on the phone path: ``uv run python bench/offline_asr.py``.

What a newcomer's demo hears depends on whether the recognizer gets the
numbers, days and times right, so this measures slot values (as the
scripted agent reads them, :func:`adapters.offline.understanding.slots_in`) as well as
the word error rate. Two sets:

- ``demo``: the demo caller's lines (``adapters.app.demo.DEMO_SCRIPT``) in the
  demo caller's voice;
- ``wider``: every phrase a scripted agent in ``adapters/offline/agents/`` expects
  (its ``hints``), said as a sentence by the demo caller's voice and by
  ``en-us+m3``.

Each run renders every line afresh in a shuffled order (espeak's output
drifts with what it said before, so runs differ a little, as calls do) and
sends it as one call's audio: 1 s of silence, then each line followed by
1.5 s of silence, through :class:`adapters.offline.sphinx.SphinxSTT` exactly as a
call would (local VAD, pre-roll, the script's hints), on a clock that
follows the audio, so it runs faster than real time.

``--compare`` measures the recognizer settings one change at a time, from
pocketsphinx's defaults with a grammar of one or two phrases (the settings
before) to those in use. ``--logs FILE...`` scores recorded demo calls
instead (the call logs that ``uv run voice-agent demo`` writes): the slot
values the agent gathered from what it heard, against those of the demo
caller's lines. The figures are in ``docs/offline.md``.
"""

from __future__ import annotations

import argparse
import collections
import logging
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path

import attrs
import trio

from adapters.app.demo import DEMO_SCRIPT
from adapters.media.audio import FRAME_BYTES, ULAW_SILENCE
from adapters.offline.espeak import Espeak
from adapters.offline.scripted import BUILTIN_SCRIPT, load_script
from adapters.offline.sphinx import SphinxRecognizer, SphinxSTT
from adapters.offline.understanding import known_slots, slots_in, words
from adapters.providers.interfaces import ProviderLink
from adapters.simulator.script import CALLER_VOICE
from engine.calllog import read_log
from engine.commands import Message
from engine.events import CallerSpeechStarted, Transcript

OTHER_VOICE = "en-us+m3"

#: ``SphinxRecognizer`` settings for ``--compare``, each line adding one change.
SETTINGS: dict[str, dict[str, object]] = {
    "before: two phrases, defaults": {
        "grammar_options": {},
        "phrases": 2,
        "phone_line": False,
    },
    "+ bestpath off": {"grammar_options": {"bestpath": False}, "phrases": 2, "phone_line": False},
    "+ one phrase": {"grammar_options": {"bestpath": False}, "phone_line": False},
    "+ phone-line variants": {"grammar_options": {"bestpath": False}},
    "+ topn 16": {"grammar_options": {"bestpath": False, "topn": 16}},
    "+ frate 120 (in use)": {},
    "  frate 110 instead": {"grammar_options": {"bestpath": False, "topn": 16, "frate": 110}},
    "  frate 125 instead": {"grammar_options": {"bestpath": False, "topn": 16, "frate": 125}},
    "  two phrases instead": {"phrases": 2},
}
LEAD_S = 1.0
GAP_S = 1.5
FRAME_S = FRAME_BYTES / 8000


@attrs.frozen
class Heard:
    """One line as said and as recognized."""

    voice: str
    said: str
    heard: str


def as_sentence(phrase: str) -> str:
    """A hint as a caller would say it: capitalised, with a full stop."""
    return phrase[:1].upper() + phrase[1:] + "."


async def transcribe(stt: SphinxSTT, lines: Sequence[bytes]) -> list[str]:
    """Send the lines as one call's audio; what was recognized in each line's span."""
    spans: list[tuple[float, float]] = []
    t = LEAD_S
    for audio in lines:
        spans.append((t, t + len(audio) / 8000 + GAP_S))
        t = spans[-1][1]
    stream = ULAW_SILENCE * round(LEAD_S * 8000)
    for audio in lines:
        stream += audio + ULAW_SILENCE * round(GAP_S * 8000)
    clock = [0.0]

    async def frames() -> AsyncIterator[bytes]:
        for start in range(0, len(stream), FRAME_BYTES):
            clock[0] = start / 8000  # the arrival time of this frame
            yield stream[start : start + FRAME_BYTES]

    heard: dict[int, list[str]] = collections.defaultdict(list)
    started = [0.0]

    async def emit(event) -> None:
        if isinstance(event, CallerSpeechStarted):
            started[0] = event.at
        elif isinstance(event, Transcript) and event.is_final:
            index = next(
                (i for i, (a, b) in enumerate(spans) if a - 0.3 <= started[0] < b - 0.3), None
            )
            if index is not None:
                heard[index].append(event.text)

    link = ProviderLink("bench", emit, lambda: clock[0], logging.LoggerAdapter(logging.getLogger()))
    await stt.run(frames(), link)
    return [" ".join(heard[i]) for i in range(len(lines))]


def measure(
    lines: Sequence[tuple[str, str]],
    hints: Sequence[str],
    runs: int,
    seed: int,
    settings: Mapping[str, object] | None = None,
) -> list[Heard]:
    """Every (voice, text) line recognized ``runs`` times, one call per voice per run."""
    results: list[Heard] = []
    voices = {v: Espeak(v) for v in dict.fromkeys(v for v, _ in lines)}
    rng = random.Random(seed)
    for _ in range(runs):
        for voice, espeak in voices.items():
            texts = [text for v, text in lines if v == voice]
            rng.shuffle(texts)
            audio = [espeak.synthesize_ulaw8k(text) for text in texts]
            stt = SphinxSTT(hints, threaded=False, recognizer=settings)
            for text, heard in zip(texts, trio.run(transcribe, stt, audio), strict=True):
                results.append(Heard(voice, text, heard))
    return results


def edit_distance(a: Sequence[str], b: Sequence[str]) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (x != y))
    return row[-1]


@attrs.frozen
class Score:
    lines: int
    words: int
    word_errors: int
    slots: int
    slots_right: int
    slots_extra: int
    lines_all_slots_right: int
    lines_with_slots: int

    @property
    def wer(self) -> float:
        return self.word_errors / self.words if self.words else 0.0


def score(results: Sequence[Heard]) -> Score:
    """Word errors, and slot values right: the value the script would act on, per slot said."""
    n_words = errors = slots = right = extra = all_right = with_slots = 0
    for r in results:
        ref, hyp = words(r.said), words(r.heard)
        n_words += len(ref)
        errors += edit_distance(ref, hyp)
        want, got = slots_in(r.said), slots_in(r.heard)
        hits = sum(got.get(k) == v for k, v in want.items())
        slots += len(want)
        right += hits
        extra += sum(k not in want for k in got)
        if want:
            with_slots += 1
            all_right += hits == len(want) and got.keys() <= want.keys()
    return Score(len(results), n_words, errors, slots, right, extra, all_right, with_slots)


def report(name: str, results: Sequence[Heard], runs: int, misses: int = 12) -> None:
    s = score(results)
    print(
        f"{name:6s} {s.lines:4d} lines ({runs} runs)  WER {s.wer:6.1%}  "
        f"slot values right {s.slots_right}/{s.slots} ({s.slots_right / max(1, s.slots):.1%}), "
        f"extra slots {s.slots_extra}, lines with every slot right "
        f"{s.lines_all_slots_right}/{s.lines_with_slots}"
    )
    wrong = collections.Counter(
        (r.voice, r.said, r.heard) for r in results if words(r.said) != words(r.heard)
    )
    for (voice, said, heard), count in wrong.most_common(misses):
        flag = "SLOT" if slots_in(said) != slots_in(heard) else "    "
        print(f"   {flag} {count:3d}x {voice:9s} {said!r:40s} -> {heard!r}")


def wider_lines(path: Path) -> list[tuple[str, str]]:
    """Every phrase a script expects, as a sentence, in both voices."""
    phrases = load_script(path).hints
    return [(v, as_sentence(p)) for v in (CALLER_VOICE, OTHER_VOICE) for p in phrases]


def compare(runs: int, seed: int) -> None:
    """The demo and wider sets under each of :data:`SETTINGS`, one summary line each."""
    demo_lines = [(CALLER_VOICE, line.text) for line in DEMO_SCRIPT.lines if line.text]
    scripts = sorted(BUILTIN_SCRIPT.parent.glob("*.toml"))
    for name, settings in SETTINGS.items():
        started = time.process_time()
        demo = measure(demo_lines, load_script(BUILTIN_SCRIPT).hints, runs, seed, settings)
        wider = [
            heard
            for path in scripts
            for heard in measure(wider_lines(path), load_script(path).hints, runs, seed, settings)
        ]
        print(f"== {name}  ({time.process_time() - started:.0f} s CPU)", flush=True)
        decode_cost(load_script(BUILTIN_SCRIPT).hints, runs, settings)
        report("demo", demo, runs, misses=0)
        report("wider", wider, runs, misses=0)
        for voice in (CALLER_VOICE, OTHER_VOICE):
            report(f" {voice}", [r for r in wider if r.voice == voice], runs, misses=0)


def decode_cost(
    hints: Sequence[str], runs: int, settings: Mapping[str, object] | None = None
) -> None:
    """CPU time to decode one 20 ms frame of speech, fed frame by frame as a call does."""
    speak = Espeak(CALLER_VOICE)
    audio = [speak.synthesize_ulaw8k(line.text) for line in DEMO_SCRIPT.lines if line.text]
    started = time.process_time()
    recognizer = SphinxRecognizer(hints, **(settings or {}))
    setup = time.process_time() - started
    costs: list[float] = []
    for _ in range(runs):
        for utterance in audio:
            recognizer.start()
            for start in range(0, len(utterance), FRAME_BYTES):
                before = time.process_time()
                recognizer.feed(utterance[start : start + FRAME_BYTES])
                costs.append(time.process_time() - before)
            before = time.process_time()
            recognizer.finish()
            costs[-1] += time.process_time() - before
    costs.sort()
    print(
        f"decoding: {sum(costs) / len(costs) * 1000:.2f} ms CPU per 20 ms frame, "
        f"99th percentile {costs[int(0.99 * len(costs))] * 1000:.2f} ms, "
        f"worst {costs[-1] * 1000:.1f} ms ({len(costs)} frames); recognizer set-up {setup:.2f} s"
    )


def score_logs(paths: Sequence[str]) -> None:
    """Per demo call: what the recognizer heard, and the slot values the agent acted on."""
    want, _ = known_slots(Message("user", line.text) for line in DEMO_SCRIPT.lines if line.text)
    right = calls_right = 0
    for path in paths:
        with open(path, encoding="utf-8") as file:
            records = [r for _, r in read_log(file)]
        heard = [
            r["text"]
            for r in records
            if r.get("kind") == "event" and r.get("event") == "Transcript" and r.get("is_final")
        ]
        got, _ = known_slots(Message("user", text) for text in heard)
        hits = sum(got.get(k) == v for k, v in want.items())
        right += hits
        calls_right += hits == len(want) and got.keys() <= want.keys()
        print(f"{hits}/{len(want)} {got} {heard}")
    print(
        f"demo calls: slot values right {right}/{len(want) * len(paths)}, "
        f"calls with every slot right {calls_right}/{len(paths)} (expected {want})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--set", choices=("demo", "wider", "both"), default="both")
    parser.add_argument("--logs", nargs="+", metavar="FILE", help="score recorded demo calls")
    parser.add_argument("--compare", action="store_true", help="measure each settings change")
    args = parser.parse_args()
    if args.logs:
        score_logs(args.logs)
        return
    if args.compare:
        compare(args.runs, args.seed)
        return
    demo_hints = load_script(BUILTIN_SCRIPT).hints
    started = time.perf_counter()
    decode_cost(demo_hints, args.runs)
    if args.set in ("demo", "both"):
        lines = [(CALLER_VOICE, line.text) for line in DEMO_SCRIPT.lines if line.text]
        report("demo", measure(lines, demo_hints, args.runs, args.seed), args.runs)
    if args.set in ("wider", "both"):
        results: list[Heard] = []
        for path in sorted(BUILTIN_SCRIPT.parent.glob("*.toml")):
            results += measure(wider_lines(path), load_script(path).hints, args.runs, args.seed)
        report("wider", results, args.runs)
        for voice in (CALLER_VOICE, OTHER_VOICE):
            report(f" {voice}", [r for r in results if r.voice == voice], args.runs)
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
