"""Benchmark of the analysis engine alone (not a test): its speed against what it must pay anyway
(decoding and the pose model), and its memory (issues 9 and 10).

    .venv/bin/python -m bench.engine              # everything (~25 min; first run makes clips)
    .venv/bin/python -m bench.engine --quick      # speed only, on the 720p people clip
    .venv/bin/python -m bench.engine --repeats 3  # best of 3 instead of 2

What it measures, on `people_720p.mp4` (203 s, 1280x720, 30 fps: rendered people doing sets,
`tests.people.long_workout`), at the default options (10 samples a second, pose on, lite model):
- decode only: `open_video` + `SampledFrames`, i.e. every frame the analysis needs decoded (all
  but the H.264 frames neither sampled nor referred to) and the sampled ones converted, in the
  engine's decoding thread: the floor of any analysis.
- pose alone: `PoseEstimator.process` on exactly the frames the workout analysis estimated, in the
  same order (so tracking and detection do the same work), timed call by call with nothing else
  running. "decode + pose" (the two added up) is the baseline the engine is judged against.
- workout, highlights, full: wall and CPU time, x real time, the ratio to decode + pose (issue 9:
  workout >= 10x real time and <= 1.3 x decode + pose; highlights must not pay for pose), the
  pose estimates made, ms per estimate and pose ms per sampled frame.
- memory (not with --quick): peak RSS (`ru_maxrss`) of a fresh process analysing ("full") a
  1-minute and a 10-minute 720p clip, which must be flat in the length, and a 60-minute clip at
  `sample_fps=30` (issue 10: under 600 MB). The 1- and 10-minute clips are the people clip cut or
  looped (packets copied, not re-encoded); the 60-minute one is the same workout rendered at
  320x180 and looped, so that it runs in minutes (the analysis works on 256-pixel frames and a
  crop around the athlete, so resolution changes the decoding cost, not what is kept per sample).

The machine is shared: every figure is the best of `--repeats` runs, CPU time (all threads) is
given beside wall time, and the load average is recorded with each. Models are loaded before the
timed runs (a worker keeps its estimator between analyses). Clips are made once into
`bench/.cache/`. Results are printed as tables and written to `bench/engine_results.json`. The
accuracy of the pose analysis per scenario is scored elsewhere (`tests/people_scoring.py`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import av  # noqa: E402
import numpy as np  # noqa: E402

from analysis import tracking  # noqa: E402
from analysis.options import AnalysisOptions  # noqa: E402
from analysis.video import SampledFrames, open_video  # noqa: E402
from railway_video_generator import RailwayVideoGenerator  # noqa: E402

CACHE = Path(__file__).resolve().parent / ".cache"
RESULTS = Path(__file__).resolve().parent / "engine_results.json"
CLIP = CACHE / "people_720p.mp4"
ANALYSES = ("workout", "highlights", "full")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


def _people_clip(path: Path, size: tuple[int, int]) -> Path:
    """`tests.people.long_workout` at `size`, made on first use (written aside, then renamed)."""
    if not path.exists():
        from tests import people

        print(f"rendering {path.name} (a few minutes) ...", flush=True)
        CACHE.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.mp4")
        people.long_workout(tmp, size=size)
        os.replace(tmp, path)
    return path


def _looped(source: Path, seconds: float, name: str) -> Path:
    """`source` repeated (packets copied, timestamps shifted) or cut, up to the first keyframe at
    or after `seconds`: a clip of that length in minutes, whatever the source's."""
    path = CACHE / name
    if path.exists():
        return path
    print(f"making {name} ...", flush=True)
    with av.open(str(source)) as probe:
        stream = probe.streams.video[0]
        end = max(
            (p.pts or 0) + (p.duration or 0) for p in probe.demux(stream) if p.pts is not None
        )
        time_base = stream.time_base
    assert time_base is not None
    limit = round(seconds / time_base)
    tmp = path.with_suffix(".tmp.mp4")
    with av.open(str(tmp), "w") as out:
        offset = 0
        out_stream = None
        while True:
            with av.open(str(source)) as src:
                stream = src.streams.video[0]
                if out_stream is None:
                    out_stream = out.add_stream_from_template(stream)
                for packet in src.demux(stream):
                    if packet.dts is None:  # the demuxer's end-of-stream flush packet
                        continue
                    if packet.is_keyframe and (packet.pts or 0) + offset >= limit:
                        break
                    packet.pts = (packet.pts or 0) + offset
                    packet.dts += offset
                    packet.stream = out_stream
                    out.mux(packet)
                else:
                    offset += end
                    continue
                break
    os.replace(tmp, path)
    return path


