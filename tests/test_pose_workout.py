"""Tests of the body-based workout analysis on synthetic joint-angle tracks
(analysis/pose_workout.py): sets, reps, exercise names, rep timing and range of motion, sampled
as sparsely and irregularly as the pose scheduler samples. Its accuracy on rendered people is in
test_people_accuracy.py."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from analysis import pose_workout
from analysis.body import ANGLE_INDEX, ANGLES, BodySample, BodyTrack
from analysis.options import AnalysisOptions

# These tests give the angles themselves; the landmarks they come from are not needed.
_NO_POINTS, _NO_WORLD = np.zeros((12, 2)), np.zeros((12, 3))

STANDING = {name: 5.0 for name in ANGLES} | {"left_shoulder": 10.0, "right_shoulder": 10.0}


def _bump(phase: np.ndarray) -> np.ndarray:
    return (1 - np.cos(2 * np.pi * np.clip(phase, 0, 1))) / 2


def _exercise(name: str, depth: float, b: np.ndarray) -> dict[str, np.ndarray]:
    """Angles (degrees) of an exercise at rep progress b (0 start pose .. 1 turning point)."""
    base = {k: np.full_like(b, v) for k, v in STANDING.items()}
    if name == "squat":
        base |= {k: 5 + depth * b for k in ("left_knee", "right_knee")}
        base |= {k: 5 + 0.9 * depth * b for k in ("left_hip", "right_hip")}
    elif name == "lunge":
        base |= {"left_knee": 5 + depth * b, "right_knee": 5 + 0.9 * depth * b}
        base |= {"left_hip": 5 + 0.85 * depth * b, "right_hip": 5 - 0.1 * depth * b}
    elif name == "bicep_curl":
        base |= {k: 10 + depth * b for k in ("left_elbow", "right_elbow")}
    elif name == "push_up":
        base |= {k: 5 + depth * b for k in ("left_elbow", "right_elbow")}
        base |= {"trunk": np.full_like(b, 80.0)}
        base |= {k: 60 - 0.3 * depth * b for k in ("left_shoulder", "right_shoulder")}
    elif name == "jumping_jack":
        base |= {k: 10 + depth * b for k in ("left_shoulder", "right_shoulder")}
        base |= {"legs": 5 + 30 * b}
    return base


def make_track(
    plan: list[tuple[str, float, int, float]],
    times: np.ndarray,
    rest: float = 8.0,
    noise: float = 2.0,
    seed: int = 0,
    position: Callable[[float], tuple[float, float]] = lambda t: (320.0, 200.0),
) -> tuple[BodyTrack, list[dict]]:
    """A body track sampled at `times` of: rest, then per (exercise, depth, reps, period) a
    set, each followed by `rest` seconds (0 = back to back); the hips at `position(t)`, the
    body 200 px tall. Returns the track and the truth."""
    rng = np.random.default_rng(seed)
    truth, cursor = [], 3.0
    pieces: list[tuple[float, float, Callable[[np.ndarray], dict[str, np.ndarray]]]] = []
    for name, depth, reps, period in plan:
        starts = cursor + period * np.arange(reps)
        truth.append(
            {
                "exercise": name,
                "start": cursor,
                "end": cursor + reps * period,
                "rep_times": list(starts + period / 2),
                "depth": depth,
            }
        )
        pieces.append(
            (cursor, cursor + reps * period, lambda t, n=name, d=depth, s=cursor, p=period: (
                _exercise(n, d, _bump(((t - s) / p) % 1.0))
            ))
        )  # fmt: skip
        cursor += reps * period + rest
    track = BodyTrack()
    for t in times:
        angles = {k: np.array([v]) for k, v in STANDING.items()}
        for start, end, pose in pieces:
            if start <= t < end:
                angles = pose(np.array([t]))
        # The trunk and body placement of the surrounding set carry over into the short rests
        # (a push-up plank stays a plank between reps).
        values = np.array([float(angles[name][0]) for name in ANGLES])
        values[: ANGLE_INDEX["trunk"]] += noise * rng.standard_normal(ANGLE_INDEX["trunk"])
        track.append(
            float(t),
            BodySample(
                values, np.ones(len(ANGLES)), _NO_POINTS, _NO_WORLD, position(t), 200.0, 0.9
            ),
        )
    return track, truth


def _times(duration: float, rate: float, seed: int = 1) -> np.ndarray:
    """Irregular sample times about `rate` a second, as the scheduler's strides make them."""
    rng = np.random.default_rng(seed)
    steps = rng.choice([1, 2, 3], size=int(duration * rate)) / 10.0
    steps *= 10.0 / rate / 2
    times = np.cumsum(steps)
    return times[times < duration]


