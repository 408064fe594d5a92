"""Speculative replies with Deepgram Flux: voice-to-voice with speculation on and off, at one call.

    uv run python bench/flux_speculation.py                 # 4 calls per mode, 8 turns each
    uv run python bench/flux_speculation.py --calls 6

The real server (in this process, on loopback) with the real Flux, OpenAI chat and
OpenAI speech adapters, against the fakes: Deepgram's ``/v2/listen`` ends a turn
``EOT_SILENCE`` after the caller's last word and sends ``EagerEndOfTurn``
``EAGER_LEAD`` before that; the lean OpenAI fake answers with fixed delays. A
simulated Vobiz caller says the same eight lines in every call, two of them with a
350 ms pause mid-sentence, long enough for an eager end of turn and short of the
end: there the caller goes on, Flux says ``TurnResumed`` and a speculative reply is
wasted. Calls alternate between speculation off and on (``AgentConfig.speculate``;
the recognizer and its URL are the same), on the wall clock.

Voice-to-voice is the caller's: from the end of its audio to the first agent audio
it receives (:class:`adapters.simulator.caller.Turn`). A wasted completion is a
speculative ``StartCompletion`` whose reply was never played. Figures and what they
mean: ``docs/benchmarks.md`` (Speculative replies).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import deque
from pathlib import Path
from typing import Any

import attrs
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from adapters.app.server import create_app  # noqa: E402
from adapters.app.serving import serve_on_loopback  # noqa: E402
from adapters.app.settings import ServerSettings  # noqa: E402
from adapters.providers.deepgram_flux import DeepgramFlux, FluxSettings  # noqa: E402
from adapters.providers.interfaces import Providers  # noqa: E402
from adapters.providers.openai_chat import ChatSettings, OpenAIChat  # noqa: E402
from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings  # noqa: E402
from adapters.simulator.caller import simulate  # noqa: E402
from adapters.simulator.script import CallerLine, CallerScript  # noqa: E402
from engine.config import AgentConfig  # noqa: E402
from fixtures.fake_deepgram import FakeDeepgram, run_fake_deepgram  # noqa: E402
from fixtures.fake_flux import FluxKnobs, spoken  # noqa: E402
from fixtures.fake_openai import (  # noqa: E402
    FakeOpenAI,
    Reply,
    ToolCall,
    run_lean_fake_openai,
)

# The fakes' delays (seconds).
EOT_SILENCE = 0.40  # silence after the last word before Flux's EndOfTurn
EAGER_LEAD = 0.15  # EagerEndOfTurn this much before it
PAUSE = 0.35  # a caller's pause mid-sentence: past the eager end of turn, short of the end
LLM_FIRST_TOKEN = 0.25
LLM_TOKEN_DELAY = 0.02
TTS_FIRST_BYTE = 0.15
TTS_CHUNK_DELAY = 0.02

LINES = (
    "I would like to book a table",
    "For four people | on Friday evening",
    "Around eight o'clock if possible",
    "Do you have anything by the window",
    "Great",
    "The name is | Maria Rossi",
    "Can you also note a birthday cake please",
    "Thank you very much goodbye",
)
REPLY = "Certainly. Anything else?"


def brain(messages: list[dict[str, Any]]) -> Reply:
    last = [m for m in messages if m["role"] == "user"][-1]["content"]
    if "goodbye" in last:
        return Reply("Goodbye!", (ToolCall("end_call", "{}", "c1"),))
    return Reply(REPLY)


async def one_call(
    deepgram: FakeDeepgram,
    openai: FakeOpenAI,
    speculate: bool,
    log_dir: Path,
    args: argparse.Namespace,
) -> dict[str, Any]:
    """One call with the server built for it; the caller's turns and the server's call log."""
    lines = (*LINES[: args.turns - 1], LINES[-1])  # the last one says goodbye: the agent hangs up
    deepgram.transcripts = deque(lines)
    settings = ServerSettings.from_env({}, call_log_dir=log_dir, stream_secret="k" * 32)
    config = AgentConfig(greeting="Hello, Roma restaurant.", speculate=speculate)
    listen = FluxSettings(api_key=deepgram.api_key, url=deepgram.url, chunk_ms=args.chunk_ms)
    providers = Providers(
        stt=lambda: DeepgramFlux(listen),
        llm=OpenAIChat(ChatSettings(base_url=openai.base_url, api_key="test")),
        tts=OpenAISpeech(SpeechSettings(base_url=openai.base_url, api_key="test", model="tts-1")),
        names={"stt": "deepgram-flux", "llm": "openai", "tts": "openai"},
    )
    app = create_app(settings, config, providers)
    script = CallerScript(
        lines=tuple(CallerLine(line, pause=0.2) for line in lines), hang_up_after=120.0
    )
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_on_loopback(nursery, app, shutdown)
        result = await simulate(base, script, speak=lambda text: spoken(text, PAUSE))
        with trio.fail_after(10):
            while not app.switchboard.finished_logs:
                await trio.sleep(0.05)
        shutdown.set()
    await providers.aclose()
    (log,) = app.switchboard.finished_logs
    records = [json.loads(line) for line in log.read_text().splitlines() if line]
    return {"result": result, "records": records}


def speculation(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Speculative replies asked, those never played, and each committed one's lead."""
    asked = [
        r["utterance"]
        for r in records
        if r.get("command") == "StartCompletion" and r.get("speculative")
    ]
    played = {r["utterance"] for r in records if r.get("command") == "PlayAudio"}
    leads, eager_at = [], None
    for r in records:
        if r.get("event") == "CallerTurnLikelyOver":
            eager_at = r["t"]
        elif r.get("event") == "CallerTurnResumed":
            eager_at = None
        elif r.get("event") == "Transcript" and r["speech_final"] and eager_at is not None:
            leads.append(r["t"] - eager_at)
            eager_at = None
    return {"asked": len(asked), "wasted": len(set(asked) - played), "leads": leads}


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "p50": statistics.median(ordered),
        "p95": statistics.quantiles(ordered, n=20, method="inclusive")[-1],
        "mean": statistics.fmean(ordered),
        "min": ordered[0],
        "max": ordered[-1],
    }


