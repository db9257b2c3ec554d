"""Tests of the pose stage (`analysis/pose.py`, `analysis/models.py`): the model files and their
checks, then BlazePose on real footage.

The footage is PyPI `sports2d`'s demo clip (`make footage`): 1768×994, 30 fps, 7.7 s. A man
standing on a box does two jumping jacks (arms up at frames ~15–30 and ~51–66), stands, then
flips off the box (~140–195) and walks away to the right; meanwhile a woman walks from right to
left in front of the box (~40–200). What each test asserts was read off the frames by eye: on the
box the man's hips are above y = 620 px, the woman's always below (she walks on the grass); once
he has landed (frame 190 on) he is right of x = 700 px and she is left of it.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import tarfile
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from analysis import models
from analysis.pose import (
    LANDMARK_MODELS,
    LANDMARK_NAMES,
    PoseCandidate,
    PoseEstimator,
    PoseObservation,
    PoseUnavailable,
    _weighted_nms,
    _without_segmentation,
)

FPS = 30.0
STEP = 3  # the engine samples about 10 frames a second
LEFT_SHOULDER, RIGHT_SHOULDER = LANDMARK_NAMES.index("left_shoulder"), 12
LEFT_WRIST, RIGHT_WRIST = LANDMARK_NAMES.index("left_wrist"), 16
HIPS = [LANDMARK_NAMES.index("left_hip"), LANDMARK_NAMES.index("right_hip")]
ARMS_UP = [*range(18, 28 + 1), *range(54, 63 + 1)]  # the middle of each jumping jack
ARMS_DOWN = [*range(36, 45 + 1), *range(75, 120 + 1)]  # standing between and after them
# Frames kept whole for the tests that need pixels (the rest are processed and dropped).
KEEP = (0, 90, 204, 208, 215)
Run = tuple[dict[int, PoseObservation | None], dict[int, np.ndarray]]


def hips(observation: PoseObservation) -> np.ndarray:
    return observation.landmarks[HIPS, :2].mean(axis=0)


def is_the_man(frame_index: int, observation: PoseObservation) -> bool:
    x, y = hips(observation)
    return bool(y < 620) if frame_index < 190 else bool(x > 700)


def assert_arms_follow_the_jumping_jacks(observations: dict[int, PoseObservation | None]) -> None:
    """Both wrists above both shoulders mid-jack, below them while he stands."""
    up = [i for i in observations if i in ARMS_UP]
    down = [i for i in observations if i in ARMS_DOWN]
    assert len(up) >= 6 and len(down) >= 4
    for i in up + down:
        observation = observations[i]
        assert observation is not None, f"no pose at frame {i}"
        y = observation.landmarks[:, 1]
        below = y[[LEFT_WRIST, RIGHT_WRIST]] - y[[LEFT_SHOULDER, RIGHT_SHOULDER]].max()
        above = y[[LEFT_WRIST, RIGHT_WRIST]] - y[[LEFT_SHOULDER, RIGHT_SHOULDER]].min()
        if i in ARMS_UP:
            assert (above < 0).all(), f"arms not up at frame {i}"
        else:
            assert (below > 0).all(), f"arms not down at frame {i}"


def clip_frames(demo: Path, stop: int) -> Iterator[tuple[int, np.ndarray]]:
    """The clip's first `stop` frames with their index, decoded one by one."""
    capture = cv2.VideoCapture(str(demo))
    try:
        for i in range(stop):
            ok, frame = capture.read()
            assert ok, f"frame {i} could not be read"
            yield i, frame
    finally:
        capture.release()


@pytest.fixture(scope="module")
def estimator() -> PoseEstimator:
    return PoseEstimator(model="lite")


@pytest.fixture(scope="module")
def run(demo: Path, estimator: PoseEstimator) -> Run:
    """The estimator over the whole clip at 10 samples a second, as the engine runs it: the
    observation of every sampled frame, and a few frames kept for other tests."""
    estimator.reset()
    observations: dict[int, PoseObservation | None] = {}
    kept: dict[int, np.ndarray] = {}
    for i, frame in clip_frames(demo, 230):
        if i in KEEP:
            kept[i] = frame
        if i % STEP == 0:
            observations[i] = estimator.process(frame, i / FPS)
    estimator.reset()
    return observations, kept


@pytest.fixture
def model_copies(tmp_path: Path) -> Path:
    """A private copy of the model folder, to break."""
    folder = tmp_path / "models"
    folder.mkdir()
    for name in models.MODELS:
        shutil.copy(models.verified_path(name), folder / name)
    return folder


# ------------------------------------------------------------------ model files


