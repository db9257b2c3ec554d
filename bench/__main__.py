"""`make bench` (`python -m bench`): every benchmark in sequence, a markdown table, and
`bench/results.json` with every figure and the machine it ran on.

    python -m bench                 # the full run (~15 min on 2 cores; generates videos once)
    python -m bench --quick         # a smoke run in under 2 minutes (1-minute video only,
                                    # no engine bench: `python -m bench.engine --quick`)
    python -m bench --only latency leak --duration 30
    python -m bench --table bench/results.json   # the table of an earlier run
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from bench import api, distributed, throughput, videos

# The engine bench goes last: it loads the pose models into this process.
SECTIONS = ("latency", "leak", "throughput", "distributed", "engine")
RESULTS = Path(__file__).resolve().parent / "results.json"


def machine() -> dict[str, Any]:
    import cv2
    import numpy

    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    try:
        import scenedetect

        sd_version = scenedetect.__version__
    except ImportError:
        sd_version = None
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        capture_output=True,
        text=True,
        cwd=Path(__file__).parent,
    ).stdout.strip()
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu": model,
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "python": platform.python_version(),
        "opencv": cv2.__version__,
        "opencv_threads": cv2.getNumThreads(),
        "numpy": numpy.__version__,
        "scenedetect": sd_version,
        "platform": platform.platform(),
        "commit": commit,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def run_engine(quick: bool) -> Any:
    """The analysis-engine bench (bench/engine.py, owned separately), when it is there."""
    try:
        engine = importlib.import_module("bench.engine")
    except ModuleNotFoundError:
        return {"skipped": "bench/engine.py is not there yet"}
    for name in ("run", "main"):
        entry = getattr(engine, name, None)
        if callable(entry):
            try:
                return entry(quick=quick)
            except TypeError:
                return entry()
    return {"skipped": "bench/engine.py has no run() or main() yet"}


# -- the table ------------------------------------------------------------------------------------


def _lat_row(name: str, figures: dict[str, Any], target: str) -> str:
    if not figures or not figures.get("n"):
        return f"| {name} | – | – | – | – | 0 | {target} |"
    f = figures
    return f"| {name} | {f['p50']} | {f['p95']} | {f['p99']} | {f['max']} | {f['n']} | {target} |"


def _engine_line(engine: dict[str, Any]) -> str:
    """One line from bench/engine.py's figures (its own tables are printed as it runs)."""
    try:
        speed = engine["speed"]
        decode, pose = speed["decode"], speed["pose_alone"]
        parts = [
            f"**Engine** (bench/engine.py, {speed['clip']}, {speed['seconds_of_video']} s): "
            f"decode only {decode['wall_s']} s ({decode['cpu_s']} s CPU), pose alone "
            f"{pose['wall_s']} s for {pose['estimates']} estimates ({pose['ms_per_estimate']} ms "
            "each)"
        ]
        for kind, a in speed["analyses"].items():
            parts.append(
                f"{kind} {a['wall_s']} s ({a['cpu_s']} s CPU, {a['x_realtime']}x real time, "
                f"x{a['vs_decode_plus_pose']} of decode + pose, load {a['load']})"
            )
        for row in engine.get("memory", []):
            parts.append(
                f"peak RSS {row['peak_mb']} MB for {row['clip']} ({row['minutes']} min, "
                f"{row['sample_fps']:g} samples/s)"
            )
        return "; ".join(parts) + "."
    except (KeyError, TypeError) as exc:  # their format may change; never lose the table
        return f"Engine: see bench/engine_results.json ({type(exc).__name__}: {exc})"


