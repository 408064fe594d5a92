"""``voice-agent demo`` and ``voice-agent simulate``: a whole call with no account anywhere.

The demo starts the real server in-process on a free loopback port with the
offline providers (pocketsphinx, espeak-ng, the scripted restaurant agent),
calls it with the simulated Vobiz caller over real sockets, then replays the
call's log through a fresh engine. It exits non-zero, saying why, if any
link of that chain fails.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import trio
from rich.console import Console

from adapters.simulator.caller import print_entry, print_report, simulate
from adapters.simulator.script import CallerLine, CallerScript

#: The demo caller books a table, asks for the opening hours and cuts the long
#: answer short, then finishes the booking; the agent hangs up.
DEMO_SCRIPT = CallerScript(
    lines=(
        CallerLine("I would like to book a table."),
        CallerLine("What are your opening hours?"),
        CallerLine("For four people.", wait_for_agent=False, barge_in_after=2.0),
        CallerLine("Tomorrow at seven."),
        CallerLine("No thank you, goodbye."),
    ),
    hang_up_after=80.0,
)


class AgentSentences:
    """The agent's sentence that each checkpoint closes, as the server's call log records it.

    The phone hears audio, not words; the demo's server runs in this process, so
    its log has the words. The engine names checkpoints ``utterance.seq``
    (docs/engine.md) and logs each sentence's ``Synthesize`` before its audio
    goes out, so the text is known by the time the checkpoint arrives. Fed by
    the switchboard's log listener, it reads no file.
    """

    def __init__(self) -> None:
        self._texts: dict[tuple[str, str], str] = {}

    def listen(self, call_id: str, record: dict[str, Any]) -> None:
        if record.get("command") == "Synthesize":
            name = f"{record['utterance']}.{record['seq']}"
            self._texts[(call_id, name)] = str(record["text"])

    def __call__(self, call_id: str, name: str) -> str | None:
        return self._texts.get((call_id, name))


async def _run_local_call(console: Console, wav: str | None, *, check: bool) -> int:
    from adapters.app.serving import build_app, serve_on_loopback
    from adapters.app.settings import ServerSettings
    from engine.calllog import read_log, split_log
    from engine.replay import replay
    from engine.views import latency_table, timeline

    settings = ServerSettings.from_env(
        host="127.0.0.1",
        port=0,
        stt_provider="offline",
        llm_provider="scripted",
        tts_provider="offline",
    )
    app = build_app(settings)
    board = app.switchboard
    sentences = AgentSentences()
    board.log_listener = sentences.listen
    console.print(f"[bold]{_describe(board)}[/bold]")
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_on_loopback(nursery, app, shutdown)
        console.print(f"server on {base}; calling it as a simulated Vobiz caller…\n")
        result = await simulate(
            base,
            DEMO_SCRIPT,
            on_event=functools.partial(print_entry, console=console),
            agent_text=sentences,
        )
        with trio.move_on_after(10):
            while board.live or not board.finished_logs:
                await trio.sleep(0.05)
        shutdown.set()
    if not board.finished_logs:
        console.print("[red]demo failed: the server wrote no call log[/red]")
        return 1
    log_path = Path(board.finished_logs[-1])
    wav_path = Path(wav) if wav else log_path.with_suffix(".wav")
    result.write_wav(wav_path)
    console.print()
    print_report(result, console)
    console.print("\n[bold]The call as the agent logged it[/bold]")
    lines, _ = split_log(log_path.read_text(encoding="utf-8"))
    records = [r for _, r in read_log(lines)]
    console.print("\n".join(timeline(records)), highlight=False, markup=False, soft_wrap=True)
    console.print("\n".join(latency_table(records)), highlight=False, markup=False, soft_wrap=True)
    outcome = replay(lines)
    console.print(f"\nlog: {log_path}\nwav: {wav_path}")
    if not outcome.identical:
        line = outcome.divergence.line if outcome.divergence else "?"
        console.print(f"[red]replay: DIVERGES at line {line}[/red]")
        return 1
    console.print(f"replay: identical ({outcome.events} events)")
    if not check:
        return 0
    problems = []
    if not result.stopped_by_agent:
        problems.append("the agent did not hang up")
    if result.cleared == 0:
        problems.append("the barge-in was not cleared")
    if result.stale_audio_after_clear:
        problems.append(f"{result.stale_audio_after_clear} stale audio frames after clearAudio")
    if problems:
        console.print(f"[red]demo failed: {'; '.join(problems)}[/red]")
        return 1
    return 0


def _describe(board) -> str:
    from adapters.app.wiring import describe

    return describe(board.providers)


async def demo_main(args) -> int:
    console = Console()
    try:
        return await _run_local_call(console, args.wav, check=True)
    except Exception as exc:  # say what broke, not a bare traceback
        console.print(f"[red]demo failed: {type(exc).__name__}: {exc}[/red]")
        raise SystemExit(1) from exc


async def simulate_main(args) -> int:
    console = Console()
    if args.url is None:
        return await _run_local_call(console, args.wav, check=False)
    result = await simulate(
        args.url.rstrip("/"), DEMO_SCRIPT, on_event=functools.partial(print_entry, console=console)
    )
    print_report(result, console)
    if args.wav:
        result.write_wav(args.wav)
        console.print(f"wav: {args.wav}")
    return 0
