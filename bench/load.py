"""Load: concurrent calls against the real server, as a caller would judge them.

    uv run python bench/load.py --quick                 # 1 and 10 busy calls
    uv run python bench/load.py --calls 1,10,25,40,50 --json rows.json
    uv run python bench/load.py --workload light        # the earlier, lighter call

What one call is (``--workload``): :mod:`bench.workload`. By default a busy call, whose
agent talks most of the time.

Three processes, so the one measured does nothing but serve calls:

- A (``fakes``): Deepgram listen and OpenAI chat/speech fakes with fixed, known delays.
- B (``server``): the real app under hypercorn's trio worker with the real Deepgram and
  OpenAI adapters pointed at A; one fresh process per ladder step, so its RSS and CPU
  belong to that step alone.
- C (this process): N scripted Vobiz callers from :mod:`bench.caller`, media paced in
  real time by one ticker; built to cost little, so that C's lateness does not pass for
  B's. (:mod:`adapters.simulator.caller` stays the fidelity tool for single calls.)

With ``--pin`` (the default on two or more CPUs) B runs alone on CPU 0 and A and C share
CPU 1: one server process on one core. C's CPU and its own late frames are reported,
so a saturated caller shows.

A step is **held** (:func:`held`) when no admitted call failed, the caller's frames reached
the server in time (p99 lag < 20 ms), and the phone's playout (modelled in C, in real
time) never ran dry inside an agent utterance for more than 1 % of the agent's audio.

Server overhead comes from B's call logs (transcript arrival → first PlayAudio, minus the
fakes' configured delays), so it is what the server adds, not what the fakes cost. The
fakes' timers fire late by up to a millisecond (epoll rounds timeouts up), which that
subtraction leaves in; A measures it and the table shows its median per step. Inbound lag is
measured inside B at the call runner, two ways: against the caller's 20 ms schedule (the
frame's ``timestamp``; includes the caller's own lateness, so an upper bound) and against
the moment C sent the frame (its ``sent``, ``perf_counter_ns`` on the shared monotonic
clock): loopback transit plus B's own delay; the held rule uses the lag against the send.
B's trio loop lag (a 10 ms sleeper's overshoot) is reported next to it as the server-only
part.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import random
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from array import array
from pathlib import Path
from typing import Any

import attrs
import trio

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.workload import (  # noqa: E402  (after the path is set)
    CALLER_TEXT,
    ENDPOINTING_MS,
    GREETING,
    LLM_FIRST_TOKEN,
    LLM_TOKEN_DELAY,
    REPLY,
    TTS_FIRST_BYTE,
    WORKLOADS,
    Workload,
)

#: A turn that ended this close to the hang-up is not counted as missing its reply: a
#: reply cannot come sooner than endpointing plus the fakes' delays (~0.9 s).
REPLY_GRACE = 3.0

#: A step whose p99 inbound lag (vs send) exceeds this ends the ladder.
BAD_LAG = 1.0

#: How far past the call length B and A may run before they stop by themselves.
SAFETY_SECONDS = 120.0


# ----------------------------------------------------------------------------- process A


async def fakes_main(args: argparse.Namespace) -> None:
    from fixtures.fake_deepgram import run_fake_deepgram
    from fixtures.fake_openai import FakeOpenAI, Reply, run_lean_fake_openai

    workload = WORKLOADS[args.workload]
    fake = FakeOpenAI(
        script=lambda messages: Reply(REPLY),
        first_token_delay=LLM_FIRST_TOKEN,
        token_delay=LLM_TOKEN_DELAY,
        speech_first_byte_delay=TTS_FIRST_BYTE,
        speech_chunk_delay=workload.chunk_delay,
        speech_chunk_sizes=workload.chunk_sizes,
        speech_samples_per_char=workload.samples_per_char,
    )
    async with (
        run_fake_deepgram(transcriber=lambda i: CALLER_TEXT, idle_timeout=60) as deepgram,
        run_lean_fake_openai(fake) as openai,
    ):
        print(json.dumps({"deepgram": deepgram.url, "openai": openai.base_url}), flush=True)
        with trio.move_on_after(args.max_seconds):
            await _report_lateness_until_stdin_closes(fake)


async def _report_lateness_until_stdin_closes(fake: Any) -> None:
    """Each line on stdin asks for the timers' lateness since the last one, as a JSON line."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while data := await stream.receive_some(1024):
            for _ in range(data.count(b"\n")):
                late, fake.late = fake.late, []
                report = {
                    kind: _percentiles([s for k, s in late if k == kind])
                    for kind in ("chat", "speech")
                }
                print(json.dumps(report), flush=True)


async def _until_stdin_closes() -> None:
    """The parent closes our stdin to stop us; a dead parent does too."""
    stream = trio.lowlevel.FdStream(os.dup(sys.stdin.fileno()))
    async with stream:
        while await stream.receive_some(1024):
            pass


# ----------------------------------------------------------------------------- process B


