"""The workout analysis on people: real footage, counted by eye, and (below) rendered people with
exact ground truth in every scenario the issue names."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from railway_video_generator import RailwayVideoGenerator
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
