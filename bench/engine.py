"""Benchmark of the analysis engine alone (not a test): speed against decoding, memory, accuracy.

    .venv/bin/python -m bench.engine              # everything; first run generates the clips
    .venv/bin/python -m bench.engine --quick      # speed and accuracy only (no 10-minute clip)
    .venv/bin/python -m bench.engine --threads 0  # let OpenCV use every core (default: one)

What it measures, in one run:
- speed: for a 720p30 one-minute workout clip, the time to only decode every frame with OpenCV
  (`read()`), against the time of the full analysis ("full": highlights and workout, one pass).
  The ratio is the engine's overhead on top of decoding; ×real-time is clip length / analysis time.
- memory: peak resident memory (ru_maxrss) of a fresh process analysing a 1-minute and a
  10-minute 1080p clip: it must be flat in the length and under 400 MB.
- accuracy: the fixed-seed suite of generated clips from `tests.synthetic`, per set and summed up,
  and the same clips with other seeds (held out: the engine was never tuned on them).

Clips are generated once into `bench/.cache/` (the 10-minute 1080p clip takes several minutes).
Results are printed as tables and written to `bench/engine_results.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from railway_video_generator import RailwayVideoGenerator  # noqa: E402
from tests import synthetic  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
RESULTS = Path(__file__).resolve().parent / "engine_results.json"


def _workout_spec(minutes: float, size: tuple[int, int], seed: int) -> synthetic.WorkoutSpec:
    """Sets of every exercise (8-12 reps, 1.2-3 s a rep) with rests, until about `minutes`."""
    sets, estimate, i = [], 5.5, 0
    while estimate < minutes * 60 - 5.5:
        reps, period = 8 + i % 5, 1.2 + 0.45 * (i % 5)
        sets.append(
            synthetic.SetSpec(synthetic.EXERCISES[i % len(synthetic.EXERCISES)], reps, period)
        )
        estimate += reps * period + 5.5
        i += 1
    return synthetic.WorkoutSpec(tuple(sets), seed=seed, size=size, fps=30.0, rest=(4.0, 7.0))


def cached_clip(minutes: float, size: tuple[int, int], seed: int = 100) -> Path:
    """The cached workout clip, generated on first use (written aside, then renamed)."""
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"engine_{minutes:g}min_{size[0]}x{size[1]}_s{seed}.mp4"
    if not path.exists():
        print(f"generating {path.name} ...", flush=True)
        tmp = path.with_suffix(".tmp.mp4")
        synthetic.make_workout_video(tmp, _workout_spec(minutes, size, seed))
        os.replace(tmp, path)
    return path


def decode_only(path: Path) -> tuple[float, int]:
    """Seconds to decode (and convert) every frame with OpenCV, and the frame count."""
    began = time.perf_counter()
    capture = cv2.VideoCapture(str(path))
    frames = 0
    try:
        while True:
            ok, _ = capture.read()
            if not ok:
                break
            frames += 1
    finally:
        capture.release()
    return time.perf_counter() - began, frames


def speed(path: Path, repeats: int) -> dict[str, Any]:
    """Decode-only against full analysis on the same file, interleaved, best of `repeats`."""
    decode, analysis, frames, fps = [], [], 0, 30.0
    engine = RailwayVideoGenerator()
    for _ in range(repeats):
        seconds, frames = decode_only(path)
        decode.append(seconds)
        began = time.perf_counter()
        result = engine.analyze(path, "full")
        analysis.append(time.perf_counter() - began)
        fps = result.video.fps
    best_decode, best_analysis = min(decode), min(analysis)
    length = frames / fps
    return {
        "clip": path.name,
        "seconds_of_video": round(length, 1),
        "frames": frames,
        "decode_s": round(best_decode, 2),
        "analysis_s": round(best_analysis, 2),
        "ratio": round(best_analysis / best_decode, 2),
        "x_realtime": round(length / best_analysis, 1),
        "decode_runs_s": [round(x, 2) for x in decode],
        "analysis_runs_s": [round(x, 2) for x in analysis],
    }


_MEMORY_PROBE = """
import os, resource, sys, cv2
if int(sys.argv[2]) == 1:
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
if int(sys.argv[2]) > 0:
    cv2.setNumThreads(int(sys.argv[2]))
sys.path.insert(0, sys.argv[3])
from railway_video_generator import RailwayVideoGenerator
RailwayVideoGenerator().analyze(sys.argv[1], "full")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def peak_memory_mb(path: Path, threads: int) -> float:
    """Peak RSS in MB of a fresh interpreter that analyses `path` ("full")."""
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path), str(threads), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    return round(int(out.stdout.strip().splitlines()[-1]) / 1024, 1)