@attrs.define
class Tally:
    """One mode's figures, over all its calls."""

    v2v: list[float] = attrs.Factory(list)
    leads: list[float] = attrs.Factory(list)
    missing: int = 0  # turns the agent never answered
    asked: int = 0  # speculative completions
    wasted: int = 0
    chat: int = 0  # requests the fakes served
    speech: int = 0


async def bench(args: argparse.Namespace) -> dict[str, Tally]:
    knobs = FluxKnobs(eot_silence=EOT_SILENCE, eager_lead=EAGER_LEAD)
    fake = FakeOpenAI(script=brain, first_token_delay=LLM_FIRST_TOKEN, token_delay=LLM_TOKEN_DELAY)
    fake.speech_first_byte_delay, fake.speech_chunk_delay = TTS_FIRST_BYTE, TTS_CHUNK_DELAY
    modes = {"off": Tally(), "on": Tally()}
    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.logs or scratch
        async with run_fake_deepgram(flux=knobs) as deepgram, run_lean_fake_openai(fake) as openai:
            for i in range(args.calls):
                order = ("off", "on") if i % 2 == 0 else ("on", "off")
                for mode in order:
                    chat = len(openai.bodies("/v1/chat/completions"))
                    speech = len(openai.bodies("/v1/audio/speech"))
                    log_dir = Path(tmp) / f"{i}-{mode}"
                    out = await one_call(deepgram, openai, mode == "on", log_dir, args)
                    tally = modes[mode]
                    turns = out["result"].turns
                    tally.v2v += [t.voice_to_voice for t in turns if t.voice_to_voice]
                    tally.missing += sum(t.voice_to_voice is None for t in turns)
                    spec = speculation(out["records"])
                    tally.asked += spec["asked"]
                    tally.wasted += spec["wasted"]
                    tally.leads += spec["leads"]
                    tally.chat += len(openai.bodies("/v1/chat/completions")) - chat
                    tally.speech += len(openai.bodies("/v1/audio/speech")) - speech
                    print(
                        f"call {i + 1}/{args.calls} speculation {mode}: "
                        f"{len(turns)} turns, v2v p50 "
                        f"{statistics.median([t.voice_to_voice or 0 for t in turns]) * 1000:.0f} ms",
                        file=sys.stderr,
                    )
    return modes


def report(modes: dict[str, Tally], args: argparse.Namespace) -> None:
    print(
        f"Flux fake: EndOfTurn {EOT_SILENCE * 1000:.0f} ms after the last word, EagerEndOfTurn "
        f"{EAGER_LEAD * 1000:.0f} ms before it; LLM first token {LLM_FIRST_TOKEN * 1000:.0f} ms, "
        f"TTS first byte {TTS_FIRST_BYTE * 1000:.0f} ms; audio to Flux in {args.chunk_ms} ms "
        f"messages; {args.calls} calls x {args.turns} turns per mode, one call at a time"
    )
    print()
    print(
        "| speculation | turns | voice-to-voice p50 | p95 | mean | min-max | chat / speech requests "
        "| speculative asked | wasted |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for mode in ("off", "on"):
        m = modes[mode]
        s = summary(m.v2v)
        print(
            f"| {mode} | {s['n']} | {s['p50'] * 1000:.0f} ms | {s['p95'] * 1000:.0f} ms "
            f"| {s['mean'] * 1000:.0f} ms | {s['min'] * 1000:.0f}-{s['max'] * 1000:.0f} ms "
            f"| {m.chat} / {m.speech} | {m.asked} | {m.wasted} |"
        )
    off, on = summary(modes["off"].v2v), summary(modes["on"].v2v)
    print()
    print(
        f"speculation saves {1000 * (off['p50'] - on['p50']):.0f} ms at p50, "
        f"{1000 * (off['p95'] - on['p95']):.0f} ms at p95 (target: >= 120 ms at p50)"
    )
    leads = modes["on"].leads
    if leads:
        print(
            f"eager end of turn ahead of the end, as the server received them: p50 "
            f"{1000 * statistics.median(leads):.0f} ms (min {1000 * min(leads):.0f}, "
            f"max {1000 * max(leads):.0f})"
        )
    missing = sum(m.missing for m in modes.values())
    if missing:
        print(f"turns without a reply before the hang-up: {missing}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=4, help="calls per mode (default 4)")
    parser.add_argument(
        "--turns", type=int, default=len(LINES), help=f"turns per call (2 to {len(LINES)})"
    )
    parser.add_argument("--logs", help="keep the call logs in this folder (default: discard)")
    parser.add_argument(
        "--chunk-ms", type=int, default=FluxSettings().chunk_ms, help="audio per Flux message"
    )
    args = parser.parse_args()
    if not 2 <= args.turns <= len(LINES):
        parser.error(f"--turns must be between 2 and {len(LINES)}")
    modes = trio.run(bench, args)
    report(modes, args)


if __name__ == "__main__":
    main()