class InboundProbe:
    """How late each media frame reaches the runner, vs the caller's schedule and vs its send.

    Schedule: ``d = arrival - frame.timestamp``; the smallest ``d`` of a call is its
    on-time baseline, so ``d - min(d)`` is each frame's lag. Send: ``arrival - sent``
    directly, both read from the same monotonic clock (perf_counter) in two processes.
    Kept as raw arrays: cheap enough.
    """

    def __init__(self) -> None:
        self.calls: list[array] = []
        self.since_send = array("d")

    def install(self) -> None:
        from adapters.app import media_socket as server
        from bench.caller import MEDIA_PREFIX

        head = MEDIA_PREFIX.decode()
        probe = self
        original = server.AsgiTransport.receive

        async def receive(transport: Any) -> str | bytes:
            frame = await original(transport)
            now = time.perf_counter()
            # The caller's media frames start with a fixed head: plain slicing is cheaper
            # than a regex, and the probe's cost is charged to the server it measures.
            if isinstance(frame, str) and frame.startswith(head):
                ts_end = frame.find('"', len(head))
                sent_at = frame.find('"sent":', ts_end)
                if ts_end > 0 and sent_at > 0:
                    sent_end = frame.find(",", sent_at)
                    if sent_end < 0:
                        sent_end = frame.find("}", sent_at)
                    probe.since_send.append(now - int(frame[sent_at + 7 : sent_end]) / 1e9)
                    offsets = getattr(transport, "_bench_offsets", None)
                    if offsets is None:
                        offsets = transport._bench_offsets = array("d")
                        probe.calls.append(offsets)
                    offsets.append(now - int(frame[len(head) : ts_end]) / 1000)
            return frame

        server.AsgiTransport.receive = receive  # type: ignore[method-assign]

    def lags(self) -> list[float]:
        out: list[float] = []
        for offsets in self.calls:
            if offsets:
                base = min(offsets)
                out.extend(d - base for d in offsets)
        return out


