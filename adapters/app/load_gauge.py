"""How loaded this process is, measured, so that a call is admitted only if it can be served.

A fixed ``MAX_CALLS`` cannot know what a call costs: that depends on the
machine, the providers and how much the agent talks. Admitted past what the
process can carry, *every* call degrades at once (late frames, holes in the
agent's audio, slow barge-in). So ``/answer`` also asks this gauge, which
watches two things over the last :attr:`LoadLimits.window` seconds:

- the process's CPU time, as a share of one core (the event loop runs on one);
- the event loop's lateness: how late a timer set every :data:`INTERVAL` wakes.
  A loop that is late for most of a window is saturated, whatever the CPU says
  (another process may have the core).

A call just admitted has not shown its load yet: its greeting, its caller and
its first reply come over the next seconds. So the load a new call would join
is the larger of the CPU measured and what the calls held would cost at the
CPU a call was last measured to cost (:attr:`LoadWindow.call_cpu`): a burst of
calls cannot all be admitted inside one measuring window, and calls already
running are not counted twice. ``MAX_CALLS`` stays the hard ceiling.

:class:`LoadWindow` is the arithmetic, with the times given (table-tested);
:class:`LoadGauge` samples the clocks for it.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from typing import Any

import attrs
import trio

#: Seconds between samples: the lateness of a timer this often, and the CPU time.
INTERVAL = 0.05


@attrs.frozen
class LoadLimits:
    """Above either limit a new call is refused (0 turns a limit off)."""

    #: CPU over the window, as a share of one core, with the new call counted in. The busy
    #: call of ``bench/load.py`` held at 61 % of a core and not at 70 % (``docs/load.md``).
    cpu: float = 0.6
    #: The event loop's lateness: most of the window's samples (the 75th percentile).
    loop_lag: float = 0.015
    #: Seconds measured.
    window: float = 2.0
    #: Seconds after an admission before a call's cost is measured again (it is starting).
    young: float = 10.0
    #: What a call is taken to cost until one has been measured (share of a core).
    first_call_cpu: float = 0.02

    @property
    def on(self) -> bool:
        return self.cpu > 0 or self.loop_lag > 0


@attrs.define
class LoadWindow:
    """The samples of the last window and the calls admitted lately; times in seconds."""

    limits: LoadLimits = attrs.Factory(LoadLimits)
    #: (time, CPU seconds used so far, lateness of the timer, calls held)
    samples: deque[tuple[float, float, float, int]] = attrs.Factory(deque)
    admissions: deque[float] = attrs.Factory(deque)
    #: The measured CPU share of one call (smoothed), once there was a quiet time to measure.
    call_cpu: float | None = None

    def sample(self, t: float, cpu_seconds: float, lag: float, calls: int) -> None:
        samples = self.samples
        samples.append((t, cpu_seconds, lag, calls))
        while samples and samples[0][0] < t - self.limits.window:
            samples.popleft()
        while self.admissions and self.admissions[0] <= t - self.limits.young:
            self.admissions.popleft()
        self._learn_call_cpu()

    def admitted(self, t: float) -> None:
        self.admissions.append(t)

    def cpu(self) -> float | None:
        """CPU time over wall time across the window, or None before two samples."""
        if len(self.samples) < 2:
            return None
        (t0, cpu0, _, _), (t1, cpu1, _, _) = self.samples[0], self.samples[-1]
        return (cpu1 - cpu0) / (t1 - t0) if t1 > t0 else None

    def loop_lag(self) -> float:
        """The window's 75th percentile lateness of the event loop."""
        lags = sorted(s[2] for s in self.samples)
        return lags[(len(lags) * 3) // 4] if lags else 0.0

    def starting(self) -> int:
        """Calls admitted less than ``young`` seconds ago."""
        return len(self.admissions)

    def _learn_call_cpu(self) -> None:
        """With no call starting and a few held all window, CPU over calls is what one costs
        (the process's own idle share included, which errs on the safe side)."""
        cpu = self.cpu()
        if cpu is None or self.admissions or self.samples[0][0] > self.samples[-1][0] - 1.0:
            return
        calls = min(s[3] for s in self.samples)
        if calls < 3 or calls != max(s[3] for s in self.samples):
            return
        measured = cpu / calls
        self.call_cpu = measured if self.call_cpu is None else 0.8 * self.call_cpu + 0.2 * measured

    def per_call(self) -> float:
        """What a call costs, as last measured (until then, the limits' first guess)."""
        return self.call_cpu if self.call_cpu is not None else self.limits.first_call_cpu

    def refusal(self, calls: int | None = None) -> str | None:
        """Why one more call would be too many now, or None to admit it.

        ``calls``: the calls held now (by default, as last sampled).
        """
        limits = self.limits
        lag = self.loop_lag()
        if limits.loop_lag and lag > limits.loop_lag:
            return f"event loop {lag * 1000:.0f} ms late (limit {limits.loop_lag * 1000:.0f} ms)"
        cpu = self.cpu()
        if not limits.cpu or cpu is None:
            return None
        if calls is None:
            calls = self.samples[-1][3]
        per_call = self.per_call()
        projected = max(cpu, per_call * calls) + per_call
        if projected > limits.cpu:
            return (
                f"CPU {cpu:.0%} of a core, {calls} call(s) at {per_call:.1%} each: "
                f"{projected:.0%} with one more (limit {limits.cpu:.0%})"
            )
        return None

    def report(self) -> dict[str, Any]:
        """For ``/health``: what was measured and what a new call would be told."""
        cpu = self.cpu()
        return {
            "cpu": None if cpu is None else round(cpu, 3),
            "loop_lag_ms": round(self.loop_lag() * 1000, 1),
            "starting_calls": self.starting(),
            "call_cpu": None if self.call_cpu is None else round(self.call_cpu, 4),
            "limits": {"cpu": self.limits.cpu, "loop_lag_ms": self.limits.loop_lag * 1000},
        }


class LoadGauge:
    """Samples this process's CPU time and its event loop's lateness into a :class:`LoadWindow`.

    Run :meth:`run` in the server's nursery; ask :meth:`refusal` before admitting a call
    and tell :meth:`admitted` after.
    """

    def __init__(
        self,
        limits: LoadLimits,
        calls: Callable[[], int],
        cpu_clock: Callable[[], float] = time.process_time,
        wall_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = LoadWindow(limits)
        self.calls = calls
        self.cpu_clock = cpu_clock
        self.wall_clock = wall_clock

    async def run(self) -> None:
        while True:
            due = trio.current_time() + INTERVAL
            await trio.sleep_until(due)
            lag = trio.current_time() - due
            self.window.sample(self.wall_clock(), self.cpu_clock(), lag, self.calls())

    def refusal(self) -> str | None:
        return self.window.refusal(self.calls())

    def admitted(self) -> None:
        self.window.admitted(self.wall_clock())

    def report(self) -> dict[str, Any]:
        return self.window.report() | {"refusing": self.refusal()}
