"""The distributed mode (TASK_BACKEND=rq): throughput with 1, 2 and 4 RQ workers, and the API's
status latency while the workers are busy.

Everything runs on this machine as `make run-cluster` runs it (`local_cluster.py`): a real
redis-server, SeaweedFS's S3 server, workers started with the Procfile's worker line, and the API
with its web line.

- **Throughput**: for each worker count n, 2n copies of a 720p clip are uploaded at once and
  followed to `completed`; videos per minute and the aggregate real-time factor (video seconds
  per wall second) come from the first upload's start to the last completion.
- **Latency**: with 2 workers analysing long clips (a keeper re-uploads one that finishes, so
  they stay busy), `clients` raw keep-alive clients poll `status` and `results` every 0.1 s. The
  API process no longer shares its GIL or its cores' priority with an analysis: target status
  p99 ≤ 5 ms with 10 pollers.

    python -m bench --only distributed                   # full: 1/2/4 workers, 5-min clips, 60 s
    python -m bench.distributed --quick                  # smoke: 1/2 workers, 15 s clips, 5 s
    python -m bench.distributed --minutes 1 --duration 30   # 1-minute clips, 30 s of polling
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from bench import videos
from bench.api import _measure, _with_cpu
from bench.server import Server, upload, wait_done
from bench.throughput import video_seconds
from local_cluster import Cluster

API = "/api/v1/video"
STATUS_TARGET_MS = 5.0


@contextmanager
def cluster(workers: int) -> Iterator[Server]:
    """Redis, the S3 server, `workers` RQ workers and one API process; yields the API."""
    with tempfile.TemporaryDirectory(prefix="bench-cluster-") as folder:
        servers = Cluster(Path(folder), workers=workers)
        try:
            servers.start()
            env = servers.env(Path(folder) / "api", MAX_UPLOAD_MB="4096", MAX_QUEUED="1000")
            with Server(env=env) as api:
                yield api
        finally:
            servers.stop()


def _upload_into(sessions: list[str], http: httpx.Client, clip: Path) -> None:
    sessions.append(upload(http, clip, "full"))


def throughput(workers: tuple[int, ...], minutes: float, size: tuple[int, int]) -> list[dict]:
    """Videos per minute and aggregate real-time factor for each worker count."""
    clip = videos.workout_video(minutes, size)
    seconds = video_seconds(clip)
    rows = []
    for n in workers:
        copies = 2 * n
        with cluster(n) as api, httpx.Client(base_url=api.url, timeout=600) as http:
            sessions: list[str] = []
            began = time.monotonic()
            threads = [
                threading.Thread(target=_upload_into, args=(sessions, http, clip))
                for _ in range(copies)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            uploaded = time.monotonic() - began
            ends = [wait_done(http, s, timeout=3600, poll=0.25) for s in sessions]
            elapsed = time.monotonic() - began
            if any(end["status"] != "completed" for end in ends):
                raise RuntimeError(f"{n} worker(s): not every analysis completed: {ends}")
        rows.append(
            {
                "workers": n,
                "videos": copies,
                "video": clip.name,
                "video_s": round(seconds, 1),
                "upload_s": round(uploaded, 2),
                "end_to_end_s": round(elapsed, 2),
                "videos_per_minute": round(60 * copies / elapsed, 2),
                "realtime_factor": round(copies * seconds / elapsed, 1),
            }
        )
    return rows


def latency(seconds: float, clients: int, load_minutes: float) -> dict[str, Any]:
    """Status and results latency through the API while 2 workers analyse long clips."""
    load_video = videos.workout_video(load_minutes)
    results_video = videos.workout_video(0.25, (640, 360))
    with cluster(2) as api, httpx.Client(base_url=api.url, timeout=600) as http:
        done = upload(http, results_video, "full")
        if wait_done(http, done, timeout=600)["status"] != "completed":
            raise RuntimeError("the results session did not complete")
        load = [upload(http, load_video, "full") for _ in range(2)]
        deadline = time.monotonic() + 120
        while any(http.get(f"{API}/status/{s}").json()["status"] != "processing" for s in load):
            if time.monotonic() > deadline:
                raise RuntimeError("the load sessions did not start processing")
            time.sleep(0.2)
        measure = _measure(api.port, load, done, seconds, clients, 0.1, None, load, load_video)
        report = _with_cpu(api, measure)
    report["clients"] = clients
    report["load_video"] = load_video.name
    report["target_ms"] = f"status p99 <= {STATUS_TARGET_MS:g}"
    return report


def run(
    quick: bool = False, duration: float | None = None, clients: int = 10, minutes: float = 5
) -> dict[str, Any]:
    """Both measurements; `quick` is a smoke run of a minute or two; `minutes` is the length of
    the throughput clips (the latency's load clips are twice as long)."""
    if quick:
        rows = throughput((1, 2), 0.25, (640, 360))
        lat = latency(duration or 5.0, clients, load_minutes=1)
    else:
        rows = throughput((1, 2, 4), minutes, videos.SIZE_720P)
        lat = latency(duration or 60.0, clients, load_minutes=2 * minutes)
    return {"throughput": rows, "latency": lat}


def table(results: dict[str, Any]) -> str:
    """The markdown tables of `run`'s figures."""
    out = [
        "**Distributed** (RQ workers, Redis, S3 on this machine): throughput",
        "",
        "| workers | videos at once | video | end to end s | videos/min | aggregate RTF |",
        "|---|---|---|---|---|---|",
    ]
    for r in results["throughput"]:
        out.append(
            f"| {r['workers']} | {r['videos']} | {r['video']} ({r['video_s']} s) | "
            f"{r['end_to_end_s']} | {r['videos_per_minute']} | {r['realtime_factor']} |"
        )
    lat = results["latency"]
    status, res = lat["status"], lat["results"]
    out += [
        "",
        f"API latency (ms) with {lat['clients']} pollers while 2 workers analyse "
        f"{lat['load_video']} (both busy {lat.get('both_workers_busy', 0):.0%} of the time; API "
        f"process {lat['server_cpu_cores']} cores, {lat['loop_cpu_ms_per_request']} ms of loop "
        f"CPU per request):",
        "",
        "| request | p50 | p95 | p99 | max | n | target |",
        "|---|---|---|---|---|---|---|",
        f"| status | {status['p50']} | {status['p95']} | {status['p99']} | {status['max']} | "
        f"{status['n']} | p99 ≤ {STATUS_TARGET_MS:g} |",
        f"| results | {res['p50']} | {res['p95']} | {res['p99']} | {res['max']} | {res['n']} | |",
    ]
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run (1-2 minutes)")
    parser.add_argument("--duration", type=float, help="latency window, s")
    parser.add_argument("--clients", type=int, default=10, help="concurrent pollers (10)")
    parser.add_argument("--minutes", type=float, default=5, help="throughput clip length (5)")
    parser.add_argument("--out", type=Path, help="also write the figures here (JSON)")
    args = parser.parse_args()
    results = run(args.quick, args.duration, args.clients, args.minutes)
    print(table(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