class GcPauses:
    """How long each garbage collection held the loop, per generation (a stall no CPU % shows)."""

    def __init__(self) -> None:
        self.pauses: list[tuple[int, float]] = []
        self._started = 0.0

    def install(self) -> None:
        gc.callbacks.append(self._on_gc)

    def _on_gc(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.pauses.append((info["generation"], time.perf_counter() - self._started))


class StepWatch(trio.abc.Instrument):
    """Where the event loop's long busy stretches come from (``--steps``).

    trio runs every runnable task once per batch, between two waits for I/O; a long
    batch is a late frame for every call. This records each batch longer than
    :attr:`LONG`, with the tasks that took most of it, and the time per task name.
    """

    LONG = 0.010

    def __init__(self) -> None:
        self.batch_started: float | None = None
        self.steps: list[tuple[float, str]] = []
        self.step_started = 0.0
        self.long_batches: list[tuple[float, int, list[tuple[float, str]]]] = []
        self.time_by_task: dict[str, float] = {}
        self.batches = 0

    def after_io_wait(self, timeout: float) -> None:
        self.batch_started = time.perf_counter()
        self.steps = []

    def before_io_wait(self, timeout: float) -> None:
        if self.batch_started is None:
            return
        self.batches += 1
        took = time.perf_counter() - self.batch_started
        if took > self.LONG:
            top = sorted(self.steps, reverse=True)[:4]
            self.long_batches.append(
                (round(took, 4), len(self.steps), [(round(d, 4), n) for d, n in top])
            )

    def before_task_step(self, task: Any) -> None:
        self.step_started = time.perf_counter()

    def after_task_step(self, task: Any) -> None:
        took = time.perf_counter() - self.step_started
        name = task.name.rsplit(".", 2)[-2:] if "." in task.name else [task.name]
        key = ".".join(name)
        self.steps.append((took, key))
        self.time_by_task[key] = self.time_by_task.get(key, 0.0) + took

    def summary(self) -> dict[str, Any]:
        busiest = sorted(self.time_by_task.items(), key=lambda kv: -kv[1])[:15]
        return {
            "batches": self.batches,
            "long_batches": len(self.long_batches),
            "longest": sorted(self.long_batches, reverse=True)[:15],
            "time_by_task": [(k, round(v, 3)) for k, v in busiest],
        }


async def _loop_lag(samples: array, stalls: list, stop: trio.Event) -> None:
    """Overshoot of a 10 ms sleep: how long B's trio loop was busy elsewhere."""
    t0 = time.perf_counter()
    while not stop.is_set():
        t = time.perf_counter()
        await trio.sleep(0.01)
        lag = time.perf_counter() - t - 0.01
        samples.append(lag)
        if lag > 0.05:
            stalls.append((round(t - t0, 3), round(lag, 3)))


async def server_main(args: argparse.Namespace) -> None:
    from adapters.app.server import create_app
    from adapters.app.serving import serve_on_loopback
    from adapters.app.settings import ServerSettings
    from adapters.media.vad import LocalVad
    from adapters.providers.deepgram_stt import DeepgramSettings, DeepgramSTT
    from adapters.providers.interfaces import Providers
    from adapters.providers.openai_chat import ChatSettings, OpenAIChat
    from adapters.providers.openai_speech import OpenAISpeech, SpeechSettings
    from engine.config import AgentConfig

    urls = json.loads(args.fakes)
    settings = ServerSettings.from_env(
        {}, call_log_dir=Path(args.log_dir), stream_secret="k" * 32, max_calls=100_000
    )

    def stt() -> DeepgramSTT:
        return DeepgramSTT(
            DeepgramSettings(api_key="test-key", url=urls["deepgram"], endpointing=ENDPOINTING_MS)
        )

    providers = Providers(
        stt=stt,
        llm=OpenAIChat(ChatSettings(base_url=urls["openai"], api_key="test")),
        tts=OpenAISpeech(SpeechSettings(base_url=urls["openai"], api_key="test", model="tts-1")),
        # As served by default (BARGE_IN_SOURCE=both, LOCAL_VAD=webrtc): a local VAD beside
        # the recognizer, whose CallerSpeechStarted events also reach the engine.
        vad=LocalVad(kind="webrtc"),
        names={"stt": "deepgram", "llm": "openai", "tts": "openai", "vad": "webrtc"},
    )
    config = AgentConfig(greeting=GREETING, idle_timeout=60.0, max_call_seconds=3600.0)
    probe = InboundProbe()
    probe.install()
    app = create_app(settings, config, providers)
    loop_lag = array("d")
    stalls: list = []
    gc_pauses = GcPauses()
    gc_pauses.install()
    shutdown = trio.Event()
    async with trio.open_nursery() as nursery:
        base = await serve_on_loopback(
            nursery, app, shutdown, measure_load=args.admission, fd=args.listen_fd
        )
        nursery.start_soon(_loop_lag, loop_lag, stalls, shutdown)
        print(json.dumps({"url": base, "pid": os.getpid()}), flush=True)
        watch = StepWatch() if args.steps else None
        if watch is not None:
            trio.lowlevel.add_instrument(watch)
        with contextlib.ExitStack() as profiling:
            if args.profile:  # from here on: start-up (imports, warm-up) is not what we study
                from bench.sampler import StackSampler

                sampler = profiling.enter_context(StackSampler())
            with trio.move_on_after(args.max_seconds):
                await _until_stdin_closes()
        shutdown.set()
        if args.profile:
            sampler.write_report(Path(args.profile))
    stats = {
        "inbound_lag": probe.lags(),
        "inbound_lag_send": list(probe.since_send),
        "loop_lag": list(loop_lag),
        "stalls": stalls,
        "gc": gc_pauses.pauses,
        "steps": watch.summary() if watch is not None else None,
    }
    Path(args.stats).write_text(json.dumps(stats))


# ----------------------------------------------------------------------------- process C


class ProcStats:
    """CPU, run-queue wait and RSS of one process, from /proc (no psutil).

    The wait (time runnable but not running, ``/proc/<pid>/schedstat``) and the other
    processes' share of the CPU it is pinned to say how undisturbed a measurement was:
    this machine is shared, and a server that waits for its core looks slow.
    """

    def __init__(self, pid: int, cpu: int | None = None) -> None:
        self.pid = pid
        self.cpu = cpu
        self.tick = os.sysconf("SC_CLK_TCK")
        # wall, cpu seconds, rss bytes, run-queue wait seconds, the pinned CPU's busy seconds
        self.samples: list[tuple[float, float, int, float, float]] = []

    def sample(self) -> tuple[float, float, int, float, float]:
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / self.tick
        rss = 0
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1]) * 1024
        wait = int(Path(f"/proc/{self.pid}/schedstat").read_text().split()[1]) / 1e9
        busy = 0.0
        if self.cpu is not None:
            for line in Path("/proc/stat").read_text().splitlines():
                if line.startswith(f"cpu{self.cpu} "):
                    ticks = [int(x) for x in line.split()[1:]]
                    busy = (sum(ticks) - ticks[3] - ticks[4]) / self.tick  # not idle, iowait
        out = (time.perf_counter(), cpu, rss, wait, busy)
        self.samples.append(out)
        return out

    def _inside(self, start: float, end: float) -> list[tuple[float, float, int, float, float]]:
        return [s for s in self.samples if start <= s[0] <= end]

    def cpu_percent(self, start: float, end: float) -> float:
        inside = self._inside(start, end)
        if len(inside) < 2:
            return float("nan")
        return 100 * (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])

    def wait_percent(self, start: float, end: float) -> float:
        """Share of the time this process was ready to run but another had its CPU."""
        inside = self._inside(start, end)
        if len(inside) < 2:
            return float("nan")
        return 100 * (inside[-1][3] - inside[0][3]) / (inside[-1][0] - inside[0][0])

    def others_percent(self, start: float, end: float) -> float:
        """How much of the pinned CPU other processes used meanwhile."""
        inside = self._inside(start, end)
        if len(inside) < 2 or self.cpu is None:
            return float("nan")
        first, last = inside[0], inside[-1]
        others = (last[4] - first[4]) - (last[1] - first[1])
        return 100 * max(0.0, others) / (last[0] - first[0])


class Together:
    """The server's processes as one: CPU and memory added up, waits averaged."""

    def __init__(self, parts: list[ProcStats]) -> None:
        self.parts = parts

    @property
    def samples(self) -> list[tuple[float, float, int, float, float]]:
        rows = zip(*(p.samples for p in self.parts), strict=False)
        return [(r[0][0], sum(x[1] for x in r), sum(x[2] for x in r), 0.0, 0.0) for r in rows]

    def sample(self) -> tuple[float, float, int, float, float]:
        each = [p.sample() for p in self.parts]
        return (each[0][0], sum(e[1] for e in each), sum(e[2] for e in each), 0.0, 0.0)

    def cpu_percent(self, start: float, end: float) -> float:
        return sum(p.cpu_percent(start, end) for p in self.parts)

    def wait_percent(self, start: float, end: float) -> float:
        return statistics.mean(p.wait_percent(start, end) for p in self.parts)

    def others_percent(self, start: float, end: float) -> float:
        return statistics.mean(p.others_percent(start, end) for p in self.parts)


def _merged_stats(files: list[Path]) -> dict:
    """The servers' own figures as one server's: their samples pooled."""
    found = [json.loads(f.read_text()) for f in files if f.exists()]
    if len(found) <= 1:
        return found[0] if found else {}
    merged: dict = {}
    for key in ("inbound_lag", "inbound_lag_send", "loop_lag", "stalls", "gc"):
        merged[key] = [x for one in found for x in one.get(key, [])]
    merged["steps"] = found[0].get("steps")
    return merged


