"""Throughput: how fast videos are analysed, in-process and through the API, with 1 and 2 workers,
side by side with PySceneDetect's `ContentDetector` on the same files.

In-process (like for like): our `RailwayVideoGenerator().analyze(path, "full")` and
`scenedetect.detect(path, ContentDetector())` run one after the other in this process on the same
file; wall time and CPU time (all threads) of each. CPU time is the steadier figure on a shared
machine.

Through the API (end to end): MAX_WORKERS=1 analyses one video (upload → completed); MAX_WORKERS=2
analyses two copies at once. The real-time factor is video seconds per second of processing; the
2-worker speedup is 2 × (one video's time) / (two videos' time): 2.0 means both cores fully used.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import httpx

from bench import videos
from bench.server import Server, upload, wait_done


def video_seconds(path: Path) -> float:
    """Duration by decoding the container's metadata (count / fps)."""
    capture = cv2.VideoCapture(str(path))
    try:
        return float(capture.get(cv2.CAP_PROP_FRAME_COUNT) / capture.get(cv2.CAP_PROP_FPS))
    finally:
        capture.release()


def _warm_page_cache(path: Path) -> None:
    # Whichever tool read a 1 GB file first would otherwise also pay for the disk.
    with path.open("rb") as file:
        while file.read(8 << 20):
            pass


def _timed(fn: Any) -> tuple[float, float, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    value = fn()
    return time.perf_counter() - wall, time.process_time() - cpu, value


def in_process(path: Path, repeat: int = 1) -> dict[str, Any]:
    """Our full analysis and scenedetect's ContentDetector on `path`, in this process, alternated;
    the fastest of `repeat` runs of each."""
    from scenedetect import ContentDetector, detect

    from railway_video_generator import RailwayVideoGenerator

    engine = RailwayVideoGenerator()
    # One untimed run of each on a short clip first: the first call in a process pays for lazy
    # imports and initialisation, and whichever tool went first would carry that.
    warm_up = videos.workout_video(0.25, (640, 360))
    engine.analyze(warm_up, "full")
    detect(str(warm_up), ContentDetector())
    _warm_page_cache(path)
    ours, theirs = [], []
    for _ in range(repeat):
        wall, cpu, result = _timed(lambda: engine.analyze(path, "full"))
        ours.append((wall, cpu))
        wall, cpu, scenes = _timed(lambda: detect(str(path), ContentDetector()))
        theirs.append((wall, cpu))
    (o_wall, o_cpu), (s_wall, s_cpu) = min(ours), min(theirs)
    return {
        "ours_s": round(o_wall, 2),
        "ours_cpu_s": round(o_cpu, 2),
        "scenedetect_s": round(s_wall, 2),
        "scenedetect_cpu_s": round(s_cpu, 2),
        # Above 1.0: FFmpeg's decoder threads spread one analysis over several cores.
        "ours_cores": round(o_cpu / o_wall, 2),
        "scenedetect_cores": round(s_cpu / s_wall, 2),
        "ratio_wall": round(o_wall / s_wall, 2),
        "ratio_cpu": round(o_cpu / s_cpu, 2),
        "reps_found": result.workout.total_reps if result.workout else None,
        "scenes_found": len(scenes),
    }


def _through_api(server: Server, path: Path, copies: int) -> dict[str, Any]:
    """Upload `copies` of `path` at once, wait for all; times from the first upload's start."""
    sessions: list[str] = []
    with httpx.Client(base_url=server.url, timeout=600) as http:
        cpu0 = server.cpu_seconds()
        began = time.monotonic()
        # Concurrent uploads, so the two analyses start together.
        threads = [
            threading.Thread(target=lambda: sessions.append(upload(http, path, "full")))
            for _ in range(copies)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        uploaded = time.monotonic() - began
        infos = [wait_done(http, s, timeout=3600, poll=0.25) for s in sessions]
        elapsed = time.monotonic() - began
        cpu = server.cpu_seconds() - cpu0
        processing = []
        for session_id, info in zip(sessions, infos, strict=True):
            if info["status"] != "completed":
                raise RuntimeError(f"{path.name}: {info['status']} {info.get('error', '')}")
            data = http.get(f"/api/v1/video/results/{session_id}").json()["data"]
            processing.append(data["processing_time"])
            http.delete(f"/api/v1/video/cleanup/{session_id}")
    return {
        "end_to_end_s": round(elapsed, 2),
        "upload_s": round(uploaded, 2),
        "analysis_s": round(elapsed - uploaded, 2),
        "engine_processing_s": [round(p, 2) for p in processing],
        "server_cpu_cores": round(cpu / elapsed, 2),
    }


def throughput(minutes: tuple[float, ...] = (1, 5, 10), repeat: int = 1) -> list[dict[str, Any]]:
    """Every measurement above for each 720p video length in `minutes`."""
    rows = []
    paths = [videos.workout_video(m) for m in minutes]
    for path in paths:
        seconds = video_seconds(path)
        rows.append(
            {
                "video": path.name,
                "video_s": round(seconds, 1),
                "size_mb": round(path.stat().st_size / 1e6, 1),
                "in_process": in_process(path, repeat),
            }
        )
    for workers, copies in ((1, 1), (2, 2)):
        with Server(max_workers=workers) as server:
            for path, row in zip(paths, rows, strict=True):
                api = _through_api(server, path, copies)
                api["realtime_factor"] = round(copies * row["video_s"] / api["end_to_end_s"], 1)
                row[f"api_{workers}w"] = api
    for row in rows:
        one, two = row["api_1w"], row["api_2w"]
        # Uploads are not what the workers parallelise: compare the analysis windows.
        row["speedup_2w"] = round(2 * one["analysis_s"] / two["analysis_s"], 2)
        row["in_process"]["realtime_factor"] = round(
            row["video_s"] / row["in_process"]["ours_s"], 1
        )
    return rows
