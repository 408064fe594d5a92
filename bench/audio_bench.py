"""Throughput of the phone audio path on one core, in multiples of real time.

Run: ``uv run python bench/audio_bench.py``. Every figure is the median of
several repeats so one noisy run does not move it.
"""

from __future__ import annotations

import os

# One core, as the figure claims: keep BLAS to one thread (before numpy loads) and pin the process.
for _var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")
if hasattr(os, "sched_setaffinity"):
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})

import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from adapters.media.audio import (  # noqa: E402
    Framer,
    OutboundConverter,
    PhoneEncoder,
    ulaw_decode,
    ulaw_encode,
)

SECONDS = 20.0
REPEATS = 7
CHUNK_BYTES = 4096  # a typical read from a streaming speech response


def median_seconds(run, repeats: int = REPEATS) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def speech_like(seconds: float, rate: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    t = np.arange(int(seconds * rate)) / rate
    voiced = 6000 * np.sin(2 * np.pi * 180 * t) * (1 + np.sin(2 * np.pi * 3 * t))
    return np.clip(voiced + rng.normal(0, 800, len(t)), -32768, 32767).astype(np.int16)


def bench_phone_path() -> tuple[float, int]:
    data = speech_like(SECONDS, 24000).astype("<i2").tobytes()
    chunks = [data[i : i + CHUNK_BYTES] for i in range(0, len(data), CHUNK_BYTES)]
    frames: list[bytes] = []

    def run() -> None:
        encoder, framer = PhoneEncoder(), Framer()
        frames.clear()
        for chunk in chunks:
            frames.extend(framer.push(encoder.process(chunk)))
        frames.extend(framer.push(encoder.flush()))
        last = framer.flush()
        if last is not None:
            frames.append(last)

    return median_seconds(run), len(frames)


def bench_outbound(rate: int) -> float:
    mulaw = ulaw_encode(speech_like(SECONDS, 8000))
    chunks = [mulaw[i : i + 160] for i in range(0, len(mulaw), 160)]

    def run() -> None:
        conv = OutboundConverter("audio/x-l16", rate)
        for chunk in chunks:
            conv.from_ulaw8k(chunk)
        conv.flush()

    return median_seconds(run)


def main() -> None:
    print(f"audio bench: {SECONDS:.0f} s of audio, median of {REPEATS} repeats, one core")

    took, frames = bench_phone_path()
    print(
        f"24 kHz pcm -> 8 kHz mu-law 20 ms frames (PhoneEncoder + Framer, {CHUNK_BYTES} B chunks): "
        f"{took * 1e3:.1f} ms, {SECONDS / took:,.0f}x real time, {frames} frames"
    )

    for rate in (16000, 24000):
        took = bench_outbound(rate)
        print(
            f"8 kHz mu-law -> {rate // 1000} kHz L16 (OutboundConverter, 160 B chunks): "
            f"{took * 1e3:.1f} ms, {SECONDS / took:,.0f}x real time"
        )

    pcm = speech_like(60.0, 8000)
    took = median_seconds(lambda: ulaw_encode(pcm))
    print(f"ulaw_encode: {len(pcm) / took / 1e6:,.0f} M samples/s ({60.0 / took:,.0f}x real time)")
    mulaw = ulaw_encode(pcm)
    took = median_seconds(lambda: ulaw_decode(mulaw))
    print(
        f"ulaw_decode: {len(mulaw) / took / 1e6:,.0f} M samples/s ({60.0 / took:,.0f}x real time)"
    )


if __name__ == "__main__":
    main()