async def _sampler(stats: ProcStats | Together, stop: trio.Event) -> None:
    while not stop.is_set():
        try:
            stats.sample()
        except FileNotFoundError:
            return
        await trio.sleep(0.25)


async def _start_process(
    argv: list[str], nursery: trio.Nursery, pass_fds: tuple[int, ...] = ()
) -> tuple[trio.Process, dict]:
    """Start a child of this script; its first stdout line is JSON describing it."""
    proc = await nursery.start(
        lambda task_status: trio.run_process(
            [sys.executable, __file__, *argv],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            check=False,
            start_new_session=True,  # its own autogroup: see _raise_priority
            pass_fds=pass_fds,
            task_status=task_status,
        )
    )
    return proc, await _read_json_line(proc, argv[0])


async def _read_json_line(proc: trio.Process, name: str) -> Any:
    line = b""
    with trio.fail_after(60):
        while not line.endswith(b"\n"):
            chunk = await proc.stdout.receive_some(1)
            if not chunk:
                raise RuntimeError(f"{name} exited before it answered")
            line += chunk
    return json.loads(line)


async def _stop_process(proc: trio.Process) -> None:
    await proc.stdin.aclose()
    with trio.move_on_after(40):
        await proc.wait()
    if proc.returncode is None:
        proc.kill()


def _percentiles(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "n": 0}
    ordered = sorted(values)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]

    return {"p50": at(0.5), "p95": at(0.95), "p99": at(0.99), "max": ordered[-1], "n": len(values)}


#: Where a reply's first piece can end (see ``engine/sentences.py``): end punctuation,
#: or a clause break once the piece is this long; a number may go on after either.
_PIECE_END = re.compile(r"[.!?…][\"'”’)\]]*\s*$")
_CLAUSE_END = re.compile(r"[,;:]\s*$")
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "st.", "jr.", "sr.", "vs.", "etc."})


def first_piece_tokens(deltas: list[str], first_clause_chars: int = 30) -> int | None:
    """How many text deltas the reply's first speakable piece takes: the engine could
    commit it at that delta, so any wait for the next one is the server's."""
    text = ""
    for count, delta in enumerate(deltas, 1):
        text += delta
        body = text.strip()
        last = body.rsplit(None, 1)[-1].lower() if body else ""
        if _PIECE_END.search(body) and last not in _ABBREVIATIONS and not last[:1].isdigit():
            return count
        clause = _CLAUSE_END.search(body)
        if clause and clause.start() >= first_clause_chars and not last[:1].isdigit():
            return count
    return None


def analyse_log(path: Path) -> dict[str, Any]:
    """Per-turn server overhead (with where it goes), barge-in reaction and recognition
    latency from one call log.

    The fakes' share of a turn is TTFT, one token delay per content token up to the one
    that completes the reply's first piece (the fake's role chunk comes at TTFT, every
    content token one token delay after the one before), and the speech TTFB; everything
    else between the final transcript's arrival and the first PlayAudio is the server's,
    including any wait for a token after the piece was complete.

    Recognition: the final that ends a turn, from the caller's voice ending (the local
    VAD's ``CallerSpeechStopped.at``, the first silent frame): endpointing and the audio's
    way to the recognizer and back.
    """
    records = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    overhead: list[float] = []
    parts: dict[str, list[float]] = {"llm": [], "tts": [], "play": []}
    barge: list[float] = []
    voice_ends: list[float] = []
    finals: list[float] = []
    turn: dict[str, Any] | None = None
    caller_speech_started: float | None = None
    for r in records:
        kind, t = r["kind"], r.get("t")
        name = r.get("event") or r.get("command")
        if kind == "event" and name == "Transcript" and r.get("speech_final"):
            turn = {"final": t, "deltas": []}
            finals.append(t)
        elif kind == "event" and name == "CallerSpeechStarted":
            caller_speech_started = r["at"]
        elif kind == "event" and name == "CallerSpeechStopped" and r.get("source") == "vad":
            voice_ends.append(r["at"])
        elif kind == "command" and name == "ClearAudio" and caller_speech_started is not None:
            barge.append(t - caller_speech_started)
        if turn is None or kind not in ("event", "command"):
            continue
        if name == "LlmText" and "synth" not in turn:
            turn["deltas"].append(r.get("text", ""))
            turn.setdefault("text", t)
        elif name == "Synthesize":
            turn.setdefault("synth", t)
        elif name == "TtsAudio":
            turn.setdefault("audio", t)
        elif name == "PlayAudio":
            deltas = turn["deltas"]
            tokens = first_piece_tokens(deltas) or len(deltas)
            fakes = LLM_FIRST_TOKEN + tokens * LLM_TOKEN_DELAY + TTS_FIRST_BYTE
            overhead.append(t - turn["final"] - fakes)
            if {"text", "synth", "audio"} <= turn.keys():
                parts["llm"].append(
                    turn["text"] - turn["final"] - LLM_FIRST_TOKEN - LLM_TOKEN_DELAY
                )
                parts["tts"].append(turn["audio"] - turn["synth"] - TTS_FIRST_BYTE)
                parts["play"].append(t - turn["audio"])
            turn = None
    recognition = []
    for final in finals:
        before = [at for at in voice_ends if final - 2.0 < at <= final]
        if before:
            recognition.append(final - max(before))
    footer = records[-1] if records and records[-1]["kind"] == "footer" else None
    play_bytes = sum(
        r["audio"]["bytes"] for r in records if r.get("command") == "PlayAudio" and "audio" in r
    )
    return {
        "records": len(records),
        "events": sum(1 for r in records if r["kind"] == "event"),
        "replies": sum(1 for r in records if r.get("command") == "StartCompletion"),
        "play_frames": play_bytes / 160,
        "overhead": overhead,
        "parts": parts,
        "barge_in": barge,
        "recognition": recognition,
        "complete": footer is not None,
        "dropped_audio": footer.get("dropped_audio_frames", 0) if footer else 0,
        "reason": footer.get("reason") if footer else None,
    }


