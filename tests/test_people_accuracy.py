"""The workout analysis on people: real footage, counted by eye, and (below) rendered people with
exact ground truth in every scenario the issue names."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from analysis.pose import PoseEstimator
from railway_video_generator import RailwayVideoGenerator
from tests import people
from tests.people_scoring import ClipScore, score, summarise
from tests.synthetic import SetSpec, WorkoutSpec, make_video, make_workout_video


def test_the_man_in_the_real_footage_does_two_jumping_jacks(demo: Path) -> None:
    result = RailwayVideoGenerator().analyze(demo, "full")
    workout = result.workout
    assert workout is not None and workout.method == "pose"
    (active,) = [s for s in workout.segments if s.kind == "active"]
    assert active.exercise == "jumping_jack" and active.exercise_confidence >= 0.6
    assert active.reps == 2 and workout.total_reps == 2
    # By eye his arms are highest at frames 24 and 58 (30 fps); the walk and the jump down
    # that follow, and the woman passing behind, are no reps.
    assert np.allclose(active.rep_times, [24 / 30, 58 / 30], atol=0.2)
    assert active.dominant_joint == "shoulder"
    assert active.range_of_motion is not None and min(active.range_of_motion) > 120
    assert all(0.8 <= d <= 1.5 for d in active.rep_durations)
    assert active.start < 0.5 and 2.0 < active.end < 3.0


def test_a_drawn_figure_falls_back_to_the_motion_analysis_and_says_so(tmp_path: Path) -> None:
    # BlazePose follows the thick-lined figure of tests/synthetic.py (with wrong hips and legs):
    # the workout must not be read off that skeleton.
    spec = WorkoutSpec((SetSpec("squat", 6, 2.0), SetSpec("jumping_jack", 8, 1.0)), seed=11)
    truth = make_workout_video(tmp_path / "figure.mp4", spec)
    result = RailwayVideoGenerator().analyze(truth.path, "workout")
    assert result.workout is not None and result.workout.method == "motion"
    active = [s for s in result.workout.segments if s.kind == "active"]
    assert [s.reps for s in active] == [6, 8]
    assert all(s.exercise == "unknown" and s.range_of_motion is None for s in active)


def test_a_video_without_a_person_is_analysed_on_motion(tmp_path: Path) -> None:
    path = make_video(tmp_path / "block.mp4", seconds=10.0, period=1.0)
    result = RailwayVideoGenerator().analyze(path, "workout")
    assert result.workout is not None and result.workout.method == "motion"
    assert result.workout.total_reps == 10


def test_curls_framed_from_the_waist_up_are_counted(tmp_path: Path) -> None:
    # The legs are out of the picture and the hanging hands at its lower edge, where the
    # estimator scores them 0.1-0.4 though it places them right: the set must still be read on
    # the elbows (it was 5 of 9 and 2 of 7 reps before, README "Accuracy").
    spec = dataclasses.replace(
        people.SCENARIOS["upper_body_curls"],
        sets=(people.SetPlan("bicep_curl", 7, 1.8),),
        rests=("still", "still"),
        lead_in=(1.5, 2.0),
    )
    truth = people.write_clip(tmp_path / "upper_body.mp4", spec, "upper_body_short")
    clip = score("upper_body_short", truth, RailwayVideoGenerator().analyze(truth.path, "workout"))
    assert clip.method == "pose" and clip.sets_in_rest == 0
    (s,) = clip.sets
    assert s.found_reps == s.true_reps == 7, s
    assert s.found_exercise == "bicep_curl" and s.joint_matches, s
    assert s.boundary_error <= 0.5, s


# Rendered people with exact ground truth (tests/people.py). Every run analyses these scenarios of
# the catalogue: the adversities that once broke the engine, each of which it now meets the issue's
# targets on. The whole catalogue, with the scenarios it does not yet meet them on, is
# `python -m bench.people` (README "Accuracy"): about four minutes, too long for every run.
SUITE = (
    "passer_in_front",
    "second_exerciser",
    "back_to_back",
    "pause_in_set",
    "walks_out_during_rest",
    "compressed_240p_15fps",
)


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, people.ClipTruth]:
    return people.make_catalogue(tmp_path_factory.mktemp("scenarios"), SUITE, workers=2)


@pytest.fixture(scope="module")
def scored(scenarios: dict[str, people.ClipTruth]) -> dict[str, ClipScore]:
    engine = RailwayVideoGenerator()
    return {
        name: score(name, truth, engine.analyze(truth.path, "workout"))
        for name, truth in scenarios.items()
    }


@pytest.mark.parametrize("name", ["compressed_240p_15fps"])
def test_the_estimator_finds_the_athletes_joints_where_they_are_drawn(
    scenarios: dict[str, people.ClipTruth], name: str
) -> None:
    # Every third frame at 30 fps, every second at 15 (the engine samples about 10 a second),
    # at 240p, 15 fps, heavily compressed. (README "Accuracy" has the figure of 16 scenarios:
    # 13 at 95 % or more; the estimator over a whole clip costs the suite seconds, so one
    # scenario stands for them here.)
    truth = scenarios[name]
    step = 3 if truth.fps > 20 else 2
    estimator = PoseEstimator()
    estimate = np.full((truth.frames, 33, 2), np.nan)
    with av.open(str(truth.path)) as container:
        for i, frame in enumerate(container.decode(video=0)):
            if i % step == 0 and i < truth.frames:
                seen = estimator.process(frame.to_ndarray(format="bgr24"), i / truth.fps)
                if seen is not None:
                    estimate[i] = seen.landmarks[:, :2]
    sampled = np.zeros(truth.frames, dtype=bool)
    sampled[::step] = True
    thinned = dataclasses.replace(
        truth,
        joints=truth.joints[sampled],
        visibility=truth.visibility[sampled],
        joints_3d=truth.joints_3d[sampled],
        body_height=truth.body_height[sampled],
        present=truth.present[sampled],
    )
    found = people.score_pose(thinned, estimate[sampled])
    assert found.frames > 100
    assert found.found >= 0.95, found


@pytest.mark.parametrize("name", SUITE)
def test_every_set_is_found_counted_named_and_bounded(
    scored: dict[str, ClipScore], name: str
) -> None:
    clip = scored[name]
    assert clip.method == "pose"
    assert clip.sets_in_rest == 0
    for s in clip.sets:
        assert s.found_reps == s.true_reps, s  # (the target is ±1; these are exact today)
        assert s.found_exercise == s.exercise, s
        assert s.joint_matches, s
        assert s.boundary_error <= 0.5, s


def test_range_of_motion_is_close_to_the_truth_on_most_reps(
    scored: dict[str, ClipScore],
) -> None:
    # The target is every rep within 10 degrees; the estimator's depth ambiguity keeps
    # it out of reach (README "Accuracy"). What is held here: most reps within 10, and the
    # typical error well under it, so a regression in the lifting or the peak refinement shows.
    summary = summarise(list(scored.values()))
    assert summary.reps_with_rom >= 90
    assert summary.rom_within_10 >= 0.7, summary  # 76 % measured
    assert summary.rom_median_error <= 7.5, summary  # 6.1 degrees measured