def _timed(work: Callable[[], Any]) -> tuple[dict[str, float], Any]:
    load = _load()
    wall, cpu = time.perf_counter(), time.process_time()
    out = work()
    figures = {
        "wall_s": round(time.perf_counter() - wall, 2),
        "cpu_s": round(time.process_time() - cpu, 2),
        "load": load,
    }
    return figures, out


def _best(runs: list[dict[str, float]]) -> dict[str, Any]:
    best = min(runs, key=lambda r: r["wall_s"])
    return {**best, "runs": runs}


def decode_only(path: Path, options: AnalysisOptions) -> int:
    """Decode every frame and convert the sampled ones, as the engine's decoding thread does."""
    samples = 0
    with open_video(path, options.decoder) as stream:
        for _ in SampledFrames(stream, 1.0 / options.sample_fps):
            samples += 1
    return samples


def _recording_estimates(options: AnalysisOptions) -> tuple[list[float], Callable[[], None]]:
    """Record the times of the pose estimates the next analysis in this thread makes.

    The engine keeps one estimator per thread (`analysis.tracking`); its `process` is wrapped on
    the instance. Returns the list being filled and the function that unwraps it."""
    estimator = tracking._estimator(options)
    times: list[float] = []
    original = estimator.process

    def process(frame: Any, t: float | None = None) -> Any:
        times.append(float(t) if t is not None else float("nan"))
        return original(frame, t)

    estimator.process = process
    return times, lambda: delattr(estimator, "process")


def pose_alone(path: Path, times: list[float], options: AnalysisOptions) -> dict[str, Any]:
    """Time `PoseEstimator.process` on the frames at `times` (the engine's estimates), in order.

    Frames are decoded in batches with nothing timed, then the calls are timed one by one with
    nothing else running (wall, and CPU of all threads: the interpreter may use several)."""
    estimator = tracking._estimator(options)  # this thread's, reset, as an analysis gets it
    wall = cpu = 0.0
    load = _load()
    with open_video(path, options.decoder) as stream:
        fps = stream.fps
        wanted = [round(t * fps) for t in times]
        index, position = 0, 0
        frame: np.ndarray | None = stream.first_frame
        while position < len(wanted):
            batch: list[tuple[float, Any]] = []
            while position < len(wanted) and len(batch) < 32:
                while index < wanted[position]:
                    if not stream.grab():
                        raise RuntimeError(f"the clip ends before frame {wanted[position]}")
                    index += 1
                    frame = None
                if frame is None:
                    frame = stream.retrieve()
                batch.append((times[position], frame))
                position += 1
            for t, image in batch:
                began, began_cpu = time.perf_counter(), time.process_time()
                estimator.process(image, t)
                wall += time.perf_counter() - began
                cpu += time.process_time() - began_cpu
    return {"estimates": len(times), "wall_s": round(wall, 2), "cpu_s": round(cpu, 2), "load": load}


def speed(path: Path, repeats: int) -> dict[str, Any]:
    """Decode only, pose alone and the three analyses on the same clip, interleaved."""
    options = AnalysisOptions()
    engine = RailwayVideoGenerator(options)
    # Warm up: load the models and the runtime (a worker keeps them between analyses).
    warm, _ = _timed(lambda: engine.analyze(path, "workout"))
    decode_runs: list[dict[str, float]] = []
    pose_runs: list[dict[str, Any]] = []
    runs: dict[str, list[dict[str, Any]]] = {kind: [] for kind in ANALYSES}
    samples, estimates, duration = 0, 0, 0.0
    for _ in range(repeats):
        figures, samples = _timed(lambda: decode_only(path, options))
        decode_runs.append(figures)
        for kind in ANALYSES:
            times: list[float] = []
            unwrap: Callable[[], None] = lambda: None  # noqa: E731
            if kind != "highlights":
                times, unwrap = _recording_estimates(options)
            try:
                figures, result = _timed(partial(engine.analyze, path, kind))
            finally:
                unwrap()
            figures["pose_estimates"] = len(times)
            runs[kind].append(figures)
            duration = result.video.duration
            if kind == "workout":
                estimates = len(times)
                pose_runs.append(pose_alone(path, times, options))
    decode = _best(decode_runs)
    pose = _best(pose_runs)
    baseline = decode["wall_s"] + pose["wall_s"]
    baseline_cpu = decode["cpu_s"] + pose["cpu_s"]
    analyses = {}
    for kind in ANALYSES:
        best = _best(runs[kind])
        best["x_realtime"] = round(duration / best["wall_s"], 2)
        best["vs_decode_plus_pose"] = round(best["wall_s"] / baseline, 2)
        best["cpu_vs_decode_plus_pose"] = round(best["cpu_s"] / baseline_cpu, 2)
        best["vs_decode"] = round(best["wall_s"] / decode["wall_s"], 2)
        analyses[kind] = best
    return {
        "clip": path.name,
        "seconds_of_video": round(duration, 1),
        "samples": samples,
        "warm_up": warm,
        "decode": {**decode, "x_realtime": round(duration / decode["wall_s"], 2)},
        "pose_alone": {
            **pose,
            "ms_per_estimate": round(1000 * pose["wall_s"] / max(estimates, 1), 2),
            "cpu_ms_per_estimate": round(1000 * pose["cpu_s"] / max(estimates, 1), 2),
            "ms_per_sample": round(1000 * pose["wall_s"] / max(samples, 1), 2),
        },
        "decode_plus_pose": {"wall_s": round(baseline, 2), "cpu_s": round(baseline_cpu, 2)},
        "analyses": analyses,
    }