async def run_step(
    n: int,
    seconds: float,
    fakes: dict,
    ramp: float,
    log_root: Path,
    workload: Workload,
    profile: bool = False,
    server_cpu: int | None = None,
    server_args: tuple[str, ...] = (),
    nice: bool = False,
    phases: int = 1,
    workers: int = 1,
) -> dict:
    """One ladder step: a fresh server (``workers`` processes on one port), ``n`` callers,
    then its logs and /proc numbers."""
    from bench.caller import run_calls

    log_dir = Path(tempfile.mkdtemp(prefix=f"calls-{n}-", dir=log_root))
    stats_files = [log_dir / f"server-stats-{i}.json" for i in range(workers)]
    scripts = workload.scripts(n, seconds)
    rng = random.Random(n)
    starts = sorted(rng.uniform(0, ramp) for _ in range(n))
    failures: list[str] = []
    async with trio.open_nursery() as nursery:
        listener = None
        if workers > 1:  # one port, as serve --workers binds it once for all its workers
            listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
            listener.set_inheritable(True)
        servers: list[tuple[trio.Process, ProcStats]] = []
        for i, stats_file in enumerate(stats_files):
            argv = [
                "server",
                "--fakes",
                json.dumps(fakes),
                "--log-dir",
                str(log_dir),
                "--stats",
                str(stats_file),
                "--max-seconds",
                str(seconds + ramp + SAFETY_SECONDS),
            ]
            if profile:
                name = "server-profile.txt" if i == 0 else f"server-profile-{i}.txt"
                argv += ["--profile", str(log_dir / name)]
            cpu_of = None if server_cpu is None else (server_cpu + i) % (os.cpu_count() or 1)
            if cpu_of is not None:
                argv += ["--cpu", str(cpu_of)]
            if nice:
                argv += ["--nice"]
            if listener is not None:
                argv += ["--listen-fd", str(listener.fileno())]
            argv += server_args
            fds = (listener.fileno(),) if listener is not None else ()
            proc, info = await _start_process(argv, nursery, fds)
            servers.append((proc, ProcStats(info["pid"], cpu_of)))
        if listener is not None:
            listener.close()  # the workers hold it now
        stats = Together([s for _p, s in servers])
        caller_stats = ProcStats(os.getpid())
        await trio.sleep(0.5)
        idle = stats.sample()
        stop_sampling = trio.Event()
        nursery.start_soon(_sampler, stats, stop_sampling)
        nursery.start_soon(_sampler, caller_stats, stop_sampling)
        t0 = time.perf_counter()
        results: list[Any] = []
        with trio.move_on_after(seconds + ramp + 60) as step_scope:
            results = await run_calls(
                info["url"],
                scripts[0],
                scripts=scripts,
                speak=workload.speak,
                background=workload.background(),
                quiet=workload.quiet,
                phases=phases,
                starts=starts,
                prefix=f"load-{n}",
            )
        if step_scope.cancelled_caught:
            failures.append(f"step timed out: {len(results)} of {n} calls returned")
        t_end = time.perf_counter()
        stop_sampling.set()
        peak_rss = max(s[2] for s in stats.samples)
        steady = (t0 + ramp, t0 + ramp + max(seconds - 5, 1))
        cpu = stats.cpu_percent(*steady)
        cpu_all = stats.cpu_percent(t0, t_end)
        caller_cpu = caller_stats.cpu_percent(*steady)
        server_wait = stats.wait_percent(*steady)
        cpu0_others = stats.others_percent(*steady)
        await trio.sleep(1.0)  # let the hang-up webhooks finish the logs
        for proc, _stats in servers:
            await _stop_process(proc)
    server = _merged_stats(stats_files)
    logs = [analyse_log(p) for p in sorted(log_dir.glob("*.jsonl"))]
    overhead = [x for log in logs for x in log["overhead"]]
    barge = [x for log in logs for x in log["barge_in"]]
    outcomes = [attrs.asdict(r) for r in results]
    (log_dir / "caller-outcomes.json").write_text(json.dumps(outcomes, indent=0))
    failures += [f"{r.call_id}: {r.error}" for r in results if r.error is not None]
    refused = [r for r in results if r.error is None and r.refused]
    results = [r for r in results if r.error is None and not r.refused]
    admitted = n - len(refused)
    stale = sum(r.stale_audio_after_clear for r in results)
    v2v = [t.voice_to_voice for r in results for t in r.turns if t.voice_to_voice is not None]
    missing_replies = sum(
        1
        for r in results
        for t in r.turns
        if not t.barge_in and t.voice_to_voice is None and t.ended <= r.duration - REPLY_GRACE
    )
    no_clear = sum(1 for r in results if r.cleared < 1)
    failed = admitted - len(results)
    incomplete = sum(1 for log in logs if not log["complete"]) + max(0, admitted - len(logs))
    agent_audio = sum(r.agent_audio for r in results)
    dry = sum(r.dry_seconds for r in results)
    return {
        "calls": n,
        "admitted": admitted,
        "refused": len(refused),
        "refused_heard_busy": sum(1 for r in refused if "busy" in r.busy_message.lower()),
        "failed": failed,
        "agent_audio_seconds": agent_audio,
        "dry_seconds": dry,
        "dry_fraction": dry / agent_audio if agent_audio else 0.0,
        "dry_gaps": sum(r.dry_gaps for r in results),
        "dry_utterances": sum(r.dry_utterances for r in results),
        "utterances": sum(r.utterances for r in results),
        "worst_call_dry_fraction": max(
            (r.dry_seconds / r.agent_audio for r in results if r.agent_audio), default=0.0
        ),
        "recognition": _percentiles([x for log in logs for x in log["recognition"]]),
        "incomplete_logs": incomplete,
        "missing_replies": missing_replies,
        "calls_without_clear": no_clear,
        "stale_after_clear": stale,
        "dropped_audio_frames": sum(log["dropped_audio"] for log in logs),
        "overhead": _percentiles(overhead),
        "barge_in": _percentiles(barge),
        "voice_to_voice": _percentiles(v2v),
        "overhead_parts": {
            part: _percentiles([x for log in logs for x in log["parts"][part]])
            for part in ("llm", "tts", "play")
        },
        "inbound_lag": _percentiles(server.get("inbound_lag", [])),
        "inbound_lag_send": _percentiles(server.get("inbound_lag_send", [])),
        "loop_lag": _percentiles(server.get("loop_lag", [])),
        "cpu_percent": cpu,
        "cpu_percent_whole_run": cpu_all,
        "caller_cpu_percent": caller_cpu,
        "server_wait_percent": server_wait,
        "server_cpu_others_percent": cpu0_others,
        "caller_frames_sent": sum(r.frames_sent for r in results),
        "caller_frames_late": sum(r.frames_late for r in results),
        "caller_frames_backlogged": sum(r.frames_backlogged for r in results),
        "caller_max_lateness": max((r.max_lateness for r in results), default=None),
        "rss_idle_mb": idle[2] / 2**20,
        "rss_peak_mb": peak_rss / 2**20,
        "rss_per_call_mb": (peak_rss - idle[2]) / 2**20 / max(admitted, 1),
        "stalls_over_50ms": server.get("stalls", [])[:20],
        "gc_pauses": {
            f"gen{g}": _percentiles([d for gen, d in server.get("gc", []) if gen == g])
            for g in (0, 1, 2)
        },
        "failures": failures[:5],
        "steps": server.get("steps"),
        "profile": profile_costs(
            log_dir / "server-profile.json",
            {
                "inbound frame": sum(r.frames_sent for r in results),
                "agent frame": sum(log["play_frames"] for log in logs),
                "engine event": sum(log["events"] for log in logs),
                "log record": sum(log["records"] for log in logs),
                "reply": sum(log["replies"] for log in logs),
            },
        )
        if profile
        else None,
    }


