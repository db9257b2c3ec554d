"""Tests of the signal helpers on synthetic signals (analysis/signals.py)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis import signals
from tests.synthetic import SIGNAL_RATE as RATE
from tests.synthetic import periodic_signal as _sine_pose


@pytest.mark.parametrize("period", [0.6, 1.0, 2.5, 5.5])
def test_local_period_finds_the_repetition_period(period: float) -> None:
    pose = _sine_pose(40, period, noise=0.1)
    similarity = signals.self_similarity(pose, max_lag=70, min_half_window=15)
    lags, strength = signals.local_period(similarity, min_lag=5, max_lag=70)
    middle = slice(len(pose) // 2 - 20, len(pose) // 2 + 20)
    assert np.median(lags[middle]) / RATE == pytest.approx(period, abs=0.11)
    assert np.median(strength[middle]) > 0.8


def test_local_period_does_not_report_twice_the_period() -> None:
    pose = _sine_pose(40, 1.2, noise=0.05)
    similarity = signals.self_similarity(pose, max_lag=70, min_half_window=15)
    lags, _ = signals.local_period(similarity, min_lag=5, max_lag=70)
    assert np.median(lags[100:300]) == 12


def test_smooth_random_motion_is_not_periodic() -> None:
    rng = np.random.default_rng(3)
    walk = np.cumsum(rng.standard_normal((400, 8)), axis=0)
    pose = np.stack([signals.gaussian_smooth(walk[:, k], 4) for k in range(8)], axis=1)
    similarity = signals.self_similarity(pose, max_lag=70, min_half_window=15)
    _, strength = signals.local_period(similarity, min_lag=5, max_lag=70)
    assert np.mean(strength > 0.45) < 0.1


def test_hysteresis_counts_one_peak_per_cycle_despite_noise() -> None:
    rng = np.random.default_rng(0)
    t = np.arange(0, 20, 0.1)
    signal = np.sin(2 * np.pi * t / 2.0) + 0.2 * rng.standard_normal(t.size)
    assert len(signals.hysteresis_peaks(signal, -0.3, 0.3)) == 10


def test_hysteresis_ignores_wiggles_that_never_cross_both_levels() -> None:
    signal = np.array([0, 0.5, 0.2, 0.5, 0.2, 0.5, 0, 0], dtype=float)
    assert signals.hysteresis_peaks(signal, 0.1, 0.4) == [1]


def test_runs_and_gap_closing_segment_a_mask() -> None:
    mask = np.array([0, 1, 1, 0, 1, 1, 0, 0, 0, 1], dtype=bool)
    assert signals.runs(mask) == [(1, 3), (4, 6), (9, 10)]
    assert signals.runs(signals.close_gaps(mask, 1)) == [(1, 6), (9, 10)]


def test_leading_axes_are_the_covariance_eigenvectors() -> None:
    rng = np.random.default_rng(1)
    samples = rng.standard_normal((300, 16)) * np.linspace(4, 0.5, 16)
    samples -= samples.mean(axis=0)
    axes = signals.leading_axes(samples, 2)
    _, vectors = np.linalg.eigh(samples.T @ samples)
    assert abs(axes[:, 0] @ vectors[:, -1]) > 0.999 and abs(axes[:, 1] @ vectors[:, -2]) > 0.999


def test_similarity_computed_in_blocks_equals_the_whole_matrix() -> None:
    pose = _sine_pose(120, 1.7, noise=0.3)
    whole = signals.self_similarity(pose, max_lag=70, min_half_window=15)
    blocks = [
        signals.self_similarity(pose, 70, 15, slice(start, start + 97))
        for start in range(0, len(pose), 97)
    ]
    np.testing.assert_allclose(np.vstack(blocks), whole, rtol=1e-9, atol=1e-9, equal_nan=True)


def test_a_dip_that_stops_short_of_the_low_level_splits_two_peaks_only_when_asked() -> None:
    # Two reps (tops 1.0 and 1.1) whose return between them stops at 0.45, above the low level.
    signal = np.array([0.0, 0.5, 1.0, 0.7, 0.45, 0.8, 1.1, 0.5, 0.0])
    assert signals.hysteresis_peaks(signal, 0.35, 0.65) == [6]
    assert signals.hysteresis_peaks(signal, 0.35, 0.65, dip=0.45) == [2, 6]
    # A wobble at the top smaller than the dip is one peak.
    wobble = np.array([0.0, 0.5, 1.0, 0.8, 0.7, 0.9, 1.1, 0.5, 0.0])
    assert signals.hysteresis_peaks(wobble, 0.35, 0.65, dip=0.45) == [6]