def test_the_model_files_are_present_and_match_their_pinned_sha256() -> None:
    for name, asset in models.MODELS.items():
        path = models.verified_path(name)
        assert path.parent == models.models_dir()
        assert models.sha256_of(path) == asset.sha256


def test_a_missing_model_file_makes_the_estimator_unavailable_and_names_the_fix(
    model_copies: Path,
) -> None:
    (model_copies / "pose_landmark_lite.tflite").unlink()
    with pytest.raises(PoseUnavailable) as raised:
        PoseEstimator(model_copies, model="lite")
    message = str(raised.value)
    assert "pose_landmark_lite.tflite is missing" in message
    assert "make models" in message
    # The other landmark model is still there and still works.
    assert PoseEstimator(model_copies, model="full").model == "full"


def test_a_corrupt_model_file_is_refused_with_a_clear_message(model_copies: Path) -> None:
    path = model_copies / "pose_detection.tflite"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(PoseUnavailable) as raised:
        PoseEstimator(model_copies)
    message = str(raised.value)
    assert "pose_detection.tflite is not the pinned file" in message
    assert "make models" in message


def test_an_unknown_landmark_model_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="lite"):
        PoseEstimator(model="heavy")


def _tarball(folder: Path, member: str, content: bytes) -> str:
    archive = folder / "package.tgz"
    with tarfile.open(archive, "w:gz") as tar:
        info = tarfile.TarInfo(member)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return archive.as_uri()


def test_fetch_checks_the_hash_is_idempotent_and_leaves_nothing_half_written(
    tmp_path: Path,
) -> None:
    content = b"not really a model" * 100
    source = models.Source("tarball", _tarball(tmp_path, "package/m.tflite", content))
    good = models.Asset("m.tflite", hashlib.sha256(content).hexdigest(), source, "package/m.tflite")
    dest = tmp_path / "dest"

    assert models.fetch([good], dest) == [dest / "m.tflite"]
    assert (dest / "m.tflite").read_bytes() == content
    assert models.fetch([good], dest) == []  # already in place: nothing fetched

    (dest / "m.tflite").write_bytes(b"corrupt")  # a damaged file is fetched again
    assert models.fetch([good], dest) == [dest / "m.tflite"]
    assert (dest / "m.tflite").read_bytes() == content

    wrong = models.Asset("w.tflite", "0" * 64, source, "package/m.tflite")
    with pytest.raises(models.FetchError, match="not the pinned"):
        models.fetch([wrong], dest)
    missing = models.Asset("x.tflite", "0" * 64, source, "package/nope.tflite")
    with pytest.raises(models.FetchError, match="has no file package/nope.tflite"):
        models.fetch([missing], dest)
    assert sorted(p.name for p in dest.iterdir()) == ["m.tflite"]