def table(results: dict[str, Any]) -> str:
    out: list[str] = []
    m = results["machine"]
    out.append(
        f"Machine: {m['nproc']} cores ({m['cpu']}), Python {m['python']}, OpenCV {m['opencv']}, "
        f"scenedetect {m['scenedetect']}; load average at start {m['load_average_at_start']}."
    )
    lat = results.get("latency")
    if isinstance(lat, dict) and "loaded" in lat:
        loaded, idle = lat["loaded"], lat["idle"]
        out += [
            "",
            f"**Latency under load** (ms): {lat['clients']} clients polling every "
            f"{lat['poll_interval_s']} s for {loaded['seconds']} s ({loaded['requests_per_s']} "
            f"req/s) while both workers analyse {lat['load_video']} (both busy "
            f"{loaded['both_workers_busy']:.0%} of the time, server used "
            f"{loaded['server_cpu_cores']} cores, its event loop "
            f"{loaded['thread_cpu_cores']['loop']}: {loaded['loop_cpu_ms_per_request']} ms of "
            f"loop CPU per request; the loop waited for a CPU "
            f"{loaded['loop_waiting_for_cpu']:.1%} of the time, this client's "
            f"{loaded['client_waiting_for_cpu']:.1%}); uploads of {lat['upload_mb']} MB one after "
            f"another; results payload {lat['results_bytes']} bytes.",
            "",
            "| request | p50 | p95 | p99 | max | n | target |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in ("status", "results", "upload"):
            q, v = api.TARGETS_MS[name]
            out.append(_lat_row(name, loaded.get(name, {}), f"{q} ≤ {v:g}"))
        for name in ("status", "results", "upload"):
            out.append(_lat_row(f"{name} (idle workers)", idle.get(name, {}), ""))
        out.append(
            f"\nSIGTERM with {lat['analyses_running_at_sigterm']} analyses running: the server "
            f"exited in {lat['server_stop_seconds']} s (exit status {lat['server_exit_code']})."
        )
    leak = results.get("leak")
    if isinstance(leak, dict) and "rows" in leak:
        out += [
            "",
            f"**Leak check**: {leak['cycles']} cycles of upload → complete → results → "
            f"thumbnail → cleanup ({leak['clip']}, {leak['seconds']} s).",
            "",
            "| after cycle | RSS MB | open fds | threads | files in STORAGE_DIR |",
            "|---|---|---|---|---|",
        ]
        for r in leak["rows"]:
            out.append(
                f"| {r['cycle']} | {r['rss_mb']} | {r['fds']} | {r['threads']} | "
                f"{r['storage_files']} |"
            )
        out.append(
            f"\nRSS growth after warm-up: {leak['rss_growth_after_warmup_mb']} MB (target ≤ 10); "
            f"open fds vs start {leak['fds_vs_start']:+d}, vs warm-up "
            f"{leak['fds_vs_warmup']:+d}; threads vs warm-up {leak['threads_vs_warmup']:+d}; "
            f"files left in session folders: {leak['storage_files_left']}."
        )
    rows = results.get("throughput")
    if isinstance(rows, list) and rows:
        out += [
            "",
            "**Throughput** (720p, analysis_type full; RTF = video seconds per second):",
            "",
            "| video | length s | ours in-process s (CPU s) | RTF | scenedetect s (CPU s) "
            "| ours/scenedetect wall (CPU) | API 1 worker: e2e s (upload s) | RTF "
            "| API 2 workers, 2 videos: e2e s | aggregate RTF | 2-worker speedup |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in rows:
            p, one, two = r["in_process"], r["api_1w"], r["api_2w"]
            out.append(
                f"| {r['video']} ({r['size_mb']} MB) | {r['video_s']} | {p['ours_s']} "
                f"({p['ours_cpu_s']}) | {p['realtime_factor']} | {p['scenedetect_s']} "
                f"({p['scenedetect_cpu_s']}) | **{p['ratio_wall']}** ({p['ratio_cpu']}) "
                f"| {one['end_to_end_s']} ({one['upload_s']}) | {one['realtime_factor']} "
                f"| {two['end_to_end_s']} | {two['realtime_factor']} | {r['speedup_2w']} |"
            )
        cores = ", ".join(f"{r['in_process'].get('ours_cores', '?')}" for r in rows)
        api_cores = ", ".join(
            f"{r['api_1w']['server_cpu_cores']} / {r['api_2w']['server_cpu_cores']}" for r in rows
        )
        out.append(
            f"\nCores one in-process analysis keeps busy (FFmpeg's decoder threads): {cores}. "
            f"Server CPU through the API, 1 worker / 2 workers: {api_cores} cores."
        )
    spread = results.get("distributed")
    if isinstance(spread, dict) and "throughput" in spread:
        out.append("\n" + distributed.table(spread))
    engine = results.get("engine")
    if isinstance(engine, dict) and "speed" in engine:
        out.append("\n" + _engine_line(engine))
    for section in SECTIONS:
        value = results.get(section)
        if isinstance(value, dict) and ("error" in value or "skipped" in value):
            out.append(f"\n{section}: {value.get('error') or value.get('skipped')}")
    return "\n".join(out)


# -- main -----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: short, 1-min video only")
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    parser.add_argument("--duration", type=float, help="loaded latency window, s (default 60)")
    parser.add_argument("--clients", type=int, default=20, help="concurrent pollers (20)")
    parser.add_argument(
        "--poll-interval", type=float, default=0.1, help="pause between a client's polls, s (0.1)"
    )
    parser.add_argument("--cycles", type=int, help="leak-check cycles (default 50; quick 20)")
    parser.add_argument("--repeat", type=int, default=1, help="in-process runs per tool (best)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="where the JSON goes")
    parser.add_argument("--table", type=Path, help="only print the table of a results file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.table:
        print(table(json.loads(args.table.read_text())))
        return 0

    quick = args.quick
    duration = args.duration or (10.0 if quick else 60.0)
    cycles = args.cycles or (20 if quick else 50)
    minutes = (1,) if quick else (1, 5, 10)
    # The engine bench (its own clips, accuracy suite) takes longer than a whole smoke run.
    sections = args.only or [s for s in SECTIONS if not (quick and s == "engine")]

    results: dict[str, Any] = {"machine": machine(), "quick": quick, "started": time.time()}
    print("preparing videos (cached in bench/.cache/)...", flush=True)
    videos.upload_video(20)
    for m in sorted({*minutes, 0.25}):
        videos.workout_video(m, (640, 360) if m == 0.25 else videos.SIZE_720P)
    jobs = {
        "engine": lambda: run_engine(quick),
        "latency": lambda: api.latency(
            duration,
            args.clients,
            args.poll_interval,
            load_minutes=1 if quick else 10,
            results_minutes=1 if quick else 5,
        ),
        "leak": lambda: api.leak(cycles, 10),
        "throughput": lambda: throughput.throughput(minutes, args.repeat),
        # Pollers of the distributed latency: the figure of issue 11 is for 10.
        "distributed": lambda: distributed.run(quick, args.duration, 10),
    }
    for section in SECTIONS:
        if section not in sections:
            continue
        print(f"running {section}...", flush=True)
        began = time.monotonic()
        # Other work on the machine shows here first: keep it next to the figures.
        results.setdefault("load_average_before", {})[section] = round(os.getloadavg()[0], 2)
        try:
            results[section] = jobs[section]()
        except Exception as exc:  # one failing section must not lose the others' figures
            traceback.print_exc()
            results[section] = {"error": f"{type(exc).__name__}: {exc}"}
        print(f"  {section} took {time.monotonic() - began:.0f} s", flush=True)
        # Written after every section: an interrupted run keeps what it measured.
        results["machine"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        results["seconds"] = round(time.time() - results["started"], 1)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    print()
    print(table(results))
    print(f"\nwritten to {args.out}")
    return (
        0
        if not any(isinstance(results.get(s), dict) and "error" in results[s] for s in sections)
        else 1
    )


if __name__ == "__main__":
    sys.exit(main())
