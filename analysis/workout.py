"""The workout summary: sets found by either analysis become active segments, the time between
them rest, with tempo and intensity, covering the whole video in time order."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from analysis.motion import ENERGY_FLOOR
from analysis.options import AnalysisOptions
from analysis.results import WorkoutSegment, WorkoutSummary
from analysis.signals import box_smooth


@dataclass(frozen=True)
class FoundSet:
    """A set as an analysis found it: from its first rep to its last, and the time of each.

    The body analysis also names the exercise and measures each rep; the motion analysis leaves
    those as "unknown", 0 and None, and `rep_durations` empty (they are then derived from the
    spacing of the reps)."""

    start: float
    end: float
    rep_times: list[float]
    exercise: str = "unknown"
    exercise_confidence: float = 0.0
    rep_durations: list[float] = field(default_factory=list)
    range_of_motion: list[float] | None = None
    dominant_joint: str | None = None


def _durations_from_spacing(start: float, end: float, rep_times: list[float]) -> list[float]:
    """Rep durations when only the reps' times are known: each rep runs from the midpoint with
    the previous rep (the set's start for the first) to the midpoint with the next (its end)."""
    if not rep_times:
        return []
    bounds = [start, *((a + b) / 2 for a, b in zip(rep_times, rep_times[1:], strict=False)), end]
    return [max(0.0, b - a) for a, b in zip(bounds, bounds[1:], strict=False)]


def _mean_between(times: np.ndarray, values: np.ndarray, start: float, end: float) -> float:
    inside = (times >= start) & (times < end)
    return float(values[inside].mean()) if inside.any() else 0.0


def summarise(
    times: np.ndarray,
    energy: np.ndarray,
    sets: list[FoundSet],
    duration: float,
    options: AnalysisOptions,
    method: str = "motion",
) -> WorkoutSummary:
    """Sets and the rests between them, covering [0, duration]; intensity is the motion energy
    of each segment relative to the video's most active moments."""
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
        durations = s.rep_durations or _durations_from_spacing(s.start, end, s.rep_times)
        segments.append(
            WorkoutSegment(
                round(s.start, 2),
                round(end, 2),
                "active",
                reps,
                [round(t, 2) for t in s.rep_times],
                round(tempo, 1),
                round(min(1.0, level), 2),
                exercise=s.exercise,
                exercise_confidence=round(s.exercise_confidence, 2),
                rep_durations=[round(d, 2) for d in durations],
                range_of_motion=None
                if s.range_of_motion is None
                else [round(r, 1) for r in s.range_of_motion],
                dominant_joint=s.dominant_joint,
            )
        )
        cursor = end
    rest(duration)
    active = sum(s.end - s.start for s in segments if s.kind == "active")
    rest_time = sum(s.end - s.start for s in segments if s.kind == "rest")
    return WorkoutSummary(
        sum(s.reps for s in segments), round(active, 2), round(rest_time, 2), segments, method
    )
