"""Server benchmarks: latency under load, and the leak check, against the real uvicorn process.

Latency under load: both workers analyse long videos (a keeper re-uploads one if it finishes, so
they stay busy), while `clients` asynchronous clients poll `status` (of a processing session) and
`results` (of a completed one) for `duration` seconds and, on the side, 20 MB uploads are timed one
after another (each cleaned up at once, so none pile up in the queue). The same polling runs for a
few seconds first with idle workers, to show what the load costs.

Leak check: `cycles` of upload → complete → results → thumbnail → cleanup; the server's RSS, open
descriptors, threads and files under STORAGE_DIR are read from /proc every `every` cycles.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from bench import videos
from bench.http import Connection
from bench.server import Server, schedstat, upload, wait_done

API = "/api/v1/video"
TARGETS_MS = {"status": ("p99", 10.0), "results": ("p99", 20.0), "upload": ("p95", 150.0)}


def summarize(samples: list[float]) -> dict[str, Any]:
    """p50/p95/p99/max (ms) of latencies given in seconds."""
    if not samples:
        return {"n": 0}
    ms = np.asarray(samples) * 1000.0
    return {
        "n": int(ms.size),
        "p50": round(float(np.percentile(ms, 50)), 2),
        "p95": round(float(np.percentile(ms, 95)), 2),
        "p99": round(float(np.percentile(ms, 99)), 2),
        "max": round(float(ms.max()), 2),
    }


# -- latency under load ---------------------------------------------------------------------------


async def _poll(
    conn: Connection,
    status_of: list[str],
    results_id: str,
    until: float,
    interval: float,
    out: dict[str, list[float]],
    errors: list[str],
) -> None:
    # Start at a random phase so the clients do not poll in lockstep.
    await asyncio.sleep(random.uniform(0, interval))
    while time.monotonic() < until:
        for name, url in (
            # status_of[0], read each time: the keeper may have replaced that session.
            ("status", f"{API}/status/{status_of[0]}"),
            ("results", f"{API}/results/{results_id}"),
        ):
            began = time.perf_counter()
            code, _ = await conn.request("GET", url)
            elapsed = time.perf_counter() - began
            if code == 200:
                out[name].append(elapsed)
            else:
                errors.append(f"{name} {code}")
        await asyncio.sleep(interval)


async def _uploads(
    conn: Connection, path: Path, until: float, gap: float, out: list[float]
) -> None:
    """Time uploads one after another; each session is cleaned up right away."""
    while time.monotonic() < until:
        began = time.perf_counter()
        code, body = await conn.upload(f"{API}/upload", path, {"analysis_type": "highlights"})
        elapsed = time.perf_counter() - began
        if code != 202:
            raise RuntimeError(f"upload answered {code}: {body[:200]!r}")
        out.append(elapsed)
        await conn.request("DELETE", f"{API}/cleanup/{json.loads(body)['sessionId']}")
        await asyncio.sleep(gap)


async def _keep_busy(
    conn: Connection, load: list[str], video: Path, until: float, log: dict[str, Any]
) -> None:
    """Sample how many load sessions are processing; replace one that has finished."""
    while time.monotonic() < until:
        busy = 0
        for i, session_id in enumerate(load):
            _, body = await conn.request("GET", f"{API}/status/{session_id}")
            status = json.loads(body)["status"]
            if status == "processing":
                busy += 1
            elif status != "queued":
                # Replace first, clean up after: the pollers never see a session go missing.
                _, body = await conn.upload(f"{API}/upload", video, {"analysis_type": "full"})
                load[i] = json.loads(body)["sessionId"]
                await conn.request("DELETE", f"{API}/cleanup/{session_id}")
                log["reuploads"] += 1
        log["samples"] += 1
        log["both_busy"] += busy == len(load)
        await asyncio.sleep(1.0)


async def _measure(
    port: int,
    status_of: list[str],
    results_id: str,
    seconds: float,
    clients: int,
    interval: float,
    upload_file: Path | None = None,
    load: list[str] | None = None,
    load_video: Path | None = None,
) -> dict[str, Any]:
    conns = [Connection("127.0.0.1", port) for _ in range(clients + 2)]
    out: dict[str, list[float]] = {"status": [], "results": []}
    uploads: list[float] = []
    errors: list[str] = []
    busy = {"samples": 0, "both_busy": 0, "reuploads": 0}
    until = time.monotonic() + seconds
    jobs = [
        _poll(conns[i], status_of, results_id, until, interval, out, errors) for i in range(clients)
    ]
    if upload_file is not None:
        jobs.append(_uploads(conns[-2], upload_file, until, 1.0, uploads))
    if load is not None and load_video is not None:
        jobs.append(_keep_busy(conns[-1], load, load_video, until, busy))
    began = time.monotonic()
    try:
        await asyncio.gather(*jobs)
    finally:
        for conn in conns:
            await conn.close()
    wall = time.monotonic() - began
    report: dict[str, Any] = {
        "seconds": round(wall, 1),
        "requests_per_s": round((len(out["status"]) + len(out["results"])) / wall, 1),
        "status": summarize(out["status"]),
        "results": summarize(out["results"]),
        "errors": len(errors),
    }
    if upload_file is not None:
        report["upload"] = summarize(uploads)
    if load is not None:
        report["both_workers_busy"] = round(busy["both_busy"] / max(1, busy["samples"]), 2)
        report["load_reuploads"] = busy["reuploads"]
    return report


def _with_cpu(server: Server, measurement: Any) -> dict[str, Any]:
    """Run a `_measure` coroutine and add how busy the server's threads were meanwhile."""
    me = (os.getpid(), threading.get_native_id())
    cpu0, threads0, t0 = server.cpu_seconds(), server.thread_cpu(), time.monotonic()
    (_, loop_wait0), (_, client_wait0) = server.loop_schedstat(), schedstat(*me)
    report: dict[str, Any] = asyncio.run(measurement)
    wall = time.monotonic() - t0
    # The share of the time the server's loop and this client's loop were ready to run but had
    # no CPU: latency that comes from the machine being busy, not from the server's code.
    report["loop_waiting_for_cpu"] = round((server.loop_schedstat()[1] - loop_wait0) / wall, 3)
    report["client_waiting_for_cpu"] = round((schedstat(*me)[1] - client_wait0) / wall, 3)
    report["server_cpu_cores"] = round((server.cpu_seconds() - cpu0) / wall, 2)
    # 1.0 = a whole core. The loop's CPU per request is the figure that other processes on a
    # shared machine cannot inflate (they delay it, they do not make it use more CPU).
    report["thread_cpu_cores"] = {
        kind: round((seconds - threads0[kind]) / wall, 2)
        for kind, seconds in server.thread_cpu().items()
    }
    requests = report["status"]["n"] + report["results"]["n"]
    report["loop_cpu_ms_per_request"] = round(
        1000 * (server.thread_cpu()["loop"] - threads0["loop"]) / max(1, requests), 2
    )
    return report