def analyse(track: BodyTrack, duration: float) -> list:
    options = AnalysisOptions()
    ordered = track.sorted()
    grid = pose_workout.to_grid(ordered, ordered.angles, options.sample_fps, duration)
    return pose_workout.find_sets(grid, options)


@pytest.mark.parametrize(
    ("exercise", "depth", "joint"),
    [
        ("squat", 100.0, "knee"),
        ("lunge", 90.0, "knee"),
        ("bicep_curl", 130.0, "elbow"),
        ("push_up", 80.0, "elbow"),
        ("jumping_jack", 150.0, "shoulder"),
    ],
)
def test_each_exercise_is_named_counted_and_measured(
    exercise: str, depth: float, joint: str
) -> None:
    track, truth = make_track([(exercise, depth, 8, 2.0)], _times(30, 5.0))
    (found,) = analyse(track, 30.0)
    assert found.exercise == exercise and found.exercise_confidence > 0.5
    assert found.dominant_joint == joint
    assert len(found.rep_times) == 8
    assert np.allclose(found.rep_times, truth[0]["rep_times"], atol=0.15)
    assert abs(found.start - truth[0]["start"]) <= 0.3 and abs(found.end - truth[0]["end"]) <= 0.3
    assert found.range_of_motion is not None
    assert np.allclose(found.range_of_motion, depth, atol=8.0)
    assert np.allclose(found.rep_durations, 2.0, atol=0.3)


def test_fast_reps_sampled_at_the_full_rate_are_all_counted() -> None:
    track, truth = make_track([("jumping_jack", 150.0, 12, 0.6)], np.arange(0, 20, 0.1))
    (found,) = analyse(track, 20.0)
    assert len(found.rep_times) == 12
    assert np.allclose(found.rep_times, truth[0]["rep_times"], atol=0.1)


def test_slow_reps_of_six_seconds_are_counted_and_bounded() -> None:
    track, truth = make_track([("squat", 100.0, 5, 6.0)], _times(45, 2.5))
    (found,) = analyse(track, 45.0)
    assert len(found.rep_times) == 5 and found.exercise == "squat"
    # A slow rep leaves its start pose long before it is a sixth of the way down (0.8 s at 6 s a
    # rep): the set is where the movement starts and ends, not where it becomes obvious.
    assert abs(found.start - truth[0]["start"]) <= 0.4, found.start
    assert abs(found.end - truth[0]["end"]) <= 0.4, found.end


def test_two_exercises_back_to_back_are_two_sets() -> None:
    plan = [("squat", 100.0, 8, 2.0), ("bicep_curl", 130.0, 8, 2.0)]
    track, truth = make_track(plan, _times(45, 5.0), rest=0.0)
    found = analyse(track, 45.0)
    assert [s.exercise for s in found] == ["squat", "bicep_curl"]
    assert [len(s.rep_times) for s in found] == [8, 8]
    assert abs(found[0].end - truth[0]["end"]) <= 0.5


def test_a_pause_inside_a_set_does_not_split_it() -> None:
    plan = [("squat", 100.0, 5, 2.0), ("squat", 100.0, 5, 2.0)]
    track, truth = make_track(plan, _times(40, 5.0), rest=4.0)
    (found,) = analyse(track, 40.0)
    assert len(found.rep_times) == 10
    assert found.start == pytest.approx(truth[0]["start"], abs=0.3)
    assert found.end == pytest.approx(truth[1]["end"], abs=0.3)


def test_two_sets_of_one_exercise_with_a_rest_between_are_two_sets() -> None:
    plan = [("squat", 100.0, 6, 2.0), ("squat", 100.0, 6, 2.0)]
    track, _ = make_track(plan, _times(50, 5.0), rest=15.0)
    assert [len(s.rep_times) for s in analyse(track, 50.0)] == [6, 6]


def test_noise_and_standing_still_make_no_set() -> None:
    track, _ = make_track([], _times(30, 2.5), noise=4.0)
    assert analyse(track, 30.0) == []


def test_an_unfamiliar_movement_is_counted_as_unknown() -> None:
    # Arms raised to the front: shoulders move, nothing else does, legs stay closed.
    track = BodyTrack()
    for t in np.arange(0, 30, 0.2):
        values = np.array([STANDING[name] for name in ANGLES])
        if 5 <= t < 21:
            values[ANGLE_INDEX["left_shoulder"]] += 80 * _bump(np.array([(t - 5) / 2 % 1]))[0]
            values[ANGLE_INDEX["right_shoulder"]] += 80 * _bump(np.array([(t - 5) / 2 % 1]))[0]
        track.append(
            float(t),
            BodySample(values, np.ones(len(ANGLES)), _NO_POINTS, _NO_WORLD, (0, 0), 100.0, 0.9),
        )
    (found,) = analyse(track, 30.0)
    assert found.exercise == "unknown" and found.dominant_joint == "shoulder"
    assert len(found.rep_times) == 8


