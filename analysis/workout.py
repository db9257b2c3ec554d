"""The workout summary: sets found by either analysis become active segments, the time between
them rest, with tempo and intensity, covering the whole video in time order."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.motion import ENERGY_FLOOR
from analysis.options import AnalysisOptions
from analysis.results import WorkoutSegment, WorkoutSummary
from analysis.signals import box_smooth


@dataclass(frozen=True)
class FoundSet:
    """A set as an analysis found it: from its first rep to its last, and the time of each."""

    start: float
    end: float
    rep_times: list[float]


def _mean_between(times: np.ndarray, values: np.ndarray, start: float, end: float) -> float:
    inside = (times >= start) & (times < end)
    return float(values[inside].mean()) if inside.any() else 0.0


def summarise(
    times: np.ndarray,
    energy: np.ndarray,
    sets: list[FoundSet],
    duration: float,
    options: AnalysisOptions,
) -> WorkoutSummary:
    smooth = box_smooth(energy, round(options.sample_fps)) if energy.size else energy
    scale = max(float(np.percentile(smooth, 99)) if smooth.size else 0.0, ENERGY_FLOOR)
    segments: list[WorkoutSegment] = []
    cursor = 0.0

    def rest(until: float) -> None:
        if until - cursor > 0.05:
            level = _mean_between(times, smooth, cursor, until) / scale
            segments.append(
                WorkoutSegment(
                    round(cursor, 2),
                    round(until, 2),
                    "rest",
                    0,
                    [],
                    None,
                    round(min(1.0, level), 2),
                )
            )

    for s in sets:
        end = min(s.end, duration)
        rest(s.start)
        if end - s.start <= 0.05:
            continue
        reps = len(s.rep_times)
        level = _mean_between(times, smooth, s.start, end) / scale
        tempo = 60.0 * reps / max(end - s.start, 1e-6)
        segments.append(
            WorkoutSegment(
                round(s.start, 2),
                round(end, 2),
                "active",
                reps,
                [round(t, 2) for t in s.rep_times],
                round(tempo, 1),
                round(min(1.0, level), 2),
            )
        )
        cursor = end
    rest(duration)
    active = sum(s.end - s.start for s in segments if s.kind == "active")
    rest_time = sum(s.end - s.start for s in segments if s.kind == "rest")
    return WorkoutSummary(
        sum(s.reps for s in segments), round(active, 2), round(rest_time, 2), segments
    )
