"""A CPU-time stack sampler for the server under load, in the process itself.

py-spy cannot read this machine's Python (it finds no version in the target
process), cProfile costs more than the per-frame work it measures, and a
sampling *thread* is biased: it can only look when the main thread lets go
of the GIL, which is at the next system call, so syscalls crowd out Python
code in its picture. ``ITIMER_PROF`` instead fires every ``interval`` of CPU
time (user + kernel) the process spends, and the handler sees the frame that
was running, so each function's share of samples is its share of the CPU.
Idle time (waiting in ``epoll``) costs no CPU and takes no samples.

    with StackSampler():
        trio.run(...)
"""

from __future__ import annotations

import json
import signal
import sysconfig
from collections import Counter
from pathlib import Path
from types import FrameType

#: Where code lives, longest first: shown relative to these, as ``trio/_run.py``.
_ROOTS = sorted(
    {
        str(Path(__file__).resolve().parents[1]) + "/",  # this project
        sysconfig.get_paths()["purelib"] + "/",  # installed packages
        sysconfig.get_paths()["stdlib"] + "/",
    },
    key=len,
    reverse=True,
)


def _where(frame: FrameType) -> str:
    code = frame.f_code
    path = code.co_filename
    for root in _ROOTS:
        if path.startswith(root):
            path = path[len(root) :]
            break
    return f"{path}:{code.co_name}"


class StackSampler:
    """Counts, per function, the CPU samples it was running in (self) or under (inclusive)."""

    def __init__(self, interval: float = 0.002, depth: int = 80) -> None:
        self.interval = interval
        self.depth = depth
        self.self_lines: Counter[str] = Counter()
        self.self_functions: Counter[str] = Counter()
        self.inclusive: Counter[str] = Counter()
        self.samples = 0

    def __enter__(self) -> StackSampler:
        signal.signal(signal.SIGPROF, self._sample)
        signal.setitimer(signal.ITIMER_PROF, self.interval, self.interval)
        return self

    def __exit__(self, *exc: object) -> None:
        signal.setitimer(signal.ITIMER_PROF, 0, 0)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)

    def _sample(self, signum: int, frame: FrameType | None) -> None:
        if frame is None:
            return
        self.samples += 1
        # A C call (socket.send, json.loads) is charged to the Python line that made it.
        leaf = _where(frame)
        self.self_lines[f"{leaf}@{frame.f_lineno}"] += 1
        self.self_functions[leaf] += 1
        seen: set[str] = set()
        depth = 0
        while frame is not None and depth < self.depth:
            where = _where(frame)
            if where not in seen:
                seen.add(where)
                self.inclusive[where] += 1
            frame = frame.f_back
            depth += 1

    def report(self, top: int = 80) -> str:
        n = max(self.samples, 1)
        lines = [
            f"{self.samples} samples, one per {self.interval * 1000:.0f} ms of CPU "
            f"({self.samples * self.interval:.1f} s of CPU)",
            "",
            "self (line running when sampled), % of CPU:",
        ]
        lines += [f"  {100 * c / n:5.1f}  {k}" for k, c in self.self_lines.most_common(top)]
        lines += ["", "self by function, % of CPU:"]
        lines += [f"  {100 * c / n:5.1f}  {k}" for k, c in self.self_functions.most_common(top)]
        lines += ["", "inclusive (function on the stack), % of CPU:"]
        lines += [f"  {100 * c / n:5.1f}  {k}" for k, c in self.inclusive.most_common(top)]
        return "\n".join(lines) + "\n"

    def write_report(self, path: Path, top: int = 120) -> None:
        """The report as text, and beside it (``.json``) the inclusive shares of every
        function and the CPU seconds sampled, for tables computed from them."""
        path.write_text(self.report(top))
        n = max(self.samples, 1)
        shares = {k: c / n for k, c in self.inclusive.items()}
        data = {"cpu_seconds": self.samples * self.interval, "inclusive": shares}
        path.with_suffix(".json").write_text(json.dumps(data))