def latency(
    seconds: float = 60.0,
    clients: int = 20,
    interval: float = 0.1,
    load_minutes: float = 10,
    results_minutes: float = 5,
) -> dict[str, Any]:
    """Latency of status, results and a 20 MB upload, idle and with both workers busy.

    Args:
        seconds: how long the loaded measurement runs.
        clients: concurrent pollers; each asks for status then results, then waits `interval`.
        load_minutes: length of the videos that keep the two workers busy.
        results_minutes: length of the video whose (completed) results are polled.
    """
    upload_file = videos.upload_video(20)
    load_video = videos.workout_video(load_minutes)
    results_video = videos.workout_video(results_minutes)
    with Server(max_workers=2) as server, httpx.Client(base_url=server.url, timeout=600) as http:
        done = upload(http, results_video, "full")
        if wait_done(http, done, timeout=1200)["status"] != "completed":
            raise RuntimeError("the results session did not complete")
        results_bytes = len(http.get(f"{API}/results/{done}").content)
        idle = _with_cpu(
            server,
            _measure(
                server.port, [done], done, min(10.0, seconds / 2), clients, interval, upload_file
            ),
        )
        load = [upload(http, load_video, "full") for _ in range(2)]
        deadline = time.monotonic() + 60
        while any(http.get(f"{API}/status/{s}").json()["status"] != "processing" for s in load):
            if time.monotonic() > deadline:
                raise RuntimeError("the load sessions did not start processing")
            time.sleep(0.2)
        loaded = _with_cpu(
            server,
            _measure(
                server.port,
                load,
                done,
                seconds,
                clients,
                interval,
                upload_file,
                load,
                load_video,
            ),
        )
        # The load sessions are left running: leaving the `with` sends SIGTERM while both
        # workers are busy, and `server_stop_seconds` is how long the shutdown took.
        busy_at_stop = http.get("/health").json()["running"]
    return {
        "clients": clients,
        "poll_interval_s": interval,
        "upload_mb": round(upload_file.stat().st_size / 1e6, 1),
        "results_bytes": results_bytes,
        "load_video": load_video.name,
        "idle": idle,
        "loaded": loaded,
        "targets_ms": {k: f"{q} <= {v:g}" for k, (q, v) in TARGETS_MS.items()},
        "analyses_running_at_sigterm": busy_at_stop,
        "server_stop_seconds": round(server.stop_seconds or 0, 2),
        "server_exit_code": server.exit_code,
    }


# -- leak check -----------------------------------------------------------------------------------


def leak(cycles: int = 50, every: int = 10) -> dict[str, Any]:
    """`cycles` of upload → complete → results → thumbnail → cleanup, resources every `every`."""
    clip = videos.workout_video(0.25, (640, 360))
    rows = []
    with Server(max_workers=2) as server, httpx.Client(base_url=server.url, timeout=120) as http:
        rows.append({"cycle": 0, **server.resources()})
        began = time.monotonic()
        for cycle in range(1, cycles + 1):
            session_id = upload(http, clip, "full")
            info = wait_done(http, session_id, timeout=120, poll=0.05)
            if info["status"] != "completed":
                raise RuntimeError(f"cycle {cycle}: session {info['status']}: {info.get('error')}")
            data = http.get(f"{API}/results/{session_id}").json()["data"]
            thumbs = [h["thumbnail_url"] for h in data.get("highlights", []) if h["thumbnail_url"]]
            if thumbs:
                http.get(thumbs[0]).raise_for_status()
            http.delete(f"{API}/cleanup/{session_id}").raise_for_status()
            if cycle % every == 0:
                rows.append({"cycle": cycle, **server.resources()})
        seconds = time.monotonic() - began
    start, warm, last = rows[0], rows[1] if len(rows) > 2 else rows[0], rows[-1]
    return {
        "clip": clip.name,
        "cycles": cycles,
        "seconds": round(seconds, 1),
        "rows": rows,
        "rss_growth_after_warmup_mb": round(last["rss_mb"] - warm["rss_mb"], 1),
        "fds_vs_start": last["fds"] - start["fds"],
        "fds_vs_warmup": last["fds"] - warm["fds"],
        # Worker threads (analysis pool, AnyIO) start lazily: compare after the warm-up.
        "threads_vs_warmup": last["threads"] - warm["threads"],
        "storage_files_left": last["storage_files"],
    }
