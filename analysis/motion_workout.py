"""Sets and repetitions from the motion analysis alone: the fallback when no person is seen.

A pose that repeats shows as a high self-similarity of the per-sample pose-grid vectors at the rep
period. Stretches that are both moving and periodic become sets; everything else (stillness,
fidgeting, adjusting) is rest. In each set the samples are projected on their leading principal
component, and a hysteresis counter turns that one-dimensional signal into repetitions; reps at
the edges of a set count only if they keep its rhythm, stay in its plane of motion and pass
through its start pose.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

from analysis.options import AnalysisOptions
from analysis.signals import (
    box_smooth,
    close_gaps,
    gaussian_smooth,
    hysteresis_peaks,
    leading_axes,
    local_periodicity,
    runs,
)
from analysis.video import stop_if_cancelled
from analysis.workout import FoundSet


def count_cycles(
    signal: np.ndarray,
    core: slice,
    period: float,
    poses: list[np.ndarray] | None = None,
    level: np.ndarray | None = None,
    level_offset: int = 0,
    dip: float | None = None,
) -> list[int]:
    """Rep peaks of a 1-D rep signal whose set occupies `core`; the rest is margin on either side.

    Levels come from the set itself (10th/90th percentiles). Peaks in the margins join only if they
    continue the rhythm (0.6..1.45 of the typical spacing from a counted rep), reach a rep-like
    height and, when the frames' pose vectors are given, stay in the set's plane of motion
    (`_off_plane_test`): a wave or a stretch of one arm next to a set of curls is not a curl.
    With `level` (the rep axis projection, not detrended, over the whole video; index i of the
    signal is `level_offset + i` there), an edge rep must also pass through the set's start pose
    on its outer side, as a first rep starts from it and a last rep returns to it; walking off
    into another pose after the set makes no rep. (Judging that on whole pose vectors instead
    was tried: camera drift and shuffling then rejected real edge reps on held-out clips.)
    A peak after the set must also fall back below the low level before the signal ends, unless
    the signal ends with the video. With `dip` (a fraction of the set's amplitude), two reps
    whose return between them stops short of the low level are still two (`hysteresis_peaks`).
    """
    core_values = signal[core]
    if core_values.size < 3:
        return []
    bottom, top = np.percentile(core_values, [10, 90])
    amplitude = top - bottom
    if amplitude <= 0:
        return []
    peaks = hysteresis_peaks(
        signal,
        bottom + 0.35 * amplitude,
        bottom + 0.65 * amplitude,
        None if dip is None else dip * amplitude,
    )
    inside = [p for p in peaks if core.start <= p < core.stop]
    if not inside:
        return []
    typical = float(np.median(signal[inside]))
    min_height = bottom + 0.5 * (typical - bottom)
    spacing = float(np.median(np.diff(inside))) if len(inside) > 1 else period
    if poses:
        looks_like_rep = _off_plane_test(poses, core, inside, spacing, (4.0, 3.5))
    else:

        def looks_like_rep(_: int) -> bool:
            return True

    reach = max(1, int(round(spacing)))
    if level is not None:
        in_core = level[core.start + level_offset : core.stop + level_offset]
        low_level, high_level = np.percentile(in_core, [10, 90])
        start_pose = low_level + 0.35 * (high_level - low_level)

    def passes_start_pose(p: int, outwards: int) -> bool:
        if level is None:
            return True
        p += level_offset
        lo, hi = (p + 1, p + 1 + reach) if outwards > 0 else (p - reach, p)
        window = level[max(0, lo) : max(0, hi)]
        # Cut short by the end of the video: the rep may well have finished off camera.
        return window.size < reach // 2 or float(window.min()) <= start_pose

    low = bottom + 0.35 * amplitude
    # The signal stops short of the video's end (at the margin of the set, not the last frame).
    cut_short = level is None or level_offset + signal.size < level.size

    def closes(p: int, outwards: int) -> bool:
        # A rep after the set must fall back below the low level, as `_hysteresis_peaks` demands
        # of every count except one still open at the video's end. Fidgeting right after a set
        # can rise to rep height and hover there until the margin ends; that is no rep.
        return outwards < 0 or not cut_short or bool((signal[p + 1 :] < low).any())

    def continues(gap: int, p: int, outwards: int) -> bool:
        return (
            0.6 * spacing <= gap <= 1.45 * spacing
            and signal[p] >= min_height
            and closes(p, outwards)
            and looks_like_rep(p)
            and passes_start_pose(p, outwards)
        )

    kept = list(inside)
    for p in reversed([p for p in peaks if p < core.start]):
        if not continues(kept[0] - p, p, -1):
            break
        kept.insert(0, p)
    for p in [p for p in peaks if p >= core.stop]:
        if not continues(p - kept[-1], p, +1):
            break
        kept.append(p)
    return kept


def _off_plane_test(
    poses: list[np.ndarray],
    core: slice,
    peaks: list[int],
    spacing: float,
    limits: tuple[float, ...],
) -> Callable[[int], bool]:
    """A test that the movement around a frame stays in the set's plane of motion.

    A set's frames lie close to a plane in pose space (their two leading principal components):
    one movement, repeated. Fidgeting, adjusting or stepping aside leaves that plane, even when one
    of its peaks happens to reach rep height on the rep signal. For each pose representation in
    `poses` (raw: catches a step aside; detrended: immune to camera drift), the distance to the
    plane over a rep-long window must stay within `limits` times that of the set's own reps.
    """
    half = max(1, int(round(spacing / 2)))
    tests = []
    for pose, limit in zip(poses, limits, strict=True):
        inside = pose[core]
        mean = inside.mean(axis=0)
        plane = leading_axes(inside - mean, 2)

        def off_plane(p: int, pose=pose, mean=mean, plane=plane) -> float:
            centred = pose[max(0, p - half) : p + half + 1] - mean
            return float(np.linalg.norm(centred - (centred @ plane) @ plane.T, axis=1).mean())

        typical = float(np.median([off_plane(p) for p in peaks]))
        tests.append((off_plane, limit * typical))
    return lambda p: all(off_plane(p) <= bound for off_plane, bound in tests)


def _rep_signal(
    pose: np.ndarray, core: slice, margin: slice, period: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project frames on the leading principal component of the set in `core`.

    Returns the rep signal over `margin` (detrended, smoothed), the detrended pose over `margin`
    and the raw projection of every sample (not detrended, so rest pose keeps its level). The sign
    of the axis is arbitrary; see `_rest_is_low`.
    """
    window = max(1, int(round(period)))
    trend = np.stack([box_smooth(pose[margin, k], window) for k in range(pose.shape[1])], axis=1)
    # Subtracting a one-period moving average removes slow drift (the person shuffling, residual
    # camera drift) and keeps the repetition, whatever its phase.
    detrended = pose[margin] - trend
    offset = core.start - margin.start
    core_local = slice(offset, offset + core.stop - core.start)
    centred = detrended[core_local] - detrended[core_local].mean(axis=0)
    axis = leading_axes(centred, 1)[:, 0]
    signal = gaussian_smooth((detrended - detrended[core_local].mean(axis=0)) @ axis, period / 10)
    raw = (pose - pose[core].mean(axis=0)) @ axis
    return signal, detrended, raw


def _rest_is_low(raw: np.ndarray, core: slice, reference: np.ndarray) -> bool:
    """Whether rest pose projects below the set's average, i.e. rep turning points are peaks.

    `reference` holds the raw projection of nearby rest samples. Without any (the set fills the
    video), the set's own first and last moments stand in: a set starts and ends at rest pose.
    """
    if reference.size < 3:
        edge = max(2, (core.stop - core.start) // 20)
        reference = np.concatenate([raw[core][:edge], raw[core][-edge:]])
    return bool(np.median(reference) <= np.median(raw[core]))


def periodicity(
    pose: np.ndarray, options: AnalysisOptions, cancel_event: threading.Event | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of a uniform grid: local repetition period (samples, 0 = none) and strength."""
    return local_periodicity(
        pose, options.sample_fps, options.min_period, options.max_period, cancel_event
    )


def merge_runs(
    runs: list[tuple[int, int]], period: np.ndarray, strength: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """Join periodic runs with the same period that are less than two periods apart.

    A small or noisy movement keeps its rhythm but its periodicity flickers around the threshold;
    one set then shows as several runs, which would each be too short to count."""
    merged: list[tuple[int, int, float]] = []
    for a, b in runs:
        periods = period[a:b][strength[a:b] >= threshold]
        if periods.size == 0:
            continue
        lag = float(np.median(periods))
        if merged:
            a0, b0, lag0 = merged[-1]
            if a - b0 <= 2 * max(lag, lag0) and abs(lag - lag0) <= 0.1 * max(lag, lag0):
                weight = (b0 - a0) / (b0 - a0 + b - a)
                merged[-1] = (a0, b, weight * lag0 + (1 - weight) * lag)
                continue
        merged.append((a, b, lag))
    return merged


def find_sets(
    times: np.ndarray,
    energy: np.ndarray,
    pose: np.ndarray,
    period: np.ndarray,
    strength: np.ndarray,
    options: AnalysisOptions,
    cancel_event: threading.Event | None = None,
) -> list[FoundSet]:
    """Active sets on a uniform sample grid: moving, periodic stretches with enough reps."""
    rate = options.sample_fps
    n = times.size
    moving = box_smooth(energy, round(rate)) > options.moving_fraction
    active = moving & (strength >= options.periodicity_threshold) & (period > 0)
    active = close_gaps(active, round(1.0 * rate))
    stretches = merge_runs(runs(active), period, strength, options.periodicity_threshold)
    stretches = [
        (a, b, lag) for a, b, lag in stretches if b - a >= max(round(1.5 * rate), 1.5 * lag)
    ]
    candidates = []
    for i, (a, b, lag) in enumerate(stretches):
        # The similarity windows make a run start late and end early by up to about a period;
        # two periods of margin recover the edge reps (they must continue the rhythm to count).
        lower = stretches[i - 1][1] if i else 0
        upper = stretches[i + 1][0] if i + 1 < len(stretches) else n
        margin = slice(max(lower, a - int(2 * lag)), min(upper, b + int(2 * lag)))
        candidates.append((slice(a, b), margin, lag))
    # Rest pose is learnt from samples outside every candidate and its margin, near the set.
    resting = np.ones(n, dtype=bool)
    for _, margin, _ in candidates:
        resting[margin] = False
    reach = round(8 * rate)
    sets: list[FoundSet] = []
    for core, margin, lag in candidates:
        stop_if_cancelled(cancel_event)
        signal, detrended, raw = _rep_signal(pose, core, margin, lag)
        near = np.zeros(n, dtype=bool)
        near[max(0, margin.start - reach) : margin.start] = True
        near[margin.stop : margin.stop + reach] = True
        # Which way up is the rep signal? A set starts and ends in its start pose. Counted the
        # right way up, its edge reps pass through that pose on their outer side and are kept;
        # counted upside down, the "peaks" are start poses and the outermost ones, with rest
        # beyond them, are dropped. So the right way up usually finds more reps; on a tie, rest
        # nearby (the start pose, mostly) is the lower side.
        local = slice(core.start - margin.start, core.stop - margin.start)
        poses = [pose[margin], detrended]
        counts = {
            sign: count_cycles(sign * signal, local, lag, poses, sign * raw, margin.start)
            for sign in (1, -1)
        }
        if len(counts[1]) == len(counts[-1]):
            sign = 1 if _rest_is_low(raw, core, raw[near & resting]) else -1
        else:
            sign = max(counts, key=lambda k: len(counts[k]))
        peaks = [p + margin.start for p in counts[sign]]
        if len(peaks) < options.min_reps:
            continue
        intervals = np.diff(peaks)
        if intervals.std() > 0.35 * intervals.mean():
            continue  # not a rhythm: irregular motion that happened to look periodic somewhere
        first_gap, last_gap = intervals[0], intervals[-1]
        start = max(0.0, times[peaks[0]] - first_gap / (2 * rate))
        end = min(times[-1] + 1.0 / rate, times[peaks[-1]] + last_gap / (2 * rate))
        sets.append(FoundSet(float(start), float(end), [float(times[p]) for p in peaks]))
    return _without_overlap(sets)


def _without_overlap(sets: list[FoundSet]) -> list[FoundSet]:
    out: list[FoundSet] = []
    for s in sorted(sets, key=lambda s: s.start):
        if out and s.start < out[-1].end:
            boundary = (out[-1].rep_times[-1] + s.rep_times[0]) / 2
            out[-1] = FoundSet(out[-1].start, boundary, out[-1].rep_times)
            s = FoundSet(boundary, s.end, s.rep_times)
        out.append(s)
    return out
