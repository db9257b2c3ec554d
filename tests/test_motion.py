"""Tests of the per-sample motion maths and cut detection (analysis/motion.py), on real clips."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from analysis.motion import scene_cuts
from railway_video_generator import AnalysisOptions, RailwayVideoGenerator

SIZE = (320, 240)
FPS = 30.0


def _background(seed: int, scale: int = 2, blur: float = 2.0) -> np.ndarray:
    """Textured noise; a large `blur` makes blobs a shot can be told from another by."""
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (SIZE[1] * scale, SIZE[0] * scale, 3), dtype=np.uint8)
    image = cv2.GaussianBlur(noise, (0, 0), blur)
    return cv2.normalize(image, None, 0, 255, cv2.NORM_MINMAX)


def _write(path: Path, frames: Iterator[np.ndarray]) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), FPS, SIZE)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path


def _passer_by(speed: float) -> Iterator[np.ndarray]:
    """A dark body close to the lens, taller than the frame, crossing it again and again."""
    width, height = SIZE
    room = _background(1)[:height, :width]
    for i in range(240):
        frame = room.copy()
        x = int(speed * i) % (width + 500) - 250
        cv2.ellipse(frame, (x + 125, height // 2), (110, 200), 0, 0, 360, (40, 30, 30), -1)
        yield frame


def _zoom(factor: float) -> Iterator[np.ndarray]:
    width, height = SIZE
    room = _background(2)
    for i in range(240):
        matrix = cv2.getRotationMatrix2D((width, height), 0, 1.0 + (factor - 1) * i / 240)
        yield cv2.warpAffine(room, matrix, (2 * width, 2 * height))[
            height // 2 : height // 2 + height, width // 2 : width // 2 + width
        ]


def _pan(pixels_per_frame: float) -> Iterator[np.ndarray]:
    width, height = SIZE
    room = _background(3, scale=4)
    for i in range(240):
        x = int(pixels_per_frame * i) % (3 * width)
        yield room[:height, x : x + width]


def _bobbing(room: np.ndarray, start: int, count: int) -> Iterator[np.ndarray]:
    width, height = SIZE
    for i in range(start, start + count):
        frame = room[:height, :width].copy()
        y = int(height / 2 + 40 * np.sin(2 * np.pi * i / FPS))
        cv2.rectangle(frame, (160, y - 20), (180, y + 20), (240, 240, 240), -1)
        yield frame


def _reasons(path: Path) -> list[tuple[float, float, str]]:
    options = AnalysisOptions(highlight_seconds=2.0, max_highlights=5)
    result = RailwayVideoGenerator(options).generate_highlights(path)
    return [(h.start, h.end, h.reason) for h in result.highlights]


@pytest.mark.parametrize(
    "moving",
    [
        pytest.param(lambda: _passer_by(20), id="passer-by at 600 px/s"),
        pytest.param(lambda: _passer_by(40), id="passer-by at 1200 px/s"),
        pytest.param(lambda: _zoom(4.0), id="zoom 4x in 8 s"),
        pytest.param(lambda: _pan(12), id="pan at 360 px/s"),
    ],
)
def test_a_smoothly_moving_subject_or_camera_is_never_a_scene_change(
    tmp_path: Path, moving
) -> None:
    path = _write(tmp_path / "moving.mp4", moving())
    reasons = _reasons(path)
    assert reasons and all(reason != "scene_change" for _, _, reason in reasons)


def test_a_cut_between_two_moving_scenes_is_a_scene_change(tmp_path: Path) -> None:
    # Two rooms (large blobs, as walls and furniture are), a block bobbing in each.
    first, second = _background(4, blur=20), _background(5, blur=20)
    frames = [*_bobbing(first, 0, 120), *_bobbing(second, 120, 120)]
    path = _write(tmp_path / "cut.mp4", iter(frames))
    reasons = _reasons(path)
    at_cut = [reason for start, end, reason in reasons if start <= 4.0 < end]
    assert at_cut == ["scene_change"]
    assert all(reason != "scene_change" for start, end, reason in reasons if not start <= 4.0 < end)


def test_scene_cuts_are_isolated_jumps_between_steady_shots() -> None:
    change = np.array([0.0, 0.1, 0.05, 0.95, 0.1, 0.0, 0.6, 0.9, 0.7, 0.8, 0.1, 0.0])
    assert np.flatnonzero(scene_cuts(change)).tolist() == [3]
