"""Tests of the people generator (tests/people.py): its ground truth is consistent, its clips are
real files of the size, rate and length the truth says, and the body is drawn where the truth puts
it. Whether a pose estimator sees the people is proven by the pose tests, not here."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest

from tests import people
from tests.people import (
    EXERCISES,
    HIDDEN,
    LM,
    MAJOR,
    OUT_OF_FRAME,
    SCENARIOS,
    SELF_OCCLUDED,
    VISIBLE,
    Body,
    Camera,
    ClipSpec,
    ClipTruth,
    Scene,
    SetPlan,
    score_pose,
    write_clip,
)

PLAIN = Scene(noise=0.0, vignette=0.0)
"""No sensor noise and even light: pixel colours can be compared with the outfit's."""


def decode(path: Path) -> tuple[list[np.ndarray], float]:
    """Every frame of a file (BGR) and its frame rate, read with PyAV."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [f.to_ndarray(format="bgr24") for f in container.decode(stream)]
        return frames, float(stream.average_rate)


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, ClipTruth]:
    """Short real clips, written once: each one stresses a part of the truth."""
    folder = tmp_path_factory.mktemp("people")
    specs = {
        # A pause inside the squat set, then curls after a rest; plain light for colour checks.
        "pause": ClipSpec(
            sets=(
                SetPlan("squat", 5, 1.3, pause_after=2, pause=3.0),
                SetPlan("bicep_curl", 4, 1.2),
            ),
            seed=3,
            rests=("still", "shift", "still"),
            rest_seconds=(3.0, 3.5),
            scene=PLAIN,
        ),
        "back_to_back": ClipSpec(
            sets=(SetPlan("jumping_jack", 5, 0.8), SetPlan("squat", 3, 1.4)),
            seed=4,
            back_to_back=True,
            size=(180, 320),
            fps=24,
        ),
        "push_ups_60fps": ClipSpec(
            sets=(SetPlan("push_up", 3, 1.4),),
            seed=5,
            size=(320, 180),
            fps=60,
            camera=Camera(yaw=90.0, height=0.62, aim=0.45, elevation=0.7, at=(0.5, 0.6)),
            lead_in=(1.0, 1.2),
        ),
        "lunges_walk_out": ClipSpec(
            sets=(SetPlan("lunge", 3, 1.8), SetPlan("lunge", 2, 1.8)),
            seed=6,
            size=(320, 180),
            fps=15,
            rests=("still", "walk_out", "still"),
            camera=Camera(yaw=60.0),
        ),
        "passer": ClipSpec(
            sets=(SetPlan("jumping_jack", 8, 0.8),),
            seed=7,
            size=(320, 180),
            fps=15,
            scene=Scene(other="passer_in_front"),
            codec="mp4v",
        ),
    }
    return {name: write_clip(folder / f"{name}.mp4", spec, name) for name, spec in specs.items()}


# ------------------------------------------------------------------------------------------------
# The body and the exercises, without video
# ------------------------------------------------------------------------------------------------


def test_landmarks_are_blazeposes_33_in_its_order() -> None:
    assert len(people.LANDMARKS) == 33
    assert people.LANDMARKS[0] == "nose"
    assert people.LANDMARKS[11:17] == (
        "left_shoulder",
        "right_shoulder",
        "left_elbow",
        "right_elbow",
        "left_wrist",
        "right_wrist",
    )
    assert people.LANDMARKS[31:] == ("left_foot_index", "right_foot_index")


def test_standing_body_has_adult_proportions_with_its_left_on_plus_x() -> None:
    body = Body(height=1.75)
    rows = people._plant(people._rows(1), body)
    p = people.pose(rows, body).points[0]
    assert p[:33, 1].min() == pytest.approx(0.02 * body.k, abs=0.005)  # the toes touch the floor
    assert p[people._HEAD_TOP, 1] == pytest.approx(1.75, abs=0.03)
    assert p[LM["left_shoulder"], 1] / 1.75 == pytest.approx(0.82, abs=0.02)
    assert p[LM["left_hip"], 1] / 1.75 == pytest.approx(0.53, abs=0.02)
    shoulders = abs(p[LM["left_shoulder"], 0] - p[LM["right_shoulder"], 0])
    hips = abs(p[LM["left_hip"], 0] - p[LM["right_hip"], 0])
    assert shoulders > 1.8 * hips
    assert p[LM["left_shoulder"], 0] > 0 > p[LM["right_shoulder"], 0]
    assert p[LM["nose"], 2] > p[people._HEAD, 2]  # facing +z


@pytest.mark.parametrize("name", sorted(EXERCISES))
@pytest.mark.parametrize("depth_scale", [0.7, 1.0])
def test_range_of_motion_on_the_skeleton_is_the_depth_asked_for(
    name: str, depth_scale: float
) -> None:
    exercise = EXERCISES[name]
    depth = exercise.depth * depth_scale
    phase = np.linspace(0.0, 1.0, 2001)
    points = people.pose(exercise.rows(phase, depth, 0, Body()), Body()).points
    side = "left"  # the front leg of the first lunge; both sides are alike otherwise
    angle = exercise.angle(points, side)
    assert angle.max() - angle.min() == pytest.approx(depth, abs=0.05)
    assert angle[0] == pytest.approx(angle[-1], abs=0.05)  # a rep ends where it began


def rep_angle(name: str, phase: np.ndarray) -> np.ndarray:
    """The dominant joint angle over one rep of the exercise at its default depth."""
    exercise = EXERCISES[name]
    points = people.pose(exercise.rows(phase, exercise.depth, 0, Body()), Body()).points
    return exercise.angle(points, "left")


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_turning_point_is_the_middle_of_the_hold_at_the_extreme(name: str) -> None:
    exercise = EXERCISES[name]
    phase = np.linspace(0.0, 1.0, 4001)
    angle = rep_angle(name, phase)
    extreme = phase[angle >= angle.max() - 0.01]
    assert extreme.min() <= exercise.turn <= extreme.max()
    assert (extreme.min() + extreme.max()) / 2 == pytest.approx(exercise.turn, abs=0.02)


@pytest.mark.parametrize("name", sorted(EXERCISES))
def test_a_rep_goes_down_and_up_at_different_speeds_not_as_a_sine(name: str) -> None:
    phase = np.linspace(0.0, 1.0, 4001)
    angle = rep_angle(name, phase)
    sine = angle.min() + (angle.max() - angle.min()) * (1 - np.cos(2 * np.pi * phase)) / 2
    assert np.abs(angle - sine).max() > 0.05 * (angle.max() - angle.min())


def planted(name: str, landmark: str, rep: int = 0) -> np.ndarray:
    """Where a landmark goes over a rep, in metres (n, 3)."""
    phase = np.linspace(0.0, 1.0, 401)
    exercise = EXERCISES[name]
    return people.pose(exercise.rows(phase, exercise.depth, rep, Body()), Body()).points[
        :, LM[landmark]
    ]


@pytest.mark.parametrize(
    "name, landmark",
    [
        ("squat", "left_ankle"),
        ("squat", "right_foot_index"),
        ("bicep_curl", "left_heel"),
        ("push_up", "left_wrist"),
        ("push_up", "right_foot_index"),
        ("lunge", "right_foot_index"),  # the back foot of the first lunge keeps its toes down
    ],
)
def test_planted_hands_and_feet_stay_where_they_are(name: str, landmark: str) -> None:
    path = planted(name, landmark)
    assert np.ptp(path, axis=0).max() < 0.005


def test_lunges_alternate_the_front_leg() -> None:
    first = planted("lunge", "left_ankle", rep=0)[:, 2].max()
    second = planted("lunge", "right_ankle", rep=1)[:, 2].max()
    assert first == pytest.approx(second) and first > 0.6
    assert planted("lunge", "right_ankle", rep=0)[:, 2].max() < 0.2


# ------------------------------------------------------------------------------------------------
# The truth of written clips
# ------------------------------------------------------------------------------------------------


def test_rep_times_lie_inside_their_set_in_order(clips: dict[str, ClipTruth]) -> None:
    for truth in clips.values():
        for s in truth.sets:
            assert len(s.rep_times) == len(s.rep_durations) == len(s.rom) == len(s.rom_2d) == s.reps
            assert s.start < s.rep_times[0] and s.rep_times[-1] < s.end
            assert list(s.rep_times) == sorted(s.rep_times)
        assert truth.sets[-1].end < truth.duration


def test_rep_durations_add_up_to_the_set_apart_from_its_pause(clips: dict[str, ClipTruth]) -> None:
    for truth in clips.values():
        for s in truth.sets:
            paused = sum(b - a for a, b in s.pauses)
            assert sum(s.rep_durations) + paused == pytest.approx(s.end - s.start, abs=0.01)


def test_rests_and_sets_tile_the_clip(clips: dict[str, ClipTruth]) -> None:
    for truth in clips.values():
        pieces = sorted([*truth.rests, *((s.start, s.end) for s in truth.sets)])
        assert pieces[0][0] == 0.0
        assert pieces[-1][1] == pytest.approx(truth.duration, abs=1.5 / truth.fps)
        for (_, end), (start, _) in zip(pieces, pieces[1:], strict=False):
            assert start == pytest.approx(end, abs=1e-3)


def test_range_of_motion_of_each_rep_matches_what_was_asked(clips: dict[str, ClipTruth]) -> None:
    checked = 0
    for truth in clips.values():
        for s in truth.sets:
            for measured, target, duration in zip(
                s.rom, s.target_rom, s.rep_durations, strict=True
            ):
                # The truth is measured on the frames, which may step over the extremes of a fast
                # rep, never beyond them; with 30 frames a rep or more they catch them.
                assert measured <= target + 0.05
                if duration * truth.fps >= 30:
                    assert measured == pytest.approx(target, abs=2.0)
                    checked += 1
    assert checked >= 12


def test_a_pause_inside_a_set_keeps_it_one_set(clips: dict[str, ClipTruth]) -> None:
    truth = clips["pause"]
    squat = truth.sets[0]
    assert [s.exercise for s in truth.sets] == ["squat", "bicep_curl"]
    assert squat.reps == 5 and len(squat.pauses) == 1
    start, end = squat.pauses[0]
    assert end - start == pytest.approx(3.0)
    assert squat.rep_times[1] < start < end < squat.rep_times[2]
    assert all(not (a < start < b) for a, b in truth.rests)


def test_back_to_back_exercises_are_two_sets_with_no_rest_between(
    clips: dict[str, ClipTruth],
) -> None:
    truth = clips["back_to_back"]
    first, second = truth.sets
    assert (first.exercise, second.exercise) == ("jumping_jack", "squat")
    assert first.end == pytest.approx(second.start, abs=1e-3)
    assert all(b <= first.start + 1e-3 or a >= second.end - 1e-3 for a, b in truth.rests)


def test_the_dominant_joint_is_named_per_exercise(clips: dict[str, ClipTruth]) -> None:
    joints = {s.exercise: s.joint for t in clips.values() for s in t.sets}
    assert joints == {
        "squat": "knee_flexion",
        "bicep_curl": "elbow_flexion",
        "jumping_jack": "shoulder_abduction",
        "push_up": "elbow_flexion",
        "lunge": "knee_flexion",
    }


def test_side_view_push_ups_show_the_elbow_range_on_the_image_too(
    clips: dict[str, ClipTruth],
) -> None:
    push_ups = clips["push_ups_60fps"].sets[0]
    for rom, rom_2d in zip(push_ups.rom, push_ups.rom_2d, strict=True):
        assert rom_2d == pytest.approx(rom, abs=8.0)


# ------------------------------------------------------------------------------------------------
# The files
# ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pause", "back_to_back", "push_ups_60fps", "passer"])
def test_written_file_has_the_frames_size_and_rate_of_its_truth(
    clips: dict[str, ClipTruth], name: str
) -> None:
    truth = clips[name]
    frames, fps = decode(truth.path)
    assert len(frames) == truth.frames == round(truth.duration * truth.fps)
    assert frames[0].shape[1::-1] == truth.size
    assert fps == pytest.approx(truth.fps)
    assert truth.joints.shape == (truth.frames, 33, 2)
    assert truth.joints_3d.shape == (truth.frames, 33, 3)
    assert truth.visibility.shape == (truth.frames, 33)


def test_portrait_at_24_fps_and_landscape_at_60_fps(clips: dict[str, ClipTruth]) -> None:
    portrait, fast = clips["back_to_back"], clips["push_ups_60fps"]
    assert (portrait.size, portrait.fps) == ((180, 320), 24.0)
    assert (fast.size, fast.fps) == ((320, 180), 60.0)
    # The athlete fills the portrait frame's height, as a phone held upright films.
    assert portrait.body_height.max() > 0.6 * 320


def test_the_body_is_drawn_where_the_truth_puts_it(clips: dict[str, ClipTruth]) -> None:
    truth = clips["pause"]
    assert truth.look is not None
    frames, _ = decode(truth.path)
    skin = np.array(truth.look.skin, float)
    shirt = np.array(truth.look.shirt, float)
    wrist_hits = checked = 0
    torso_hits: list[bool] = []
    for i in range(0, truth.frames, 2):
        frame = frames[i].astype(float)
        for name in ("left_wrist", "right_wrist"):
            if truth.visibility[i, LM[name]] == VISIBLE:
                x, y = np.round(truth.joints[i, LM[name]]).astype(int)
                patch = frame[y - 1 : y + 2, x - 1 : x + 2].reshape(-1, 3)
                wrist_hits += np.linalg.norm(patch - skin, axis=1).min() < 30
                checked += 1
        # The shirt's middle, a third of the way from the shoulders to the hips, while resting
        # (in a set, arms may pass in front of it).
        if any(a + 1 <= i / truth.fps <= b - 1 for a, b in truth.rests):
            top = truth.joints[i, [LM["left_shoulder"], LM["right_shoulder"]]].mean(axis=0)
            bottom = truth.joints[i, [LM["left_hip"], LM["right_hip"]]].mean(axis=0)
            x, y = np.round(top + (bottom - top) / 3).astype(int)
            torso_hits.append(bool(np.linalg.norm(frame[y, x] - shirt) < 30))
    assert checked > 100 and wrist_hits >= 0.95 * checked
    assert len(torso_hits) > 20 and all(torso_hits)


def test_a_clip_is_the_same_for_the_same_seed_and_differs_for_another(tmp_path: Path) -> None:
    spec = ClipSpec(sets=(SetPlan("squat", 2, 1.0),), seed=9, size=(160, 90), lead_in=(0.5, 1.0))
    a = write_clip(tmp_path / "a.mp4", spec)
    b = write_clip(tmp_path / "b.mp4", spec)
    c = write_clip(tmp_path / "c.mp4", dataclasses.replace(spec, seed=10))
    assert a.sets == b.sets and np.array_equal(a.joints, b.joints)
    assert np.array_equal(a.visibility, b.visibility)
    frames_a, frames_b = decode(a.path)[0], decode(b.path)[0]
    assert all(np.array_equal(x, y) for x, y in zip(frames_a, frames_b, strict=True))
    assert c.sets != a.sets


def test_truth_is_saved_beside_the_video_and_read_back(
    clips: dict[str, ClipTruth], tmp_path: Path
) -> None:
    truth = clips["pause"]
    saved = truth.save(tmp_path / "pause.npz")
    again = ClipTruth.load(saved)
    assert again.sets == truth.sets and again.rests == truth.rests and again.look == truth.look
    assert np.array_equal(again.joints, truth.joints)
    assert np.array_equal(again.visibility, truth.visibility)
    assert again.present.dtype == bool and again.present.sum() == truth.present.sum()


# ------------------------------------------------------------------------------------------------
# Visibility by design
# ------------------------------------------------------------------------------------------------


def test_walking_out_during_a_rest_takes_the_athlete_out_of_the_frame(
    clips: dict[str, ClipTruth],
) -> None:
    truth = clips["lunges_walk_out"]
    t = np.arange(truth.frames) / truth.fps
    start, end = truth.rests[1]
    away = ~truth.present
    assert away.any()
    assert np.all((t[away] > start) & (t[away] < end))
    gone = (truth.visibility[:, MAJOR] == OUT_OF_FRAME).all(axis=1)
    assert gone.sum() >= truth.fps  # at least a second entirely out of view
    for s in truth.sets:
        inside = (t >= s.start) & (t < s.end)
        assert truth.present[inside].all()


def test_someone_passing_in_front_hides_the_athlete_for_a_moment(
    clips: dict[str, ClipTruth],
) -> None:
    truth = clips["passer"]
    hidden = (truth.visibility == HIDDEN).any(axis=1)
    assert 0 < hidden.sum() < 0.2 * truth.frames
    s = truth.sets[0]
    t = np.flatnonzero(hidden) / truth.fps
    assert s.start <= t.min() and t.max() <= s.end


def test_far_limbs_seen_from_the_side_are_marked_behind_the_body(
    clips: dict[str, ClipTruth],
) -> None:
    truth = clips["push_ups_60fps"]
    s = truth.sets[0]
    t = np.arange(truth.frames) / truth.fps
    inside = (t >= s.start) & (t < s.end)
    near, far = (
        truth.visibility[inside, LM["left_elbow"]],
        truth.visibility[inside, LM["right_elbow"]],
    )
    assert (near == VISIBLE).mean() > 0.9
    assert (far == SELF_OCCLUDED).mean() > 0.5


def test_the_athlete_is_in_view_throughout_an_ordinary_clip(clips: dict[str, ClipTruth]) -> None:
    assert clips["pause"].present.all()
    assert (clips["pause"].visibility[:, MAJOR] != OUT_OF_FRAME).all()


# ------------------------------------------------------------------------------------------------
# Scoring an estimator
# ------------------------------------------------------------------------------------------------


def test_the_truth_itself_scores_every_frame_found(clips: dict[str, ClipTruth]) -> None:
    truth = clips["lunges_walk_out"]
    score = score_pose(truth, truth.joints)
    assert score.frames == truth.present.sum() < truth.frames  # out of view while walking out
    assert score.found == 1.0 and score.median_error == 0.0 and score.missed == ()


def test_an_estimator_that_finds_nobody_or_someone_else_scores_nothing(
    clips: dict[str, ClipTruth],
) -> None:
    truth = clips["pause"]
    nobody = score_pose(truth, np.full_like(truth.joints, np.nan))
    assert nobody.found == 0.0 and len(nobody.missed) == nobody.frames == truth.frames
    beside = truth.joints + np.array([0.3, 0.0]) * truth.body_height[:, None, None]
    assert score_pose(truth, beside).found == 0.0


def test_found_means_nine_in_ten_seen_joints_within_a_tenth_of_a_body_height(
    clips: dict[str, ClipTruth],
) -> None:
    truth = clips["pause"]
    unit = truth.body_height[:, None]
    near = truth.joints.copy()
    near[:, :, 0] += 0.08 * unit  # every joint a little off
    assert score_pose(truth, near).found == 1.0
    one_wrong = near.copy()
    one_wrong[:, LM["left_wrist"], 1] += 0.5 * unit[:, 0]  # 11 of 12 within: still found
    assert score_pose(truth, one_wrong).found == 1.0
    two_wrong = one_wrong.copy()
    two_wrong[:, LM["right_ankle"], 1] += 0.5 * unit[:, 0]
    assert score_pose(truth, two_wrong).found == 0.0


# ------------------------------------------------------------------------------------------------
# The catalogue
# ------------------------------------------------------------------------------------------------


def test_catalogue_names_every_scenario_the_pose_tests_need() -> None:
    assert set(SCENARIOS) == {
        "walker_behind",
        "passer_in_front",
        "second_exerciser",
        "tv_with_cuts",
        "small_dark_at_edge",
        "handheld_drift",
        "shake_zoom_roll",
        "upper_body_curls",
        "compressed_240p_15fps",
        "back_to_back",
        "pause_in_set",
        "walks_out_during_rest",
        "portrait_24fps",
        "fps60",
        "tempo_fast",
        "tempo_slow",
        "squats",
        "jumping_jacks",
        "curls",
        "push_ups_side",
        "lunges",
    }


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_catalogue_clips_last_15_to_45_seconds_with_realistic_sets(name: str) -> None:
    spec = SCENARIOS[name]
    still = people._view(spec.camera, spec.body, spec.size, spec.fps, 1, np.random.default_rng(0))
    exit = people._exit(still, spec.size, spec.camera, spec.body)
    pieces = people._plan(
        spec, np.random.default_rng(np.random.SeedSequence(spec.seed).spawn(5)[0]), exit
    )
    sets = [p for p in pieces if p.kind == "set"]
    # Up to 45 s: rests between sets last at least 7 s, longer than a pause inside a set.
    assert 15.0 <= pieces[-1].end <= 45.0
    assert 1 <= len(sets) <= 3
    assert all(6 <= p.plan.reps <= 15 for p in sets if p.plan)
    rests_between = [p for p in pieces[1:-1] if p.kind == "rest"]
    assert len(rests_between) == (0 if spec.back_to_back else len(sets) - 1)
    # Between two sets of one exercise, a rest is clearly longer than a pause inside a set.
    for before, rest, after in zip(pieces, pieces[1:], pieces[2:], strict=False):
        if rest.kind == "rest" and before.plan and after.plan:
            if before.plan.exercise == after.plan.exercise:
                assert rest.end - rest.start >= 7.0
    assert spec.size[0] % 2 == 0 and spec.size[1] % 2 == 0
    assert max(spec.size) <= 640


@pytest.mark.parametrize(
    "name, fps, size, tempo",
    [
        ("compressed_240p_15fps", 15, (426, 240), None),
        ("portrait_24fps", 24, (270, 480), None),
        ("fps60", 60, (480, 270), None),
        ("tempo_fast", 30, (480, 270), 0.5),
        ("tempo_slow", 30, (480, 270), 6.0),
    ],
)
def test_catalogue_scenarios_film_what_their_names_say(
    name: str, fps: int, size: tuple[int, int], tempo
) -> None:
    spec = SCENARIOS[name]
    assert (spec.fps, spec.size) == (fps, size)
    if tempo is not None:
        assert {s.period for s in spec.sets} == {tempo}
    if name == "compressed_240p_15fps":
        assert spec.crf >= 35


@pytest.mark.parametrize(
    "change, message",
    [
        ({"size": (161, 90)}, "even"),
        ({"codec": "avc1"}, "codec"),
        ({"rests": ("nap",)}, "rest"),
        ({"sets": (SetPlan("plank_jacks", 2, 1.0),)}, "plank_jacks"),
        (
            {"sets": (SetPlan("squat", 2, 1.0), SetPlan("push_up", 2, 1.0)), "back_to_back": True},
            "posture",
        ),
    ],
)
def test_a_spec_the_generator_cannot_film_is_refused_with_a_reason(
    tmp_path: Path, change: dict, message: str
) -> None:
    spec = dataclasses.replace(
        ClipSpec(sets=(SetPlan("squat", 2, 1.0),), size=(160, 90), lead_in=(0.5, 0.6)), **change
    )
    with pytest.raises(ValueError, match=message):
        write_clip(tmp_path / "refused.mp4", spec)