def test_fetch_explains_an_unreachable_source_in_one_line(tmp_path: Path) -> None:
    source = models.Source("tarball", (tmp_path / "absent.tgz").as_uri())
    asset = models.Asset("m.tflite", "0" * 64, source, "package/m.tflite")
    with pytest.raises(models.FetchError) as raised:
        models.fetch([asset], tmp_path / "dest")
    assert "could not download" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_command_line_check_passes_on_the_installed_models(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert models.main(["check"]) == 0
    assert "pose models OK" in capsys.readouterr().out


@pytest.mark.parametrize("model", sorted(LANDMARK_MODELS))
def test_the_landmark_model_without_its_mask_gives_bit_identical_landmarks(
    model: str, run: Run
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    path = models.verified_path(LANDMARK_MODELS[model])
    published = Interpreter(model_path=str(path))
    pruned = Interpreter(model_content=_without_segmentation(str(path.resolve())))
    _, kept = run
    crop = cv2.cvtColor(cv2.resize(kept[90][0:700, 300:1000], (256, 256)), cv2.COLOR_BGR2RGB)
    outputs = []
    for interpreter in (published, pruned):
        interpreter.allocate_tensors()
        interpreter.set_tensor(
            interpreter.get_input_details()[0]["index"], (crop / 255.0).astype(np.float32)[None]
        )
        interpreter.invoke()
        outputs.append(
            {
                d["name"]: interpreter.get_tensor(d["index"])
                for d in interpreter.get_output_details()
            }
        )
    full, without = outputs
    assert len(full) == 5 and len(without) == 4  # the 256×256 mask is gone
    assert [a.shape for a in full.values() if a.shape == (1, 256, 256, 1)]
    for name, value in without.items():
        assert np.array_equal(value, full[name]), name


def test_weighted_nms_merges_overlapping_boxes_and_survives_a_box_without_area() -> None:
    scores = np.array([0.9, 0.6, 0.8, 0.7])
    boxes = np.array(
        [[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60], [30, 30, 30, 30]], np.float64
    )
    keypoints = np.zeros((4, 4, 2))
    keypoints[:, 0] = boxes[:, :2]
    kept = _weighted_nms(scores, boxes, keypoints)
    assert [score for score, _, _ in kept] == [0.9, 0.8, 0.7]
    merged = (0.9 * boxes[0] + 0.6 * boxes[1]) / 1.5  # the best two overlap (IoU 0.68)
    assert np.allclose(kept[0][1], merged)
    assert np.allclose(kept[0][2][0], merged[:2])


# ------------------------------------------------------------------ the estimator on real footage


def test_landmark_names_are_the_33_blazepose_names_in_model_order() -> None:
    assert len(LANDMARK_NAMES) == 33 == len(set(LANDMARK_NAMES))
    assert LANDMARK_NAMES[0] == "nose"
    assert LANDMARK_NAMES[11:13] == ("left_shoulder", "right_shoulder")
    assert LANDMARK_NAMES[15:17] == ("left_wrist", "right_wrist")
    assert LANDMARK_NAMES[23:25] == ("left_hip", "right_hip")
    assert LANDMARK_NAMES[-1] == "right_foot_index"


@pytest.mark.slow
def test_the_estimator_follows_the_man_through_the_clip_and_never_the_woman(run: Run) -> None:
    observations, _ = run
    seen = {i: o for i, o in observations.items() if o is not None}
    strangers = [(i, hips(o).round().tolist()) for i, o in seen.items() if not is_the_man(i, o)]
    assert strangers == []
    # He is seen on nearly every sample while on the box, and again once he has landed.
    on_the_box = [i for i in observations if 6 <= i <= 156]
    assert sum(observations[i] is not None for i in on_the_box) >= 0.95 * len(on_the_box)
    walking_away = [i for i in observations if 198 <= i <= 225]
    assert all(observations[i] is not None for i in walking_away)


@pytest.mark.slow
def test_his_wrists_are_above_his_shoulders_in_the_jumping_jacks_and_below_between(
    run: Run,
) -> None:
    observations, _ = run
    assert_arms_follow_the_jumping_jacks(observations)


@pytest.mark.slow
def test_the_detector_runs_once_while_he_stays_in_view(run: Run) -> None:
    observations, _ = run
    detections = [i for i, o in observations.items() if o is not None and o.detected and i <= 156]
    assert len(detections) == 1, detections
    first = min(i for i, o in observations.items() if o is not None)
    assert detections == [first]


@pytest.mark.slow
def test_an_observation_is_well_formed(run: Run) -> None:
    observations, _ = run
    observation = observations[90]
    assert observation is not None
    assert observation.landmarks.shape == (33, 3) and observation.landmarks.dtype == np.float32
    assert observation.world.shape == (33, 3) and observation.world.dtype == np.float32
    assert observation.visibility.shape == observation.presence.shape == (33,)
    assert 0 <= observation.visibility.min() and observation.visibility.max() <= 1
    assert 0.5 < observation.score <= 1
    x0, y0, x1, y1 = observation.box
    assert (x0, y0) == tuple(observation.landmarks[:, :2].min(axis=0))
    assert (x1, y1) == tuple(observation.landmarks[:, :2].max(axis=0))
    # A standing man about 100 px of torso, on the box in the frame's upper half.
    assert 450 < x0 < x1 < 850 and 0 < y0 < y1 < 560
    # World landmarks: metres, centred between the hips, a person's height from nose to ankles.
    world = observation.world
    assert np.abs(world[HIPS].mean(axis=0)).max() < 0.05
    height = world[[27, 28], 1].mean() - world[0, 1]
    assert 1.2 < height < 2.0


@pytest.mark.slow
def test_a_frame_with_no_one_gives_none(estimator: PoseEstimator, run: Run) -> None:
    _, kept = run
    estimator.reset()
    scenery = cv2.resize(kept[0][0:400, 0:480], (1768, 994))  # buildings and trees, no one
    assert estimator.process(scenery) is None
    assert estimator.detect(scenery) == []
    assert estimator.process(np.zeros((994, 1768, 3), np.uint8)) is None


@pytest.mark.slow
def test_a_cut_to_an_empty_scene_and_back_loses_him_then_finds_him_again(
    demo: Path, estimator: PoseEstimator
) -> None:
    # He walks away to the right from frame 198 on, alone; frames 210–219 are replaced by an
    # empty scene. (On the box the detector finds him in a few frames only: small and backlit.)
    estimator.reset()
    before, cut, after = [], [], []
    for i, frame in clip_frames(demo, 228):
        if i == 0:
            empty = cv2.resize(frame[0:400, 0:480], frame.shape[1::-1])
        if i < 196 or i % 2:
            continue
        if i < 210:
            before.append(estimator.process(frame, i / FPS))
        elif i < 220:
            cut.append(estimator.process(empty, i / FPS))
        else:
            after.append(estimator.process(frame, i / FPS))
    assert before[-1] is not None and not before[-1].detected
    assert cut == [None] * len(cut)
    # Found again on the first or second frame back (the detector misses him on some frames).
    found = next(k for k, o in enumerate(after) if o is not None)
    assert found <= 1
    assert after[found] is not None and after[found].detected
    assert len(after) - found >= 3
    assert all(o is not None and not o.detected for o in after[found + 1 :])
    assert all(is_the_man(220, o) for o in before + after if o is not None)


@pytest.mark.slow
def test_reset_forgets_the_person_and_the_next_call_detects(
    estimator: PoseEstimator, run: Run
) -> None:
    _, kept = run
    estimator.reset()
    first = estimator.process(kept[215], 0.0)
    second = estimator.process(kept[215], 0.1)
    assert first is not None and first.detected
    assert second is not None and not second.detected
    estimator.reset()
    third = estimator.process(kept[215], 0.2)
    assert third is not None and third.detected


@pytest.mark.slow
def test_detect_lists_candidates_and_follow_tracks_the_one_chosen(
    estimator: PoseEstimator, run: Run
) -> None:
    _, kept = run
    estimator.reset()
    candidates = estimator.detect(kept[215])
    assert candidates and all(isinstance(c, PoseCandidate) for c in candidates)
    assert [c.score for c in candidates] == sorted((c.score for c in candidates), reverse=True)
    best = candidates[0]
    assert 0.5 <= best.score <= 1 and best.keypoints.shape == (4, 2)
    estimator.follow(best)
    observation = estimator.process(kept[215], 0.0)
    assert observation is not None
    # Followed from the candidate's crop: no detection, and the body the candidate pointed at.
    assert not observation.detected
    assert np.hypot(*(hips(observation) - best.keypoints[0])) < best.body_size / 2


@pytest.mark.slow
def test_the_full_model_sees_the_jumping_jacks_too(demo: Path) -> None:
    estimator = PoseEstimator(model="full")
    observations = {
        i: estimator.process(frame, i / FPS) for i, frame in clip_frames(demo, 70) if i % STEP == 0
    }
    assert all(is_the_man(i, o) for i, o in observations.items() if o is not None)
    assert_arms_follow_the_jumping_jacks(observations)


@pytest.mark.slow
def test_grey_bgra_and_strided_frames_are_read_as_their_bgr_equivalent(run: Run) -> None:
    _, kept = run
    # Each pair is followed from the same start (the detector finds him in colour only).
    grey = cv2.cvtColor(kept[208], cv2.COLOR_BGR2GRAY)
    mirrored = kept[208][:, ::-1]
    cases = [
        (kept[204], grey, cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)),
        (kept[204], grey[:, :, None], cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)),
        (kept[204], cv2.cvtColor(kept[208], cv2.COLOR_BGR2BGRA), kept[208]),
        (kept[204][:, ::-1], mirrored, np.ascontiguousarray(mirrored)),
    ]
    for k, (start, odd, plain) in enumerate(cases):
        results = []
        for frame in (odd, plain):
            estimator = PoseEstimator()
            assert estimator.process(start, 0.0) is not None, f"case {k}"
            results.append(estimator.process(frame, 0.1))
        assert results[0] is not None and results[1] is not None, f"case {k}"
        assert np.array_equal(results[0].landmarks, results[1].landmarks), f"case {k}"


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((0, 0, 3), np.uint8),
        np.zeros((480, 640, 3), np.uint8),
        np.full((8000, 10, 3), 200, np.uint8),
        np.full((10, 8000, 3), 200, np.uint8),
        np.full((40000, 20, 3), 90, np.uint8),
        np.zeros((480, 640, 2), np.uint8),
        np.zeros((480, 640, 3), np.float32),
        np.zeros((480, 640, 3, 1), np.uint8),
        np.random.default_rng(0).integers(0, 256, (333, 517, 3), dtype=np.uint8),
        "not an image",
    ],
    ids=[
        "1x1",
        "empty",
        "black",
        "8000x10",
        "10x8000",
        "40000x20",
        "2-channel",
        "float",
        "4-d",
        "noise",
        "a string",
    ],
)
def test_odd_inputs_give_none_without_raising(estimator: PoseEstimator, frame: object) -> None:
    estimator.reset()
    assert estimator.process(frame) is None
    assert estimator.detect(frame) == []