#: Where a call's CPU goes, for ``--profile``: (what, the functions whose inclusive samples
#: it is, what it is paid per). An agent frame is 20 ms of the agent's audio sent.
PROFILE_PARTS = (
    (
        "hypercorn: read, WebSocket parse, ASGI hand-off",
        ("hypercorn/trio/tcp_server.py:_read_data",),
        "inbound frame",
    ),
    ("media session: parse + decode", ("adapters/vobiz/session.py:receive",), "inbound frame"),
    ("local VAD", ("adapters/media/vad.py:feed",), "inbound frame"),
    (
        "forwarding to STT (channel, backlog, WebSocket send)",
        ("adapters/providers/deepgram_stt.py:_pump", "adapters/providers/deepgram_stt.py:_write"),
        "inbound frame",
    ),
    (
        "speech: download + resample + encode",
        ("adapters/providers/openai_speech.py:synthesize",),
        "agent frame",
    ),
    ("media session: framing", ("adapters/vobiz/session.py:send",), "agent frame"),
    ("playAudio: JSON + send", ("adapters/call/sender.py:run",), "agent frame"),
    ("engine steps", ("engine/core.py:step",), "engine event"),
    ("call-log writes", ("engine/calllog.py:write",), "log record"),
    ("chat request and stream", ("adapters/providers/openai_chat.py:complete",), "reply"),
)


def profile_costs(path: Path, counts: dict[str, float]) -> list[dict[str, Any]] | None:
    """Each part's share of the server's CPU and its cost in µs per unit of work."""
    if not path.exists():
        return None
    data = json.loads(path.read_text())
    out = []
    for what, functions, unit in PROFILE_PARTS:
        share = sum(data["inclusive"].get(f, 0.0) for f in functions)
        count = counts.get(unit) or 0
        cost = share * data["cpu_seconds"] / count * 1e6 if count else None
        out.append({"what": what, "share": share, "us": cost, "per": unit, "count": count})
    return out