def accuracy(suite: tuple[synthetic.WorkoutSpec, ...]) -> dict[str, Any]:
    """Run a suite of generated clips; per-set rows and the summary against the targets."""
    engine = RailwayVideoGenerator()
    clips = []
    with tempfile.TemporaryDirectory() as folder:
        for index, spec in enumerate(suite):
            truth = synthetic.make_workout_video(Path(folder) / f"clip{index}.mp4", spec)
            clips.append(synthetic.score_clip(index, truth, engine.analyze(truth.path, "full")))
    summary = synthetic.summarise(clips)
    return {
        "sets": [asdict(s) for c in clips for s in c.sets],
        "summary": asdict(summary),
        "clips": [
            {
                "sets_in_rest": c.sets_in_rest,
                "top3_on_intense": c.top3_on_intense,
                "top3": c.top3_count,
            }
            for c in clips
        ],
    }


def _print_speed(row: dict[str, Any]) -> None:
    print("\nSpeed (720p30, one minute, 'full' analysis)")
    print("| decode only | full analysis | ratio | x real time |")
    print("|---|---|---|---|")
    print(
        f"| {row['decode_s']} s | {row['analysis_s']} s | {row['ratio']} | {row['x_realtime']}x |"
    )


def _print_memory(rows: list[dict[str, Any]]) -> None:
    print("\nPeak memory of a fresh process ('full' analysis, 1080p)")
    print("| clip | minutes | peak RSS |")
    print("|---|---|---|")
    for row in rows:
        print(f"| {row['clip']} | {row['minutes']} | {row['peak_mb']} MB |")


def _print_accuracy(report: dict[str, Any], title: str) -> None:
    print(f"\nAccuracy on {title}")
    print("| clip | exercise | true reps | found | start err s | end err s |")
    print("|---|---|---|---|---|---|")
    for s in report["sets"]:
        print(
            f"| {s['clip']} | {s['exercise']} | {s['true_reps']} | {s['found_reps']} | "
            f"{s['start_error']} | {s['end_error']} |"
        )
    m = report["summary"]
    print("\n| target | measured |")
    print("|---|---|")
    print(f"| reps within ±1 on >= 95 % of sets | {m['within_one']:.0%} of {m['sets']} |")
    print(f"| mean abs rep error <= 5 % | {m['mean_rel_error']:.1%} |")
    print(
        f"| set boundaries within 1.0 s | {m['boundaries_within_1s']:.0%} "
        f"(worst {m['max_boundary_error']} s) |"
    )
    print(f"| no set inside a rest | {m['sets_in_rest']} found in rests |")
    print(f"| top-3 highlights on an intense period | {m['top3_on_intense']:.0%} |")


def run(quick: bool = False, threads: int = 1, repeats: int = 2) -> dict[str, Any]:
    """Run the benchmark, print its tables, write `bench/engine_results.json`, return figures."""
    if threads == 1:
        # "One core" for real: FFmpeg's decoder threads are not governed by setNumThreads.
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    if threads > 0:
        cv2.setNumThreads(threads)
    results: dict[str, Any] = {
        "opencv_threads": threads or "default",
        "cpu_count": os.cpu_count(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    results["speed"] = speed(cached_clip(1, (1280, 720)), repeats)
    _print_speed(results["speed"])
    if not quick:
        rows = []
        for minutes in (1, 10):
            path = cached_clip(minutes, (1920, 1080))
            rows.append(
                {
                    "clip": path.name,
                    "minutes": minutes,
                    "peak_mb": peak_memory_mb(path, threads or 0),
                }
            )
        results["memory"] = rows
        _print_memory(rows)
    results["accuracy"] = accuracy(synthetic.ACCURACY_SUITE)
    _print_accuracy(results["accuracy"], "the fixed-seed suite (tests.synthetic.ACCURACY_SUITE)")
    results["accuracy_holdout"] = accuracy(synthetic.HOLDOUT_SUITE)
    _print_accuracy(
        results["accuracy_holdout"],
        "held-out seeds, never tuned on (tests.synthetic.HOLDOUT_SUITE)",
    )
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the memory runs")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="cv2.setNumThreads (1 = one core, the target; 0 = OpenCV's default)",
    )
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is kept)")
    args = parser.parse_args()
    run(quick=args.quick, threads=args.threads, repeats=args.repeats)


if __name__ == "__main__":
    main()
