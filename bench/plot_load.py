"""Plot a load run: ``uv run --with matplotlib python bench/plot_load.py RUN.json docs/load.png``.

RUN.json is what ``bench/load.py --json`` writes. matplotlib is not a project
dependency: ``uv run --with`` brings it for this one command.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    source, target = Path(sys.argv[1]), Path(sys.argv[2])
    rows = json.loads(source.read_text())["rows"]
    calls = [r["calls"] for r in rows]

    def series(key: str, stat: str) -> list[float]:
        return [1000 * r[key][stat] if r[key] else float("nan") for r in rows]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for stat in ("p50", "p95", "p99"):
        left.plot(calls, series("overhead", stat), marker="o", label=f"overhead {stat}")
    left.plot(
        calls,
        series("inbound_lag_send", "p99"),
        marker="s",
        linestyle="--",
        label="inbound lag p99 (vs send)",
    )
    left.axhline(20, color="grey", linewidth=0.8, linestyle=":", label="20 ms (headline rule)")
    left.set_xscale("log")
    left.set_yscale("log")
    left.set_xlabel("concurrent calls")
    left.set_ylabel("ms")
    left.set_title("Server overhead on voice-to-voice")
    left.legend()
    right.plot(calls, [r["cpu_percent"] for r in rows], marker="o", label="server CPU %")
    right.plot(calls, [r["rss_per_call_mb"] for r in rows], marker="s", label="RSS MB per call")
    right.set_xscale("log")
    right.set_xlabel("concurrent calls")
    right.axhline(100, color="grey", linewidth=0.8, linestyle=":")
    right.set_title("Server cost (one process pinned to one core)")
    right.legend()
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    print(f"wrote {target}")


if __name__ == "__main__":
    main()
