"""Tests of the motion-based set and rep finder on synthetic signals (analysis/motion_workout.py).
Its accuracy on whole clips is asserted in test_railway_video_generator.py."""

from __future__ import annotations

import threading
import tracemalloc

import numpy as np
import pytest

from analysis import motion_workout
from analysis.errors import AnalysisCancelled
from analysis.options import AnalysisOptions
from tests.synthetic import SIGNAL_RATE as RATE
from tests.synthetic import periodic_signal as _sine_pose


def test_find_sets_separates_two_sets_from_still_rest() -> None:
    rest = np.zeros((60, 8))
    first = _sine_pose(12, 2.0, seed=1) * 10
    second = _sine_pose(8, 1.0, seed=2) * 10
    pose = np.concatenate([rest, first, rest, second, rest])
    pose += 0.05 * np.random.default_rng(0).standard_normal(pose.shape)
    energy = np.where(np.abs(pose).sum(axis=1) > 1, 0.05, 0.0)
    times = np.arange(len(pose)) / RATE
    options = AnalysisOptions()
    period, strength = motion_workout.periodicity(pose, options)
    sets = motion_workout.find_sets(times, energy, pose, period, strength, options)
    assert len(sets) == 2
    assert sets[0].start == pytest.approx(6.0, abs=1.0) and sets[0].end == pytest.approx(18, abs=1)
    assert sets[1].start == pytest.approx(24.0, abs=1.0) and sets[1].end == pytest.approx(32, abs=1)


def test_runs_with_the_same_period_merge_and_runs_with_another_period_do_not() -> None:
    period = np.full(100, 15)
    period[70:] = 25
    strength = np.ones(100)
    merged = motion_workout.merge_runs([(0, 20), (40, 60), (70, 100)], period, strength, 0.5)
    assert [(a, b) for a, b, _ in merged] == [(0, 60), (70, 100)]


def test_edge_reps_are_kept_but_a_wiggle_off_the_plane_of_motion_is_not() -> None:
    t = np.arange(0, 20, 0.1)
    rep = (1 - np.cos(2 * np.pi * t / 2.0)) / 2  # reps from t=0 to 16 s, rest pose 0 after
    rep[t >= 16] = 0
    wiggle = np.where((t > 17) & (t < 18), np.sin(np.pi * (t - 17)), 0.0)  # another joint
    rng = np.random.default_rng(0)
    pose = np.stack([rep, 0.5 * rep, wiggle, 0.8 * wiggle], axis=1)
    pose += 0.01 * rng.standard_normal(pose.shape)
    signal = rep + 1.0 * wiggle  # the rep signal alone cannot tell the wiggle from a rep
    core = slice(30, 130)  # the detector found only the middle of the set
    peaks = motion_workout.count_cycles(signal, core, 20.0, [pose, pose], signal)
    assert [round(p / 10, 1) for p in peaks] == [1.0 + 2.0 * k for k in range(8)]


def test_a_rise_after_the_set_that_does_not_come_back_before_the_margin_ends_is_no_rep() -> None:
    t = np.arange(0, 18, 0.1)  # the set's margin; the video goes on after it
    rep = (1 - np.cos(2 * np.pi * t / 2.0)) / 2  # reps from t=0 to 16 s
    rep[t >= 16] = 0
    fidget = np.interp(t, [16.5, 17.0, 17.5], [0.0, 1.0, 0.0])  # fidgeting, then standing still
    level = np.concatenate([rep + fidget, np.zeros(100)])  # back in the start pose by 17.5 s
    pose = np.stack([level, 0.5 * level], axis=1)[: t.size]
    pose += 0.01 * np.random.default_rng(0).standard_normal(pose.shape)
    # The detrended rep signal rises to rep height and hovers mid-way until the margin ends.
    signal = rep + np.interp(t, [16.5, 17.0, 17.5], [0.0, 1.0, 0.5])
    core = slice(30, 130)
    peaks = motion_workout.count_cycles(signal, core, 20.0, [pose, pose], level)
    assert [round(p / 10, 1) for p in peaks] == [1.0 + 2.0 * k for k in range(8)]
    # The same rise cut short by the end of the video may be a rep that finished off camera.
    assert len(motion_workout.count_cycles(signal, core, 20.0, [pose, pose], level[: t.size])) == 9


def test_periodicity_memory_does_not_grow_with_length_times_lag() -> None:
    # 20 minutes at 30 samples/s: the whole similarity matrix would be 36,000 x 200 doubles
    # (58 MB) and its working copies several times that.
    options = AnalysisOptions(sample_fps=30.0)
    pose = _sine_pose(1200, 2.0, dims=64, noise=0.2, rate=30.0) * 10
    tracemalloc.start()
    try:
        period, _ = motion_workout.periodicity(pose, options)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 40e6, f"peak {peak / 1e6:.0f} MB"
    assert np.median(period[1000:-1000]) == 60  # 2 s at 30 samples/s


def test_periodicity_stops_at_once_when_cancelled() -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(AnalysisCancelled):
        motion_workout.periodicity(_sine_pose(600, 2.0), AnalysisOptions(), cancel)
