"""Tests of the camera-motion tracker (analysis/camera.py)."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from analysis.camera import CameraTracker


def test_camera_tracker_recovers_a_known_shift_to_a_twentieth_of_a_pixel() -> None:
    rng = np.random.default_rng(2)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (200, 300)).astype(np.float32), (0, 0), 2.0)
    tracker = CameraTracker()
    tracker.anchor(texture[20:164, 20:276].copy())
    for dx, dy in [(3, 0), (0, -5), (-7, 6), (9, 9)]:
        moved = texture[20 - dy : 164 - dy, 20 - dx : 276 - dx].copy()
        shift = tracker.locate(moved, (0.0, 0.0))
        assert shift == pytest.approx((dx, dy), abs=0.05)


def test_a_moving_person_does_not_pull_the_camera_estimate() -> None:
    rng = np.random.default_rng(3)
    texture = cv2.GaussianBlur(rng.uniform(0, 255, (200, 300)).astype(np.float32), (0, 0), 2.0)
    reference = texture[20:164, 20:276].copy()
    tracker = CameraTracker()
    tracker.anchor(reference)
    frame = texture[18:162, 24:280].copy()  # the camera moved by (-4, 2)
    frame[40:110, 100:150] = 250.0  # a bright "person" appears in the middle tile
    assert tracker.locate(frame, (0.0, 0.0)) == pytest.approx((-4, 2), abs=0.1)
