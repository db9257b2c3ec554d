"""Accuracy of the workout analysis on rendered people, per scenario (not a test): every scenario
of `tests.people.SCENARIOS` against the issue's targets (README "Accuracy").

    .venv/bin/python -m bench.people                       # the whole catalogue, ~4 min
    .venv/bin/python -m bench.people squats lunges         # some scenarios
    .venv/bin/python -m bench.people --model full          # with the full landmark model

Prints one row per true set and the summary, and writes `bench/people_results.json`.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from analysis.options import AnalysisOptions  # noqa: E402
from railway_video_generator import RailwayVideoGenerator  # noqa: E402
from tests import people  # noqa: E402
from tests.people_scoring import ClipScore, score, summarise  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "people_results.json"


def _row(s: Any) -> str:
    rom = (
        f"{sum(s.rom_errors) / len(s.rom_errors):+.0f} / {max(abs(e) for e in s.rom_errors):.0f}"
        if s.rom_errors
        else "–"
    )
    named = s.found_exercise if s.found_exercise == s.exercise else f"**{s.found_exercise}**"
    reps = f"{s.found_reps}/{s.true_reps}"
    if s.found_reps is None or abs(s.found_reps - s.true_reps) > 1:
        reps = f"**{reps}**"
    bound = f"{s.start_error:+.2f} / {s.end_error:+.2f}" if s.found else "–"
    if s.boundary_error > 0.5:
        bound = f"**{bound}**"
    return f"| {s.scenario} | {s.exercise} | {reps} | {named} | {bound} | {rom} |"


def run(names: list[str], model: str) -> dict[str, Any]:
    engine = RailwayVideoGenerator(AnalysisOptions(pose_model=model))
    clips: list[ClipScore] = []
    seconds = 0.0
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            truth = people.make_scenario(name, Path(folder), save=False)
            began = time.perf_counter()
            result = engine.analyze(truth.path, "workout")
            seconds += time.perf_counter() - began
            clips.append(score(name, truth, result))
            truth.path.unlink()
    print(
        "| scenario | exercise | reps found/true | named | start / end error s "
        "| ROM error mean / worst ° |"
    )
    print("|---|---|---|---|---|---|")
    for clip in clips:
        for s in clip.sets:
            print(_row(s))
        if clip.sets_in_rest:
            print(f"| {clip.scenario} | (rest) | **{clip.sets_in_rest} set(s) in a rest** | | | |")
        if clip.method != "pose":
            print(f"| {clip.scenario} | | **analysed on motion** | | | |")
    summary = summarise(clips)
    print(f"\n{summary}\nanalysis {seconds:.0f} s for {len(clips)} clips")
    results = {
        "model": model,
        "clips": [asdict(c) for c in clips],
        "summary": asdict(summary),
        "analysis_seconds": round(seconds, 1),
    }
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", help="scenarios (default: all)")
    parser.add_argument("--model", choices=("lite", "full"), default="lite")
    args = parser.parse_args()
    run(args.names or list(people.SCENARIOS), args.model)


if __name__ == "__main__":
    main()
