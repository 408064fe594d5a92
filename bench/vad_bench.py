"""Local VAD cost per call: ``uv run python bench/vad_bench.py``.

A call sends 50 frames a second; the figure is the share of one core one call's
detector takes, measured on 12 s of speech and silence (median of 5 runs).
"""

from __future__ import annotations

import statistics
import time

from adapters.media.vad import VadSegmenter, make_classifier
from adapters.offline.espeak import Espeak


def main() -> None:
    speech = Espeak().synthesize_ulaw8k(
        "I would like to book a table for four people tomorrow at seven, please. "
        "Could you also tell me whether you have vegetarian dishes on the menu?"
    )
    audio = (b"\xff" * 8000 + speech) * 2
    frames = [audio[i : i + 160] for i in range(0, len(audio) - 159, 160)]
    for kind in ("webrtc", "silero"):
        runs = []
        for _ in range(5):
            classifier, segmenter = make_classifier(kind), VadSegmenter()
            start = time.perf_counter()
            for n, frame in enumerate(frames):
                segmenter.push(classifier.is_speech(frame), n * 0.02)
            runs.append((time.perf_counter() - start) / len(frames))
        per_frame = statistics.median(runs)
        print(
            f"{kind:7s} {per_frame * 1e6:8.1f} us per 20 ms frame = "
            f"{per_frame * 50 * 100:6.3f} % of one core per call ({len(frames)} frames)"
        )


if __name__ == "__main__":
    main()