def print_profile(row: dict) -> None:
    if not row.get("profile"):
        return
    print(f"where the CPU went at {row['calls']} calls (inclusive shares; µs per unit):")
    for part in row["profile"]:
        us = "-" if part["us"] is None else f"{part['us']:.1f}"
        print(f"  {100 * part['share']:5.1f} %  {us:>8} µs per {part['per']:<13}  {part['what']}")


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def print_table(rows: list[dict], title: str = "") -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"Load{title} (ms unless noted; overhead = server's own share of voice-to-voice)"
    )
    for column in (
        "calls",
        "refused",
        "failed",
        "overhead p50/p95/p99",
        "fakes late LLM+TTS",
        "barge-in p50/p95",
        "stale",
        "recognition p50/p95",
        "lag vs send p50/p99",
        "loop lag p99",
        "dry % (utterances)",
        "B CPU %",
        "%/call",
        "C CPU %",
        "C late",
        "A CPU %",
        "B wait % / others on its CPU %",
        "MB/call",
        "held",
    ):
        table.add_column(column, justify="right")
    for row in rows:
        o, b, loop = row["overhead"], row["barge_in"], row["loop_lag"]
        send, rec = row["inbound_lag_send"], row["recognition"]
        late = row["caller_frames_late"] / max(row["caller_frames_sent"], 1)
        admitted = max(row["admitted"], 1)
        table.add_row(
            str(row["calls"]),
            f"{row['refused']} ({row['refused_heard_busy']} busy)" if row["refused"] else "0",
            f"{row['failed']}+{row['incomplete_logs']}+{row['missing_replies']}",
            f"{_ms(o['p50'])}/{_ms(o['p95'])}/{_ms(o['p99'])}",
            _lateness(row.get("fakes_late")),
            f"{_ms(b['p50'])}/{_ms(b['p95'])}",
            str(row["stale_after_clear"]),
            f"{_ms(rec['p50'])}/{_ms(rec['p95'])}",
            f"{_ms(send['p50'])}/{_ms(send['p99'])}",
            _ms(loop["p99"]),
            f"{100 * row['dry_fraction']:.2f} ({row['dry_utterances']}/{row['utterances']})",
            f"{row['cpu_percent']:.0f}",
            f"{row['cpu_percent'] / admitted:.2f}",
            f"{row['caller_cpu_percent']:.0f}",
            f"{100 * late:.1f}%",
            f"{row.get('fakes_cpu_percent', float('nan')):.0f}",
            f"{row.get('server_wait_percent', float('nan')):.1f} / "
            f"{row.get('server_cpu_others_percent', float('nan')):.0f}",
            f"{row['rss_per_call_mb']:.2f}",
            "yes" if held(row) else "no",
        )
    Console(width=240).print(table)


def _lateness(late: dict | None) -> str:
    """How late the fakes' own timers fired (p50), a share of the overhead that is not B's."""
    if not late:
        return "-"
    return f"{_ms(late['chat']['p50'])}+{_ms(late['speech']['p50'])}"


#: The held rule's limits: the caller's frames reach the call this late at most (p99), and
#: the phone's playout runs dry inside agent utterances for at most this share of the audio.
HELD_LAG = 0.020
HELD_DRY = 0.01


def held(row: dict) -> bool:
    """Whether a step held its calls as a caller would judge: no admitted call failed (raised,
    left its log unfinished, went without a reply, or heard stale audio after a clear), the
    caller's frames reached the server in time (p99 lag < 20 ms), and the agent's audio never
    ran dry inside an utterance for more than 1 % of it. Refused callers must have heard the
    busy message."""
    p99 = row["inbound_lag_send"]["p99"]
    return (
        p99 is not None
        and p99 < HELD_LAG
        and row["dry_fraction"] <= HELD_DRY
        and row["failed"] == 0
        and row["incomplete_logs"] == 0
        and row["missing_replies"] == 0
        and row["stale_after_clear"] == 0
        and row["refused_heard_busy"] == row["refused"]
    )


def headline(rows: list[dict]) -> int | None:
    """The most calls held (see :func:`held`)."""
    ok = [r["calls"] for r in rows if held(r)]
    return max(ok) if ok else None


def failed_badly(row: dict) -> bool:
    """Past this, bigger steps only take longer to say the same thing."""
    p99 = row["inbound_lag_send"]["p99"]
    return row["failed"] > 0 or (p99 is not None and p99 > BAD_LAG)