_MEMORY_PROBE = """
import resource, sys, time
sys.path.insert(0, sys.argv[4])
from railway_video_generator import AnalysisOptions, RailwayVideoGenerator
began = time.perf_counter()
result = RailwayVideoGenerator(AnalysisOptions(sample_fps=float(sys.argv[3]))).analyze(
    sys.argv[1], sys.argv[2]
)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter() - began,
      result.video.duration)
"""


def peak_memory(path: Path, kind: str, sample_fps: float) -> dict[str, Any]:
    """Peak RSS of a fresh interpreter that analyses `path`, with its wall time."""
    load = _load()
    out = subprocess.run(
        [sys.executable, "-c", _MEMORY_PROBE, str(path), kind, str(sample_fps), str(ROOT)],
        check=True,
        capture_output=True,
        text=True,
    )
    rss_kb, wall, duration = out.stdout.strip().splitlines()[-1].split()
    return {
        "clip": path.name,
        "minutes": round(float(duration) / 60, 1),
        "analysis": kind,
        "sample_fps": sample_fps,
        "peak_mb": round(int(rss_kb) / 1024, 1),
        "wall_s": round(float(wall), 1),
        "load": load,
    }


def memory() -> list[dict[str, Any]]:
    small = _people_clip(CACHE / "people_180p.mp4", (320, 180))
    return [
        peak_memory(_looped(CLIP, 60, "people_720p_1min.mp4"), "full", 10.0),
        peak_memory(_looped(CLIP, 600, "people_720p_10min.mp4"), "full", 10.0),
        peak_memory(_looped(small, 3600, "people_180p_60min.mp4"), "full", 30.0),
    ]


def _print_speed(s: dict[str, Any]) -> None:
    d, p, base = s["decode"], s["pose_alone"], s["decode_plus_pose"]
    print(
        f"\nSpeed on {s['clip']} ({s['seconds_of_video']} s of video, {s['samples']} samples; "
        "best wall of the runs, CPU = all threads)"
    )
    print("| what | wall s | CPU s | x real time | / (decode + pose) | pose estimates | load |")
    print("|---|---|---|---|---|---|---|")
    print(f"| decode only | {d['wall_s']} | {d['cpu_s']} | {d['x_realtime']} | | | {d['load']} |")
    print(f"| pose alone | {p['wall_s']} | {p['cpu_s']} | | | {p['estimates']} | {p['load']} |")
    print(f"| decode + pose | {base['wall_s']} | {base['cpu_s']} | | 1.0 | | |")
    for kind, a in s["analyses"].items():
        print(
            f"| **{kind}** | {a['wall_s']} | {a['cpu_s']} | {a['x_realtime']} | "
            f"{a['vs_decode_plus_pose']} (CPU {a['cpu_vs_decode_plus_pose']}) | "
            f"{a['pose_estimates']} | {a['load']} |"
        )
    print(
        f"\nPose: {p['ms_per_estimate']} ms per estimate ({p['cpu_ms_per_estimate']} ms CPU), "
        f"{p['ms_per_sample']} ms per sampled frame."
    )


def _print_memory(rows: list[dict[str, Any]]) -> None:
    print("\nPeak memory of a fresh process")
    print("| clip | minutes | analysis | sample fps | peak RSS | wall s | load |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['clip']} | {r['minutes']} | {r['analysis']} | {r['sample_fps']:g} | "
            f"{r['peak_mb']} MB | {r['wall_s']} | {r['load']} |"
        )


def run(quick: bool = False, repeats: int = 2) -> dict[str, Any]:
    """Run the benchmark, print its tables, write `bench/engine_results.json`, return figures."""
    results: dict[str, Any] = {
        "cpu_count": len(os.sched_getaffinity(0)),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    results["speed"] = speed(_people_clip(CLIP, (1280, 720)), repeats)
    _print_speed(results["speed"])
    if not quick:
        results["memory"] = memory()
        _print_memory(results["memory"])
    results["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="speed only (no memory runs)")
    parser.add_argument("--repeats", type=int, default=2, help="timing repeats (best is kept)")
    args = parser.parse_args()
    run(quick=args.quick, repeats=args.repeats)


if __name__ == "__main__":
    main()
