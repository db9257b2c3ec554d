"""The pose estimator's speed on real footage: `python -m bench.pose` (needs `make footage`).

Per `PoseEstimator.process` call while tracking (lite and full, 1 and 2 interpreter threads), and
per `detect` call: wall time, the model's inference alone, and the overhead around it (cropping,
conversion, decoding the outputs, identity checks). Frames are decoded just before each call,
as the engine does, so the caches are as warm as they will be in the engine.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import cv2

from analysis import models
from analysis.pose import PoseEstimator


class _Timed:
    """An interpreter whose invoke() adds its wall time and this thread's CPU time to totals."""

    def __init__(self, interpreter: Any) -> None:
        self._interpreter = interpreter
        self.calls = 0
        self.seconds = 0.0
        self.cpu = 0.0

    def invoke(self) -> None:
        start, start_cpu = time.perf_counter(), time.thread_time()
        self._interpreter.invoke()
        self.seconds += time.perf_counter() - start
        self.cpu += time.thread_time() - start_cpu
        self.calls += 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._interpreter, name)


def measure(model: str, threads: int, frames: int, bgra: bool) -> dict[str, float]:
    """Per-call figures (ms) over the demo clip's frames 20..frames, tracking from frame 0."""
    estimator = PoseEstimator(model=model, threads=threads)
    landmarker = estimator._landmarker = _Timed(estimator._landmarker)  # type: ignore[assignment]
    detector = estimator._detector = _Timed(estimator._detector)  # type: ignore[assignment]
    capture = cv2.VideoCapture(str(models.footage_dir() / "demo.mp4"))
    wall = cpu = 0.0
    calls = tracked = 0
    detect_wall = 0.0
    try:
        for i in range(frames):
            ok, frame = capture.read()
            if not ok:
                break
            if bgra:
                frame = cv2.cvtColor(frame, cv2.COLOR_BGR2BGRA)
            if i == 20:
                landmarker.calls = detector.calls = 0
                landmarker.seconds = detector.seconds = landmarker.cpu = 0.0
            start, start_cpu = time.perf_counter(), time.thread_time()
            observation = estimator.process(frame, i / 30)
            if i >= 20:
                wall += time.perf_counter() - start
                cpu += time.thread_time() - start_cpu
                calls += 1
                tracked += observation is not None and not observation.detected
            if i in (40, 80, 120):
                start = time.perf_counter()
                estimator.detect(frame)
                detect_wall += time.perf_counter() - start
    finally:
        capture.release()
    # The three detect() calls are timed apart; any other detector run is overhead of tracking.
    inference = landmarker.seconds + detector.seconds - min(detector.seconds, detect_wall)
    return {
        "tracked": tracked / calls,
        "wall": wall / calls * 1e3,
        "cpu": cpu / calls * 1e3,
        "inference": landmarker.seconds / max(landmarker.calls, 1) * 1e3,
        "overhead": (wall - inference) / calls * 1e3,
        # This thread's CPU outside the landmark model (with 1 thread the model runs on it).
        "overhead_cpu": (cpu - landmarker.cpu) / calls * 1e3,
        "detect": detect_wall / 3 * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=160)
    parser.add_argument("--bgra", action="store_true", help="feed BGRA frames")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    print(
        "| model | threads | tracked | per call (wall) | caller's CPU | inference (wall) "
        "| overhead (wall) | overhead (CPU) | detect() |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model in ("lite", "full"):
        for threads in (1, 2):
            r = measure(model, threads, args.frames, args.bgra)
            print(
                f"| {model} | {threads} | {r['tracked']:.0%} | {r['wall']:.1f} ms | "
                f"{r['cpu']:.1f} ms | {r['inference']:.1f} ms | {r['overhead']:.2f} ms | "
                f"{r['overhead_cpu']:.2f} ms | {r['detect']:.1f} ms |"
            )


if __name__ == "__main__":
    main()
