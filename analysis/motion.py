"""Per-sample frame maths of the motion analysis: brightness normalisation, camera-motion
removal, the fraction of moving pixels, cut detection and a compact pose-grid summary.

`MotionDetector.process_frame` turns one sampled frame into a few numbers (a few bytes per sample,
whatever the resolution): what the highlights, cut detection and the motion-based workout
analysis (the fallback when no person is seen) are computed from. Its answer (`MotionSample`)
also holds the sample's moving-pixel mask, so the detector may run ahead of whoever asks where
the athlete moved (the pipeline measures motion in a thread of its own).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from analysis.camera import CameraTracker, common_window, shift_image
from analysis.options import AnalysisOptions

CUT_CHANGE = 0.7
"""Picture change (1 - correlation of two consecutive coarse frames) from which two samples may
lie on either side of a cut; `scene_cuts` decides which really do."""

_STEADY_CHANGE = 0.4
"""Most picture change of the samples right before and after a cut: both shots are steady."""

ENERGY_FLOOR = 0.005
"""Fraction of moving pixels that counts as real motion when scaling scores and intensities, so a
still video scores near 0 instead of its noise being stretched to 1."""


def downscale(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a frame fast. INTER_AREA straight from 1080p costs ~8 ms in OpenCV 5; picking every
    other pixel down to twice the target and then averaging 2x2 costs ~0.3 ms and still averages
    four samples per output pixel (noise is blurred further downstream anyway)."""
    width, height = size
    if frame.shape[1] >= 2 * width and frame.shape[0] >= 2 * height:
        frame = cv2.resize(frame, (2 * width, 2 * height), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


@dataclass(frozen=True, eq=False)
class MotionSample:
    """What `MotionDetector.process_frame` measured on one sample."""

    energy: float
    """Fraction of moving pixels (camera motion removed)."""
    change: float
    """Picture change since the last sample: 1 minus the correlation of the two coarse frames,
    about 0 for the same picture, about 1 for unrelated pictures (a cut, or something large
    sweeping past)."""
    pose: np.ndarray
    """The pose-grid summary (`projection_dims` numbers)."""
    moving: np.ndarray | None
    """The moving-pixel mask, in aligned coordinates from `window`; None on the first sample."""
    window: tuple[int, int]
    """Where the mask's corner lies in the aligned frame (x, y)."""
    shift: tuple[float, float]
    """The camera's shift of this sample (aligned = frame - shift), analysis pixels."""
    scale: float
    """Analysis pixels per frame pixel."""

    def moving_fraction_in(self, box: tuple[float, float, float, float]) -> float | None:
        """The fraction of moving pixels inside `box` (x0, y0, x1, y1 in the frame's pixels):
        whether the athlete moves, whatever else in the picture does. None on the first sample
        or when the box lies outside what was measured."""
        if self.moving is None:
            return None
        # Aligned coordinates are the frame's minus the camera's shift, here relative to the
        # measured window's corner.
        x0 = round(box[0] * self.scale - self.shift[0]) - self.window[0]
        x1 = round(box[2] * self.scale - self.shift[0]) - self.window[0]
        y0 = round(box[1] * self.scale - self.shift[1]) - self.window[1]
        y1 = round(box[3] * self.scale - self.shift[1]) - self.window[1]
        height, width = self.moving.shape
        part = self.moving[max(0, y0) : min(height, y1), max(0, x0) : min(width, x1)]
        return float(part.mean()) if part.size else None


class MotionDetector:
    """Per-sample frame maths: brightness normalisation, camera-motion removal, motion, pose."""

    def __init__(self, width: int, height: int, options: AnalysisOptions) -> None:
        self.options = options
        # Portrait video: bound the long side instead, so a 1080x1920 phone clip costs the same.
        scale = options.analysis_width / max(width, height)
        self.size = (max(16, round(width * scale)), max(16, round(height * scale)))
        grid_scale = options.grid_width / max(self.size)
        self.grid = (
            max(4, round(self.size[0] * grid_scale)),
            max(4, round(self.size[1] * grid_scale)),
        )
        rng = np.random.default_rng(12345)
        cells = self.grid[0] * self.grid[1]
        self.projection = (
            rng.standard_normal((cells, options.projection_dims))
            / math.sqrt(options.projection_dims)
        ).astype(np.float32)
        self.camera = CameraTracker()
        self.reference: np.ndarray | None = None
        self.prev_aligned: np.ndarray | None = None
        self.prev_cells: np.ndarray | None = None
        self.prev_shift = (0.0, 0.0)
        self.shift = (0.0, 0.0)
        self.frame_size = (width, height)

    def _anchor(self, grey: np.ndarray) -> None:
        self.reference = grey
        self.camera.anchor(grey)
        self.shift = (0.0, 0.0)

    def process_frame(self, frame: np.ndarray) -> MotionSample:
        """Measure one sample: moving fraction, picture change since the last sample, pose
        vector and the moving-pixel mask (see `MotionSample`)."""
        grey: np.ndarray = cv2.cvtColor(downscale(frame, self.size), cv2.COLOR_BGR2GRAY)
        grey = grey.astype(np.float32)
        # Flicker and auto-exposure change the gain of the whole frame; undo it.
        grey *= 128.0 / max(float(grey.mean()), 1.0)
        # Sensor noise is per pixel; a light blur stops it from counting as motion.
        grey = cv2.GaussianBlur(grey, (5, 5), 1.2)
        energy, change = 0.0, 0.0
        moving: np.ndarray | None = None
        window = (0, 0)
        self.prev_shift = self.shift
        if self.reference is None:
            self._anchor(grey)
        else:
            shift = self.camera.locate(grey, self.shift)
            if (
                shift is None
                or abs(shift[0]) > self.size[0] / 5
                or abs(shift[1]) > self.size[1] / 5
            ):
                # Lost (a cut, a textureless view) or too little overlap left with the reference
                # (a pan): start again from this frame.
                self._anchor(grey)
            else:
                self.shift = shift
        # Where the camera has drifted away, keep what was last seen there (a mosaic): the frame's
        # border then does not change with every wobble of the camera, and no motion is invented.
        fill = self.prev_aligned if self.prev_aligned is not None else self.reference
        aligned = shift_image(grey, self.shift, fill)
        if self.prev_aligned is not None:
            xs, ys = common_window(self.size, self.prev_shift, self.shift)
            diff = cv2.absdiff(aligned[ys, xs], self.prev_aligned[ys, xs])
            moving = diff > self.options.diff_threshold
            energy = float(moving.mean()) if moving.size else 0.0
            window = (xs.start, ys.start)
        self.prev_aligned = aligned
        # A cut replaces the whole picture: the coarse frames stop correlating. (Counting moving
        # pixels misses cuts between two low-contrast scenes.) Judged on the frames as filmed:
        # the camera-compensated ones jump whenever the tracker re-anchors.
        raw_cells = cv2.resize(grey, self.grid, interpolation=cv2.INTER_AREA)
        if self.prev_cells is not None:
            change = 1.0 - _correlation(raw_cells, self.prev_cells)
        self.prev_cells = raw_cells
        cells = cv2.resize(aligned, self.grid, interpolation=cv2.INTER_AREA)
        # Thin limbs sweep through cells abruptly; blurring the grid makes the pose vector a smooth
        # function of the pose, so slightly different timings of one movement stay close.
        cells = cv2.GaussianBlur(cells, (0, 0), self.options.grid_blur).reshape(-1)
        scale = self.size[0] / self.frame_size[0]
        return MotionSample(
            energy, change, cells @ self.projection, moving, window, self.shift, scale
        )


def scene_cuts(change: np.ndarray) -> np.ndarray:
    """Which samples start a new shot, from each sample's picture change (`process_frame`).

    A cut is an isolated jump: the picture changes completely between two samples and hardly
    just before and just after (both shots are steady around it). Something large moving past
    the lens, a fast zoom or a pan change the picture as much, but at every sample in a row, so
    they are not cuts."""
    before = np.concatenate([[0.0], change[:-1]])
    after = np.concatenate([change[1:], [0.0]])
    neighbours = np.maximum(before, after)
    return (
        (change >= CUT_CHANGE)
        & (neighbours <= _STEADY_CHANGE)
        & (change >= 2.5 * np.maximum(neighbours, 0.05))
    )


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images (1 for the same picture, about 0 for unrelated ones)."""
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 1.0
