"""How long the caller hears nothing when the worker running the call is lost.

    uv run python bench/takeover.py [--calls 5] [--store local|redis|drain|moved|all]

Each call is the worker-loss scenario (``fixtures/worker_loss.py``): two real
``voice-agent serve`` processes with the offline providers behind a failover TCP
balancer; once the agent is answering the caller's first line, the worker running
the call is killed (``local``, ``redis``) or drained with a 0.5 s drain timeout
(``drain``), or stays up while the call's connection is cut and the reconnect goes
to the other worker (``moved``: asked for the call, the holder hands it over). The simulated phone retries the stream after 0.5 s, as Vobiz's retry
would after some delay of its own. Printed per store, as medians:

- **silence**: from the moment the phone's socket died to the first agent audio
  the phone received afterwards, which is the gap the caller hears. It includes the
  phone's 0.5 s retry delay;
- **takeover → audio**: from the new worker's ``taken_over`` note to its first
  ``PlayAudio`` (replaying the log, reopening the providers, synthesizing the
  sentence said again), in the call's log.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

import trio

from adapters.simulator.script import SimulationResult
from engine.calllog import split_log
from fixtures.processes import redis_server
from fixtures.worker_loss import Loss, call_and_lose_its_worker

LOST = ("(media socket closed without stop)", "(network drop: media socket lost)")


def silence(result: SimulationResult) -> float:
    """Seconds from the socket's loss to the first agent audio after it, as the phone heard."""
    lost = next(entry.t for entry in result.transcript if entry.what in LOST)
    return min(start for start, _audio in result.agent_segments if start > lost) - lost


def takeover_to_audio(log: Path) -> float:
    records = [json.loads(line) for line in split_log(log.read_text())[0]]
    taken = next(r["t"] for r in records if r.get("what") == "taken_over")
    played = next(r["t"] for r in records if r.get("command") == "PlayAudio" and r["t"] > taken)
    return played - taken


LOSSES: dict[str, Loss] = {"local": "kill", "drain": "drain", "moved": "cut"}


async def one_call(store: str, folder: Path) -> tuple[float, float]:
    if store == "redis":
        async with redis_server(folder) as url:
            first = {"LOG_STORE": url, "CALL_LOG_DIR": str(folder / "first")}
            second = {"LOG_STORE": url, "CALL_LOG_DIR": str(folder / "second")}
            result, _balancer, _ports = await call_and_lose_its_worker(first, second)
        (log,) = (folder / "second").glob("*.jsonl")
    else:
        calls = {"CALL_LOG_DIR": str(folder / "calls")}
        drain = store == "drain"
        first = calls | ({"DRAIN_TIMEOUT": "0.5"} if drain else {})
        loss = LOSSES[store]
        result, _balancer, _ports = await call_and_lose_its_worker(first, calls, loss)
        (log,) = (folder / "calls").glob("*.jsonl")
    return silence(result), takeover_to_audio(log)


async def main(calls: int, stores: list[str]) -> None:
    print(
        f"{'store':<7} {'calls':>5} {'silence p50':>12} {'min-max':>14} {'takeover→audio p50':>19}"
    )
    for store in stores:
        gaps, takeovers = [], []
        for _ in range(calls):
            with tempfile.TemporaryDirectory() as folder:
                gap, takeover = await one_call(store, Path(folder))
            gaps.append(gap)
            takeovers.append(takeover)
        spread = f"{min(gaps) * 1000:.0f}-{max(gaps) * 1000:.0f} ms"
        print(
            f"{store:<7} {calls:>5} {statistics.median(gaps) * 1000:>9.0f} ms {spread:>14} "
            f"{statistics.median(takeovers) * 1000:>16.0f} ms"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument(
        "--store", choices=["local", "redis", "drain", "moved", "all"], default="all"
    )
    args = parser.parse_args()
    stores = ["local", "redis", "drain", "moved"] if args.store == "all" else [args.store]
    trio.run(main, args.calls, stores)
