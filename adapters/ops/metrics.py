"""The server's figures for Prometheus, served at ``/metrics`` in the standard text format.

The metric objects live here, at module level as prometheus-client means them to,
so each room observes with one short line where the thing happens and nothing is
passed around. Per-turn latency is not measured a second time: :class:`CallFigures`
reads each call's log records as they are written, through the same
:class:`~engine.latency.LatencyTracker` that makes the log's footer, so a
dashboard and a call's footer can never disagree.

Several worker processes: when ``PROMETHEUS_MULTIPROC_DIR`` names a directory
before this module is first imported, every process writes its figures to files
there (prometheus-client's multiprocess mode) and any process's ``/metrics`` reads
them all, so a scrape that reaches one worker sees the whole server. The live-calls
gauge then sums the processes still running; a process that exits removes its
share. Without it, the figures live in this process, and ``/metrics`` also shows
its CPU, memory and descriptors.
"""

from __future__ import annotations

import atexit
import os
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from engine.events import Event
from engine.latency import BargeInLatency, LatencyTracker, TurnLatency

#: Where the worker processes write their figures (prometheus-client's own variable).
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The text format every Prometheus reads (our names need none of 1.0.0's escaping).
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _multiprocess_dir() -> str | None:
    return os.environ.get(MULTIPROC_ENV) or None


if _multiprocess_dir():
    # A process that reuses a dead one's pid (a restarted container is pid 1 again) would
    # otherwise start from that process's live-calls figure.
    multiprocess.mark_process_dead(os.getpid())
    atexit.register(lambda: multiprocess.mark_process_dead(os.getpid()))


# -- calls ---------------------------------------------------------------------------------------

CALLS_LIVE = Gauge(
    "voice_agent_calls_live",
    "Calls with a running conversation on this server (the autoscaler's per-pod figure).",
    multiprocess_mode="livesum",
)
CALLS_STARTED = Counter("voice_agent_calls_started", "Calls whose media stream started.")
CALLS_ENDED = Counter(
    "voice_agent_calls_ended",
    "Calls that ended, by why (the footer's reason, grouped).",
    ["reason"],
)
ADMISSION_REFUSALS = Counter(
    "voice_agent_admission_refusals",
    "Calls and sockets turned away: at /answer, at the media socket, or a webhook's sender.",
    ["stage", "reason"],
)

# -- what the caller feels -----------------------------------------------------------------------

VOICE_TO_VOICE = Histogram(
    "voice_agent_voice_to_voice_seconds",
    "Per turn: the caller stopped speaking -> the reply's first audio left for the phone.",
    buckets=(0.25, 0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 7.5, 10.0),
)
BARGE_IN_REACTION = Histogram(
    "voice_agent_barge_in_reaction_seconds",
    "Per barge-in: the caller started talking over the agent -> clearAudio sent "
    "(includes the agent's barge_in_min_speech).",
    buckets=(0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1.0, 2.0),
)

# -- providers -----------------------------------------------------------------------------------

PROVIDER_LATENCY = Histogram(
    "voice_agent_provider_latency_seconds",
    "Provider requests: stt_connect, stt_reconnect (the WebSocket open), llm_first_token, "
    "tts_first_byte (from the request to its first text or audio).",
    ["provider", "kind"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0),
)
PROVIDER_ERRORS = Counter(
    "voice_agent_provider_errors",
    "Provider failures: stt (a connection refused, unreachable or lost), llm (a reply), "
    "tts (a sentence's speech).",
    ["provider", "kind"],
)

# -- the media socket, the process, the call logs ------------------------------------------------

PROTOCOL_ERRORS = Counter(
    "voice_agent_protocol_errors", "Media-socket frames that broke the Vobiz protocol.", ["kind"]
)
DROPPED_AUDIO_FRAMES = Counter(
    "voice_agent_dropped_audio_frames",
    "Caller audio frames dropped because the recognizer was 5 s behind.",
)
EVENT_LOOP_LAG = Histogram(
    "voice_agent_event_loop_lag_seconds",
    "How late a timer of the event loop woke up: every caller on the process waits as long.",
    buckets=(0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0),
)
CALL_LOG_WRITE_ERRORS = Counter(
    "voice_agent_call_log_write_errors", "Writes to a call log that failed (a full disk)."
)

#: The footer reasons kept as they are; the others are grouped (a transfer's reason names a
#: phone number, an error's its text: neither belongs in a label).
END_REASONS = frozenset(
    {
        "hangup (agent)",
        "hangup (transfer unavailable)",
        "hangup webhook",
        "stop",
        "socket closed",
        "socket closed (no reconnect)",
        "too many protocol errors",
        "server shutdown",
    }
)


def end_reason(reason: str) -> str:
    """A call's end reason as a label: one of :data:`END_REASONS`, ``transfer``, ``error``
    or ``other``."""
    if reason in END_REASONS:
        return reason
    if reason.startswith("transfer to "):
        return "transfer"
    if reason.startswith("error"):
        return "error"
    return "other"


def refused(stage: str, reason: str) -> None:
    """A call or a socket turned away; ``reason`` is one of the server's stable reasons."""
    ADMISSION_REFUSALS.labels(stage, reason).inc()


def timed(
    emit: Callable[[Event], Awaitable[None]],
    provider: str,
    kind: str,
    first: type[Event],
    failed: type[Event],
    error_kind: str,
) -> Callable[[Event], Awaitable[None]]:
    """``emit`` for one provider request: times its first ``first`` event from now, and
    counts a ``failed`` one, on their way to the call."""
    began = trio.current_time()
    waiting = True

    async def timed_emit(event: Event) -> None:
        nonlocal waiting
        if waiting and isinstance(event, first):
            waiting = False
            PROVIDER_LATENCY.labels(provider, kind).observe(trio.current_time() - began)
        elif isinstance(event, failed):
            PROVIDER_ERRORS.labels(provider, error_kind).inc()
        await emit(event)

    return timed_emit


class CallFigures:
    """Per-turn and per-barge-in figures, read from the calls' log records as they are written.

    A log listener (``(call id, record)``): each call gets its own tracker at its
    header, and :meth:`forget` drops it when the call is over.
    """

    def __init__(self) -> None:
        self._calls: dict[str, LatencyTracker] = {}

    def __call__(self, call_id: str, record: dict[str, Any]) -> None:
        if record.get("kind") == "header":
            self._calls[call_id] = LatencyTracker()
            return
        tracker = self._calls.get(call_id)
        if tracker is None:
            return
        figure = tracker.add(record)
        if isinstance(figure, TurnLatency) and figure.voice_to_voice is not None:
            VOICE_TO_VOICE.observe(figure.voice_to_voice)
        elif isinstance(figure, BargeInLatency):
            BARGE_IN_REACTION.observe(figure.reaction)

    def forget(self, call_id: str) -> None:
        self._calls.pop(call_id, None)


#: How often the event loop's lag is sampled.
LAG_INTERVAL = 0.25


async def watch_loop_lag(
    observe: Callable[[float], None] = EVENT_LOOP_LAG.observe, interval: float = LAG_INTERVAL
) -> None:
    """Sleep ``interval`` again and again and observe how late each wake-up was.

    A call's media is handled on the same loop, so anything that holds it (a
    full garbage collection, a slow synchronous call) delays every caller's
    audio by as much: this is the figure that shows it.
    """
    while True:
        deadline = trio.current_time() + interval
        await trio.sleep_until(deadline)
        observe(trio.current_time() - deadline)


def exposition(directory: str | None = None) -> tuple[bytes, str]:
    """The text ``/metrics`` serves, and its content type: every worker's figures when the
    multiprocess directory is set (``directory``, by default ``PROMETHEUS_MULTIPROC_DIR``),
    else this process's."""
    directory = directory or _multiprocess_dir()
    if directory:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=directory)
        return generate_latest(registry), CONTENT_TYPE
    return generate_latest(REGISTRY), CONTENT_TYPE
