"""Scoring the workout analysis against the ground truth of `tests/people.py`'s clips: per set,
the reps, the boundaries, the exercise and each rep's range of motion; per clip, sets reported
inside a rest. The accuracy tests and `bench/engine.py` share it.

The issue's targets (issue 9): reps within +-1 on every set, mean rep error <= 2 %, set
boundaries within 0.5 s, no set inside a rest, the exercise named correctly on every set, range
of motion within 10 degrees of the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.results import AnalysisResult
from tests.people import ClipTruth
from tests.synthetic import match_sets, sets_in_rest

# The generator names joints by their angle; the analysis by the joint.
_JOINT = {
    "knee_flexion": "knee",
    "elbow_flexion": "elbow",
    "shoulder_abduction": "shoulder",
}


@dataclass(frozen=True)
class SetScore:
    """How one true set was found (None fields: not found)."""

    scenario: str
    exercise: str
    true_reps: int
    found_reps: int | None
    found_exercise: str | None
    start_error: float | None
    end_error: float | None
    rom_errors: tuple[float, ...]
    """Found minus true range of motion (degrees), per true rep matched to a found rep."""
    joint_matches: bool

    @property
    def found(self) -> bool:
        return self.found_reps is not None

    @property
    def within_one(self) -> bool:
        return self.found_reps is not None and abs(self.found_reps - self.true_reps) <= 1

    @property
    def boundary_error(self) -> float:
        if self.start_error is None or self.end_error is None:
            return float("inf")
        return max(abs(self.start_error), abs(self.end_error))


@dataclass(frozen=True)
class ClipScore:
    scenario: str
    method: str
    sets: tuple[SetScore, ...]
    sets_in_rest: int


def score(scenario: str, truth: ClipTruth, result: AnalysisResult) -> ClipScore:
    """Compare an analysis (type "workout" or "full") with its clip's truth."""
    assert result.workout is not None
    active = [s for s in result.workout.segments if s.kind == "active"]
    scores = []
    for true, found in zip(truth.sets, match_sets(truth.sets, active), strict=True):
        if found is None:
            scores.append(
                SetScore(scenario, true.exercise, true.reps, None, None, None, None, (), False)
            )
            continue
        errors = []
        if found.range_of_motion:
            period = (true.end - true.start) / true.reps
            times = np.asarray(found.rep_times)
            for t, rom in zip(true.rep_times, true.rom, strict=True):
                k = int(np.argmin(np.abs(times - t)))
                if abs(times[k] - t) < 0.4 * period:
                    errors.append(round(float(found.range_of_motion[k] - rom), 1))
        scores.append(
            SetScore(
                scenario,
                true.exercise,
                true.reps,
                found.reps,
                found.exercise,
                round(found.start - true.start, 2),
                round(found.end - true.end, 2),
                tuple(errors),
                found.dominant_joint == _JOINT.get(true.joint, true.joint),
            )
        )
    in_rest = sets_in_rest(truth.sets, active)
    return ClipScore(scenario, result.workout.method, tuple(scores), in_rest)


@dataclass(frozen=True)
class Summary:
    sets: int
    found: int
    within_one: float
    mean_rel_error: float
    boundaries_within: float
    max_boundary_error: float
    named_right: float
    sets_in_rest: int
    reps_with_rom: int
    rom_within_10: float
    rom_median_error: float


def summarise(clips: list[ClipScore], boundary: float = 0.5) -> Summary:
    sets = [s for c in clips for s in c.sets]
    rel = [
        abs((s.found_reps or 0) - s.true_reps) / s.true_reps for s in sets
    ]  # a missed set counts as every rep missed
    roms = np.abs([e for s in sets for e in s.rom_errors]) if sets else np.zeros(0)
    return Summary(
        sets=len(sets),
        found=sum(s.found for s in sets),
        within_one=float(np.mean([s.within_one for s in sets])),
        mean_rel_error=float(np.mean(rel)),
        boundaries_within=float(np.mean([s.boundary_error <= boundary for s in sets])),
        max_boundary_error=float(max(s.boundary_error for s in sets)),
        named_right=float(np.mean([s.found_exercise == s.exercise for s in sets])),
        sets_in_rest=sum(c.sets_in_rest for c in clips),
        reps_with_rom=int(roms.size),
        rom_within_10=float(np.mean(roms <= 10)) if roms.size else 0.0,
        rom_median_error=float(np.median(roms)) if roms.size else 0.0,
    )