def test_two_exercises_on_the_same_joint_back_to_back_share_no_rep() -> None:
    plan = [("squat", 100.0, 8, 2.0), ("lunge", 90.0, 8, 2.0)]
    track, truth = make_track(plan, _times(45, 5.0), rest=0.0)
    found = analyse(track, 45.0)
    assert [s.exercise for s in found] == ["squat", "lunge"]
    assert [len(s.rep_times) for s in found] == [8, 8]
    assert found[0].rep_times[-1] < found[1].rep_times[0]


def test_two_full_jumping_jacks_are_a_set_of_two() -> None:
    track, truth = make_track([("jumping_jack", 150.0, 2, 1.1)], _times(12, 5.0))
    (found,) = analyse(track, 12.0)
    assert found.exercise == "jumping_jack" and len(found.rep_times) == 2
    assert np.allclose(found.rep_times, truth[0]["rep_times"], atol=0.15)


def test_two_half_hearted_arm_raises_are_no_set() -> None:
    track, _ = make_track([("jumping_jack", 60.0, 2, 1.1)], _times(12, 5.0))
    assert analyse(track, 12.0) == []


def test_a_single_deep_squat_is_no_set() -> None:
    track, _ = make_track([("squat", 100.0, 1, 2.0)], _times(12, 5.0))
    assert analyse(track, 12.0) == []


def test_walking_across_the_room_is_no_set() -> None:
    # Legs swing in a steady rhythm (as in lunges), but the hips travel 3 body heights.
    track, _ = make_track(
        [("lunge", 60.0, 12, 1.0)], _times(25, 5.0), position=lambda t: (50.0 * t, 200.0)
    )
    assert analyse(track, 25.0) == []


def test_lunges_in_place_are_a_set_though_the_hips_shift_a_little() -> None:
    sway = lambda t: (320.0 + 40.0 * np.sin(np.pi * t), 200.0)  # noqa: E731
    track, _ = make_track([("lunge", 90.0, 8, 2.0)], _times(30, 5.0), position=sway)
    (found,) = analyse(track, 30.0)
    assert found.exercise == "lunge" and len(found.rep_times) == 8


def test_a_wrist_placed_inside_the_picture_counts_as_seen_as_its_elbow() -> None:
    # Framed from the waist up, hanging hands sit at the picture's lower edge: the estimator
    # places them right but scores them 0.1-0.4 (tests/test_people_accuracy.py has the clip).
    from analysis.body import L_ELBOW, L_WRIST, R_ELBOW, R_WRIST, angle_reliability

    visibility = np.full(33, 0.95, dtype=np.float32)
    visibility[[L_ELBOW, R_ELBOW]] = 0.85
    visibility[[L_WRIST, R_WRIST]] = 0.2
    landmarks = np.full((33, 3), 100.0)
    landmarks[L_WRIST, :2] = (330.0, 262.0)  # inside a 480 x 270 picture
    landmarks[R_WRIST, :2] = (150.0, 275.0)  # below it
    left, right = ANGLE_INDEX["left_elbow"], ANGLE_INDEX["right_elbow"]
    alone = angle_reliability(visibility)
    assert alone[left] == pytest.approx(0.2) and alone[right] == pytest.approx(0.2)
    framed = angle_reliability(visibility, landmarks, (480, 270))
    assert framed[left] == pytest.approx(0.85)  # the elbow's own visibility bounds it
    assert framed[right] == pytest.approx(0.2)  # out of the picture: as unsure as scored
    # Nothing else borrows: the knees keep their own landmarks' visibility.
    assert np.array_equal(np.delete(framed, [left, right]), np.delete(alone, [left, right]))


def test_the_last_push_ups_of_a_set_count_though_the_arms_no_longer_lock_out() -> None:
    # 8 push-ups; between the 6th and 7th and the 7th and 8th the arms come back only to 45
    # degrees of 85 (a tired lifter; the estimator reads side-view arms that way too).
    track, truth = make_track([("push_up", 80.0, 8, 1.5)], _times(30, 5.0))
    elbows = [ANGLE_INDEX["left_elbow"], ANGLE_INDEX["right_elbow"]]
    for boundary in (3.0 + 6 * 1.5, 3.0 + 7 * 1.5):
        near = np.abs(track.times[: track.count] - boundary) < 0.4
        track.angles[np.flatnonzero(near)[:, None], elbows] = np.maximum(
            track.angles[np.flatnonzero(near)[:, None], elbows], 45.0
        )
    (found,) = analyse(track, 30.0)
    assert found.exercise == "push_up"
    assert len(found.rep_times) == 8
    assert np.allclose(found.rep_times, truth[0]["rep_times"], atol=0.25)
    assert abs(found.end - truth[0]["end"]) <= 0.5