async def bench_main(args: argparse.Namespace) -> None:
    ladder = [int(x) for x in args.calls.split(",")]
    workload = WORKLOADS[args.workload]
    seconds = args.seconds or workload.default_seconds
    for script in workload.scripts(1, seconds):  # the caller's audio, before any step
        for line in {line.text for line in script.lines}:
            workload.speak(line)
    log_root = Path(tempfile.mkdtemp(prefix="voice-load-"))
    rows: list[dict] = []
    async with trio.open_nursery() as nursery:
        longest = seconds + max(ladder) * 0.05 + SAFETY_SECONDS
        fakes_proc, fakes = await _start_process(
            [
                "fakes",
                "--max-seconds",
                str(longest * len(ladder)),
                "--workload",
                workload.name,
                *(["--nice"] if args.nice else []),
            ],
            nursery,
        )
        fake_stats = ProcStats(fakes_proc.pid)
        try:
            for n in ladder:
                ramp = min(5.0, 0.05 * n)
                print(
                    f"-- {n} call(s), {workload.name} workload, {seconds:.0f} s each, "
                    f"ramp {ramp:.1f} s",
                    flush=True,
                )
                before = fake_stats.sample()
                server_cpu = 0 if args.pin else None
                row = await run_step(
                    n,
                    seconds,
                    fakes,
                    ramp,
                    log_root,
                    workload,
                    args.profile,
                    server_cpu,
                    tuple(args.server_arg or ()) + (("--admission",) if args.admission else ()),
                    args.nice,
                    args.phases,
                    args.workers,
                )
                after = fake_stats.sample()
                row["fakes_cpu_percent"] = 100 * (after[1] - before[1]) / (after[0] - before[0])
                await fakes_proc.stdin.send_all(b"lateness\n")
                row["fakes_late"] = await _read_json_line(fakes_proc, "fakes")
                row["workload"] = workload.name
                row["held"] = held(row)
                rows.append(row)
                print(
                    json.dumps({k: v for k, v in row.items() if k not in ("failures", "profile")}),
                    flush=True,
                )
                for failure in row["failures"]:
                    print("   ", failure, flush=True)
                print_profile(row)
                if failed_badly(row) and n != ladder[-1] and not args.keep_going:
                    print(f"-- stopping the ladder: {n} calls failed badly", flush=True)
                    break
        finally:
            await _stop_process(fakes_proc)
    print_table(rows, f", {workload.name} workload")
    best = headline(rows)
    print(
        f"held: {best} concurrent calls (no call failed, p99 caller-frame lag < 20 ms, "
        "playout dry inside utterances <= 1 % of the agent's audio)"
    )
    print(f"call logs: {log_root}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rows": rows, "headline": best}, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="role")
    p = sub.add_parser("fakes")
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--workload", choices=sorted(WORKLOADS), default="busy")
    p.add_argument("--nice", action="store_true", help="run ahead of the machine's other work")
    p = sub.add_parser("server")
    p.add_argument("--fakes", required=True)
    p.add_argument("--log-dir", required=True)
    p.add_argument("--stats", required=True)
    p.add_argument("--profile", default=None, help="write a stack-sample profile here")
    p.add_argument("--steps", action="store_true", help="record the event loop's long batches")
    p.add_argument("--max-seconds", type=float, default=600)
    p.add_argument("--cpu", type=int, default=None, help="pin this process to one CPU")
    p.add_argument("--nice", action="store_true", help="run ahead of the machine's other work")
    p.add_argument(
        "--admission", action="store_true", help="admit calls by measured load, as serve does"
    )
    p.add_argument("--listen-fd", type=int, default=None, help="accept on this inherited socket")
    parser.add_argument("--quick", action="store_true", help="1 and 10 calls, 30 s each")
    parser.add_argument("--calls", default="1,10,25,40,50,75,100")
    parser.add_argument(
        "--workload",
        choices=sorted(WORKLOADS),
        default="busy",
        help="busy: the agent talks most of the call (default); light: the earlier bench's call",
    )
    parser.add_argument(
        "--server-arg",
        action="append",
        help="pass an option to the server process (repeatable), e.g. --server-arg=--admission",
    )
    parser.add_argument(
        "--keep-going", action="store_true", help="run every step even after a bad one"
    )
    parser.add_argument(
        "--pin",
        action=argparse.BooleanOptionalAction,
        default=(os.cpu_count() or 1) >= 2,
        help="server alone on CPU 0, fakes and callers on CPU 1 (default with 2+ CPUs)",
    )
    parser.add_argument(
        "--seconds", type=float, default=None, help="length of each call (busy 40, light 30)"
    )
    parser.add_argument("--json", default=None, help="also write the rows here")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes sharing the port, as serve --workers N runs them; with --pin, "
        "worker i on CPU i (the fakes and callers stay on CPU 1)",
    )
    parser.add_argument(
        "--admission",
        action="store_true",
        help="the servers admit calls by their measured load (ADMISSION_CPU, "
        "ADMISSION_LOOP_LAG), as voice-agent serve does; refused callers hear the busy message",
    )
    parser.add_argument(
        "--phases",
        type=int,
        default=4,
        help="spread the calls' media frames over this many slots of the 20 ms, as a real "
        "platform's calls are (default 4: 5 ms apart; 1: every call's frame at once)",
    )
    parser.add_argument(
        "--nice",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the bench's processes ahead of the machine's other work (default)",
    )
    parser.add_argument(
        "--profile", action="store_true", help="sample the server's stacks (server-profile.txt)"
    )
    args = parser.parse_args()
    if args.role == "fakes":
        if args.nice:
            _raise_priority(LOAD_NICE)
        trio.run(fakes_main, args)
    elif args.role == "server":
        if args.cpu is not None:
            os.sched_setaffinity(0, {args.cpu})
        if args.nice:
            _raise_priority(SERVER_NICE)
        trio.run(server_main, args)
    else:
        if args.quick:
            args.calls, args.seconds = "1,10", 30.0
        if args.pin:
            # Before trio starts any thread; the fakes process inherits it.
            os.sched_setaffinity(0, {1})
        if args.nice:
            _raise_priority(LOAD_NICE)
        trio.run(bench_main, args)


#: With ``--nice`` (the default), the processes of the bench run ahead of the machine's
#: other work: the server as if it had its core to itself, the callers and fakes so that
#: their own delays do not pass for the server's. Needs the right to raise a priority;
#: without it the bench runs as it is, and the wait column shows what that cost.
SERVER_NICE = -10
LOAD_NICE = -5


def _raise_priority(nice: int) -> None:
    """This process's nice value, and its session's: with the kernel's autogroups on, a
    nice value only counts among processes of one session, so the session (each of the
    bench's processes has its own) is given it too."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        autogroup = Path("/proc/self/autogroup")
        if autogroup.exists():
            autogroup.write_text(str(nice))
    except (PermissionError, OSError):
        print(f"(cannot raise this process's priority to nice {nice}: running as is)")


if __name__ == "__main__":
    main()
