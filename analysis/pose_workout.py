"""Sets, repetitions, the exercise and each rep's range of motion, from the athlete's body.

The body track (joint angles per pose estimate, see `analysis.body`) is put on a uniform grid,
then:

1. **Sets** are where the body moves, and moves periodically: the self-similarity of the limb
   angles at the rep period (`signals.local_periodicity`), as the motion analysis does on pixels,
   but on signals that shake, distance, zoom and other people do not touch.
2. **The exercise** is named from what moves and how the body is placed (`classify`): the joint
   ranges, the trunk's angle from upright, and the asymmetry of the hips at the turning point
   (a lunge's front hip bends, its back hip does not; a squat bends both). A periodic stretch is
   split where the exercise changes, so two exercises back to back are two sets.
3. **Reps** are counted on the set's dominant joint (knee for squats and lunges, elbow for curls
   and push-ups, shoulder for jumping jacks) with the same hysteresis counter and edge-rep rules
   as the motion analysis. Each rep's turning point, its start and end, and its range of motion
   are refined between pose samples (a parabola through the samples around the peak), because
   the pose is estimated only a few times per rep.
4. **Pauses**: a set that stops for at most `max_pause` seconds and goes on with the same
   exercise and tempo is one set.
"""

from __future__ import annotations

import logging
import math
import threading
from dataclasses import dataclass, replace

import numpy as np

from analysis.body import ANGLE_INDEX, JOINT_SIDES, BodyTrack
from analysis.motion_workout import count_cycles, merge_runs
from analysis.options import AnalysisOptions
from analysis.signals import (
    box_smooth,
    close_gaps,
    gaussian_smooth,
    hysteresis_peaks,
    local_periodicity,
    runs,
)
from analysis.video import stop_if_cancelled
from analysis.workout import FoundSet

logger = logging.getLogger(__name__)

EXERCISE_JOINT = {
    "squat": "knee",
    "lunge": "knee",
    "bicep_curl": "elbow",
    "push_up": "elbow",
    "jumping_jack": "shoulder",
}
"""The joint whose angle counts an exercise's reps and measures its range of motion."""

_LIMBS = [ANGLE_INDEX[name] for name in (
    "left_knee", "right_knee", "left_hip", "right_hip",
    "left_elbow", "right_elbow", "left_shoulder", "right_shoulder", "legs",
)]  # fmt: skip
_TRUNK = ANGLE_INDEX["trunk"]
_LEGS = ANGLE_INDEX["legs"]

_MIN_RELIABILITY = 0.7
"""A pose sample's angle is used when all its landmarks are at least this visible. Seen joints
score above 0.9; a skeleton the estimator has half lost (legs folded onto one point while it
looks for the person) scores around 0.6."""

_MAX_GAP = 1.0
"""Seconds between two usable pose samples beyond which the grid between them is missing."""

_MOVING_SPEED = 20.0
"""Degrees per second (the fastest limb, smoothed over a second) from which the body moves."""

_SIDE_MARGIN = 0.15
"""How much less visible one side's landmarks must be for a set to be read on the other."""

_HOLD_DEGREES = 20.0
"""How far (10th to 90th percentile) a limb angle may wander while the athlete holds still
(one limb may wander up to twice as far: estimator noise on a half-hidden side)."""

_MIN_ROM = 20.0
"""Degrees a joint must move for its excursions to count as reps."""

_FULL_REP = {
    "jumping_jack": 90.0,
    "squat": 45.0,
    "lunge": 45.0,
    "bicep_curl": 60.0,
    "push_up": 40.0,
}
"""Degrees of its dominant joint a rep of each exercise goes through at the least: what a set
too short to show a rhythm must reach on every rep to count (see `_short_sets`)."""

_REP_DIP = 0.45
"""Fraction of a set's amplitude a joint must come back by, and go again, between two reps that
never return to the low level: the estimator reads a side-view push-up's straight arms as bent
by 45 degrees at times, and a tired lifter stops locking out."""

_MAX_TRAVEL = 0.8
"""Body heights the hips may move across the picture during a set: more is walking."""


@dataclass(frozen=True)
class BodyGrid:
    """The body track on a uniform grid: angles (degrees) where a usable pose is within reach."""

    times: np.ndarray
    angles: np.ndarray
    """(n, len(ANGLES)); NaN where missing."""
    raw_times: np.ndarray
    """The pose samples' own times (irregular), for refining turning points between samples."""
    raw_angles: np.ndarray
    """(m, len(ANGLES)) at raw_times; NaN where unreliable."""
    reliability: np.ndarray
    """(m, len(ANGLES)) at raw_times: how visible each angle's landmarks were (0..1)."""
    position: np.ndarray
    """(n, 2) the hips' midpoint in the picture (pixels); NaN where missing."""
    height: np.ndarray
    """(n,) the body's height in the picture (pixels); NaN where missing."""


def to_grid(track: BodyTrack, angles: np.ndarray, rate: float, duration: float) -> BodyGrid:
    """Interpolate the (time-ordered) track's `angles` (one row per sample: `lifted_angles`)
    onto samples every 1/rate s from 0 to `duration`; a grid sample is missing where no usable
    pose lies within _MAX_GAP on both sides."""
    times = np.arange(0.0, max(duration, 1.0 / rate) - 1e-9, 1.0 / rate)
    raw = np.where(track.reliability[: track.count] >= _MIN_RELIABILITY, angles, np.nan)
    angles = np.full((times.size, raw.shape[1]), np.nan)
    for k in range(raw.shape[1]):
        ok = ~np.isnan(raw[:, k])
        t, v = track.times[ok], raw[ok, k]
        if t.size == 0:
            continue
        right = np.searchsorted(t, times)
        left = right - 1
        has_left = left >= 0
        has_right = right < t.size
        gap_left = np.where(has_left, times - t[np.clip(left, 0, t.size - 1)], np.inf)
        gap_right = np.where(has_right, t[np.clip(right, 0, t.size - 1)] - times, np.inf)
        usable = (gap_left + gap_right <= _MAX_GAP) | (
            np.minimum(gap_left, gap_right) <= 0.5 / rate
        )
        angles[usable, k] = np.interp(times[usable], t, v)
    position = np.full((times.size, 2), np.nan)
    height = np.full(times.size, np.nan)
    if track.count:
        nearest = np.clip(np.searchsorted(track.times, times), 0, track.count - 1)
        previous = np.clip(nearest - 1, 0, track.count - 1)
        close = np.minimum(
            np.abs(track.times[nearest] - times), np.abs(track.times[previous] - times)
        )
        known = close <= _MAX_GAP / 2
        for k in range(2):
            position[known, k] = np.interp(times[known], track.times, track.centre[:, k])
        height[known] = np.interp(times[known], track.times, track.height)
    reliability = track.reliability[: track.count].copy()
    return BodyGrid(times, angles, track.times.copy(), raw, reliability, position, height)


def joint_signal(angles: np.ndarray, joint: str, sides: str = "max") -> np.ndarray:
    """A joint's angle over both sides.

    Args:
        angles: rows of ANGLES.
        joint: "knee", "hip", "elbow" or "shoulder".
        sides: "max": the larger of the two where both are known (whichever side works, as in
            alternating lunges); "mean": their mean where both are known; "left" or "right":
            that side alone. Where only one side is known, that side.
    """
    left, right = JOINT_SIDES[joint]
    if sides == "left":
        return angles[..., left]
    if sides == "right":
        return angles[..., right]
    if sides == "mean":
        a, b = angles[..., left], angles[..., right]
        return np.where(np.isnan(a), b, np.where(np.isnan(b), a, (a + b) / 2))
    return np.fmax(angles[..., left], angles[..., right])  # fmax ignores one NaN


def _sigmoid(x: float, centre: float, width: float) -> float:
    return 1.0 / (1.0 + math.exp(-(x - centre) / width))


def _span(values: np.ndarray) -> float:
    """The range of a signal, robust to outliers: 95th minus 5th percentile (0 if unknown)."""
    values = values[~np.isnan(values)]
    if values.size < 3:
        return 0.0
    low, high = np.percentile(values, [5, 95])
    return float(high - low)


@dataclass(frozen=True)
class Classification:
    exercise: str
    confidence: float
    scores: dict[str, float]


def classify(angles: np.ndarray) -> Classification:
    """Name the exercise performed over a stretch of grid samples (rows of angles).

    Each exercise gets a score in 0..1 from soft thresholds on what moves and how the body is
    placed; the best one wins if it scores at least 0.5, else "unknown". The confidence is the
    winner's score times how far it stands above the runner-up.
    """
    rom = {joint: _span(joint_signal(angles, joint)) for joint in JOINT_SIDES}
    legs = _span(angles[:, _LEGS])
    trunk_values = angles[:, _TRUNK][~np.isnan(angles[:, _TRUNK])]
    trunk = float(np.median(trunk_values)) if trunk_values.size else 0.0
    # Where the knees bend most: a lunge's back hip stays straight and its thighs split apart
    # (40-55 degrees between them on rendered lunges), a squat's thighs stay side by side
    # (15-20) and both hips bend.
    knee = joint_signal(angles, "knee")
    left_hip, right_hip = JOINT_SIDES["hip"]
    asym_all = np.abs(angles[:, left_hip] - angles[:, right_hip])
    deep = ~np.isnan(knee)
    hip_asymmetry, split = 0.0, 0.0
    if deep.sum() >= 3:
        deep &= knee >= np.percentile(knee[deep], 75)
        if (deep & ~np.isnan(asym_all)).any():
            hip_asymmetry = float(np.median(asym_all[deep & ~np.isnan(asym_all)]))
        legs_deep = angles[deep, _LEGS]
        legs_deep = legs_deep[~np.isnan(legs_deep)]
        split = float(np.median(legs_deep)) if legs_deep.size else 0.0
    lunging = max(_sigmoid(hip_asymmetry, 40.0, 8.0), _sigmoid(split, 32.0, 5.0))
    upright = 1.0 - _sigmoid(trunk, 45.0, 8.0)
    # The elbow moves far more than anything else in a curl (the estimator adds a little
    # noise to still legs, so absolute thresholds on them would refuse real curls).
    others = max(rom["knee"], rom["shoulder"], rom["hip"])
    scores = {
        "push_up": _sigmoid(trunk, 50.0, 8.0) * _sigmoid(rom["elbow"], 30.0, 8.0),
        "jumping_jack": upright * _sigmoid(rom["shoulder"], 70.0, 12.0) * _sigmoid(legs, 10.0, 4.0),
        "squat": upright
        * _sigmoid(rom["knee"], 40.0, 8.0)
        * _sigmoid(rom["hip"], 30.0, 8.0)
        * (1.0 - lunging)
        # Arms swept overhead each rep make jumping jacks, even landed with bent knees (legs
        # split too: not a lunge either).
        * (1.0 - _sigmoid(rom["shoulder"], 110.0, 10.0)),
        "lunge": upright
        * _sigmoid(rom["knee"], 35.0, 8.0)
        * lunging
        # Lower than for squats (arms swung forward to balance a squat reach 90 degrees): a
        # lunge's arms hang or rest on the hips, and a jumping jack's legs split apart too.
        * (1.0 - _sigmoid(rom["shoulder"], 90.0, 10.0)),
        "bicep_curl": upright
        * _sigmoid(rom["elbow"], 50.0, 8.0)
        * _sigmoid(rom["elbow"] - 1.5 * others, 0.0, 10.0),
    }
    ranked = sorted(scores.items(), key=lambda item: item[1], reverse=True)
    (best, score), (_, second) = ranked[0], ranked[1]
    if score < 0.5:
        return Classification("unknown", round(1.0 - score, 3), scores)
    return Classification(best, round(score * (1.0 - second), 3), scores)


def _dominant_joint(angles: np.ndarray, exercise: str) -> str:
    if exercise in EXERCISE_JOINT:
        return EXERCISE_JOINT[exercise]
    return max(JOINT_SIDES, key=lambda joint: _span(joint_signal(angles, joint)))


def _refine_extreme(
    times: np.ndarray, values: np.ndarray, around: float, reach: float, sign: float
) -> tuple[float, float] | None:
    """The turning point (time, value) near `around`: a maximum for sign 1, a minimum for -1.

    The pose is estimated only a few times per rep, so the true extreme usually lies between
    samples, and one noisy sample should not decide it: a parabola is fitted (least squares) to
    the samples within 0.6 `reach` of the most extreme sample within `reach` of `around`, and
    its vertex is the turning point when it opens the right way and lies among them; else the
    most extreme sample itself."""
    inside = np.flatnonzero((np.abs(times - around) <= reach) & ~np.isnan(values))
    if inside.size == 0:
        return None
    i = int(inside[np.argmax(sign * values[inside])])
    t, v = float(times[i]), float(values[i])
    if sign < 0:
        # The straight end of a rep: a limb held straight reads as bent whenever its middle
        # landmark is a few pixels off the line, never as less than straight, so the noise
        # there only adds. The lowest sample is the least wrong; a fit would average it up.
        return t, v
    near = np.flatnonzero((np.abs(times - t) <= 0.6 * reach) & ~np.isnan(values))
    before, after = (times[near] < t).sum(), (times[near] > t).sum()
    if near.size >= 3 and before and after:
        x = times[near] - t
        a2, b2, c2 = np.polyfit(x, values[near], 2)
        if sign * a2 < 0:  # opens the right way: a real maximum (or minimum)
            shift = -b2 / (2 * a2)
            if x.min() <= shift <= x.max():
                return t + float(shift), float(c2 - b2 * b2 / (4 * a2))
    return t, v


@dataclass(frozen=True)
class _Part:
    """A stretch of grid samples with one exercise: where to count and where it may reach."""

    core: slice
    margin: slice
    lag: float
    exercise: str
    confidence: float


def _split_by_exercise(angles: np.ndarray, core: slice, margin: slice, lag: float) -> list[_Part]:
    """Cut a periodic stretch where the exercise changes.

    Windows of 1.5 periods, every half period, are named; runs of one name become parts, and a
    run shorter than two periods joins its shorter neighbour (a window across the change of
    exercise is often named neither)."""
    step = max(1, int(lag // 2))
    half = max(2, int(round(0.75 * lag)))
    pieces: list[list] = []  # [start, stop, name] in grid samples
    for centre in range(core.start, core.stop, step):
        window = angles[max(margin.start, centre - half) : min(margin.stop, centre + half + 1)]
        name = classify(window).exercise
        if pieces and pieces[-1][2] == name:
            pieces[-1][1] = centre + step
        else:
            pieces.append([centre, centre + step, name])
    while len(pieces) > 1:
        k = min(range(len(pieces)), key=lambda k: pieces[k][1] - pieces[k][0])
        if pieces[k][1] - pieces[k][0] >= 2 * lag:
            break
        if k == 0:
            j = 1
        elif k == len(pieces) - 1:
            j = k - 1
        else:
            j = (
                k - 1
                if pieces[k - 1][1] - pieces[k - 1][0] <= pieces[k + 1][1] - pieces[k + 1][0]
                else k + 1
            )
        lo, hi = min(j, k), max(j, k)
        pieces[lo : hi + 1] = [[pieces[lo][0], pieces[hi][1], pieces[j][2]]]
        # Neighbours that now share a name are one part.
        merged: list[list] = []
        for piece in pieces:
            if merged and merged[-1][2] == piece[2]:
                merged[-1][1] = piece[1]
            else:
                merged.append(piece)
        pieces = merged
    parts = []
    # Where one exercise ends and the next begins is known to about a period (a window across
    # the change is named neither), so a part may reach 1.5 periods into its neighbour; reps
    # counted by both are settled in `_settle_boundaries`.
    overlap = int(round(1.5 * lag))
    for i, (start, stop, _) in enumerate(pieces):
        first, last = i == 0, i == len(pieces) - 1
        inner = slice(core.start if first else start, core.stop if last else min(stop, core.stop))
        outer = slice(
            margin.start if first else max(margin.start, inner.start - overlap),
            margin.stop if last else min(margin.stop, inner.stop + overlap),
        )
        found = classify(angles[inner])
        parts.append(_Part(inner, outer, lag, found.exercise, found.confidence))
    return parts


def _fill(values: np.ndarray) -> np.ndarray:
    """A copy with NaN replaced by linear interpolation between known values (the nearest at
    the ends); all-NaN stays NaN."""
    out = np.array(values, dtype=np.float64)
    known = ~np.isnan(out)
    if known.any() and not known.all():
        where = np.flatnonzero(known)
        out[~known] = np.interp(np.flatnonzero(~known), where, out[known])
    return out


def _count_part(
    grid: BodyGrid, part: _Part, rate: float, options: AnalysisOptions
) -> FoundSet | None:
    """Count the reps of one periodic part on its dominant joint and measure each of them."""
    joint = _dominant_joint(grid.angles[part.core], part.exercise)
    sides = _sides(grid, part.core, joint, part.exercise)
    smooth = _joint_curve(grid, part.margin, joint, part.lag, sides)
    if smooth is None:
        return None
    local = slice(part.core.start - part.margin.start, part.core.stop - part.margin.start)
    peaks = count_cycles(smooth, local, part.lag, dip=_REP_DIP)
    if len(peaks) < options.min_reps:
        return None
    intervals = np.diff(peaks)
    if intervals.std() > 0.35 * intervals.mean():
        return None  # not a rhythm
    if float(np.percentile(smooth[local], 90) - np.percentile(smooth[local], 10)) < _MIN_ROM:
        return None  # a periodic twitch, not a rep
    return _measure(grid, part, joint, smooth, peaks, rate)


def _sides(grid: BodyGrid, where: slice, joint: str, exercise: str) -> str:
    """Which side(s) of `joint` to read a set on (see `joint_signal`): both sides' larger for an
    exercise done one side at a time (lunges); else the better-seen side when the other is
    clearly hidden (the far arm of a push-up filmed from the side is guessed, not seen), else
    the mean of both."""
    if exercise == "lunge":
        return "max"
    start, stop = grid.times[where.start], grid.times[min(where.stop, grid.times.size) - 1]
    inside = (grid.raw_times >= start) & (grid.raw_times <= stop)
    left, right = JOINT_SIDES[joint]
    if not inside.any():
        return "max"
    seen_left = float(grid.reliability[inside, left].mean())
    seen_right = float(grid.reliability[inside, right].mean())
    if seen_left < seen_right - _SIDE_MARGIN:
        return "right"
    if seen_right < seen_left - _SIDE_MARGIN:
        return "left"
    return "mean"


def _joint_curve(
    grid: BodyGrid, where: slice, joint: str, lag: float, sides: str = "max"
) -> np.ndarray | None:
    """The joint's angle over `where`, lightly smoothed; missing samples (the athlete hidden
    for a moment) bridged, so they can neither make nor split a rep. None if almost unknown."""
    signal = joint_signal(grid.angles[where], joint, sides)
    if (~np.isnan(signal)).sum() < 3:
        return None
    return gaussian_smooth(_fill(signal), lag / 12)


def _measure(
    grid: BodyGrid,
    part: _Part,
    joint: str,
    smooth: np.ndarray,
    peaks: list[int],
    rate: float,
    sides: str = "max",
) -> FoundSet:
    """The set made of these reps (peaks: indices of `smooth`, which covers part.margin): each
    rep's turning point, its start and end, and its range of motion, refined between the pose
    samples; the set from where its first rep leaves the start pose to where the last returns."""
    local = slice(part.core.start - part.margin.start, part.core.stop - part.margin.start)
    offset = part.margin.start
    raw_times, raw = grid.raw_times, joint_signal(grid.raw_angles, joint, sides)
    spacing = float(np.median(np.diff(peaks))) if len(peaks) > 1 else part.lag
    reach = 0.35 * spacing / rate

    def turning_point(i: float, sign: float) -> tuple[float, float]:
        t = float(grid.times[offset]) + i / rate
        found = _refine_extreme(raw_times, raw, t, reach, sign)
        if found is not None:
            return found
        return t, float(np.interp(i, np.arange(smooth.size), smooth))

    rest_level = float(np.percentile(smooth[local], 10))
    amplitude = float(np.percentile(smooth[local], 90)) - rest_level
    first = _leave_or_return(smooth, peaks[0], -1, rest_level, amplitude, spacing / 8)
    last = _leave_or_return(smooth, peaks[-1], 1, rest_level, amplitude, spacing / 8)
    tops = [turning_point(p, 1.0) for p in peaks]
    valleys = [
        turning_point(p + int(np.argmin(smooth[p : q + 1])), -1.0)
        for p, q in zip(peaks, peaks[1:], strict=False)
    ]
    edges = [turning_point(first, -1.0), *valleys, turning_point(last, -1.0)]
    # The set starts where its first rep leaves the start pose and ends where the last comes
    # back, not at the lowest sample near there.
    start = float(grid.times[offset]) + first / rate
    end = float(grid.times[offset]) + last / rate
    bounds = [start, *(t for t, _ in valleys), end]
    rom = [max(0.0, top - min(edges[i][1], edges[i + 1][1])) for i, (_, top) in enumerate(tops)]
    return FoundSet(
        start,
        end,
        [t for t, _ in tops],
        exercise=part.exercise,
        exercise_confidence=part.confidence,
        rep_durations=[max(0.0, b - a) for a, b in zip(bounds, bounds[1:], strict=False)],
        range_of_motion=rom,
        dominant_joint=joint,
    )


def _short_sets(
    grid: BodyGrid,
    moving: np.ndarray,
    claimed: np.ndarray,
    options: AnalysisOptions,
) -> list[FoundSet]:
    """Sets too short to show a rhythm (two or three reps), where the body leaves no doubt.

    In each stretch of movement outside the sets found by periodicity, every exercise looks
    for reps of its own: excursions of its dominant joint through the exercise's full range
    (`_FULL_REP`), following each other within the longest rep period. A run of at least two
    becomes a set if the span of those reps is named that exercise with confidence, every rep
    reaches three quarters of the full range and the athlete stays in place. Fidgeting, a single
    arm raise, drinking, or walking off fail one of these."""
    rate = options.sample_fps
    found: list[FoundSet] = []
    reach = round(0.5 * rate)
    for a, b in runs(close_gaps(moving & ~claimed, round(0.5 * rate))):
        if b - a < round(1.0 * rate):
            continue
        margin = slice(max(0, a - reach), min(grid.times.size, b + reach))
        for exercise, full in _FULL_REP.items():
            joint = EXERCISE_JOINT[exercise]
            curve = _joint_curve(grid, margin, joint, rate)
            if curve is None:
                continue
            base = float(np.percentile(curve, 5))
            peaks = hysteresis_peaks(curve, base + 0.35 * full, base + 0.65 * full)
            for group in _rhythmic_groups(peaks, options.max_period * rate):
                candidate = _short_set(grid, margin, group, exercise, joint, rate)
                if candidate is not None:
                    found.append(candidate)
    # Where two exercises claim the same moment, the surer one keeps it.
    kept: list[FoundSet] = []
    for candidate in sorted(found, key=lambda s: -s.exercise_confidence):
        if all(candidate.end <= k.start or candidate.start >= k.end for k in kept):
            kept.append(candidate)
    return kept


def _rhythmic_groups(peaks: list[int], max_gap: float) -> list[list[int]]:
    """Runs of at least two peaks, each within `max_gap` samples of the previous one and
    keeping the rhythm: a gap more than 1.6 times (or less than 0.6 times) the one before
    starts a new run, so an arm raised a while after two jumping jacks is not a third."""
    groups: list[list[int]] = []
    for p in peaks:
        if groups:
            group = groups[-1]
            gap = p - group[-1]
            rhythm = len(group) < 2 or 0.6 <= gap / (group[-1] - group[-2]) <= 1.6
            if gap <= max_gap and rhythm:
                group.append(p)
                continue
        groups.append([p])
    return [group for group in groups if len(group) >= 2]


def _short_set(
    grid: BodyGrid, margin: slice, group: list[int], exercise: str, joint: str, rate: float
) -> FoundSet | None:
    """The set made of the reps at `group` (indices into `margin`), if it passes the checks of
    `_short_sets`."""
    spacing = float(np.median(np.diff(group)))
    half = int(round(spacing / 2))
    span = slice(
        max(margin.start, margin.start + group[0] - half),
        min(margin.stop, margin.start + group[-1] + half + 1),
    )
    named = classify(grid.angles[span])
    if named.exercise != exercise or named.confidence < 0.6:
        return None
    sides = _sides(grid, span, joint, exercise)
    curve = _joint_curve(grid, span, joint, rate, sides)
    if curve is None:
        return None
    peaks = [p + margin.start - span.start for p in group]
    part = _Part(span, span, spacing, exercise, named.confidence)
    measured = _measure(grid, part, joint, curve, peaks, rate, sides)
    if min(measured.range_of_motion or [0.0]) < 0.75 * _FULL_REP[exercise]:
        return None
    return measured


def _travels(grid: BodyGrid, start: float, end: float, limit: float = 0.0) -> bool:
    """Whether the athlete's hips move across the picture by more than `limit` body heights
    (default _MAX_TRAVEL) between `start` and `end`: walking, not exercising in place."""
    inside = (grid.times >= start) & (grid.times <= end) & ~np.isnan(grid.position[:, 0])
    if inside.sum() < 3:
        return False
    x = grid.position[inside, 0]
    height = float(np.median(grid.height[inside]))
    spread = float(np.percentile(x, 95) - np.percentile(x, 5))
    return spread > (limit or _MAX_TRAVEL) * max(height, 1.0)


def _leave_or_return(
    signal: np.ndarray, peak: int, direction: int, rest: float, amplitude: float, reach: float
) -> float:
    """Where (fractional sample) the rep around `peak` leaves the start pose (direction -1) or
    comes back to it (+1).

    The rep crosses 15 % of the amplitude above rest clearly, but a smooth movement (a cosine,
    the minimum-jerk profile of a human limb) has left its rest well before that: about as long
    before as it takes from 50 % to 15 % (for a cosine, an eighth of the rep before). So the
    start is that crossing moved outwards by its 50-to-15 % time, at most `reach` samples, and
    never past the lowest point before it. A 15 % threshold alone put every set's start a
    quarter of a second late and its end as early at 2 s a rep, 0.8 s at 6 s a rep.

    Where the signal turns back or holds in the lower half before that (a body standing a
    little differently from its rest between reps, as the lifting reads it with other bones in
    view), the rep leaves or comes back there."""
    level = rest + 0.15 * amplitude
    i = peak
    while 0 < i < signal.size - 1 and signal[i] > level:
        if signal[i] <= rest + 0.5 * amplitude and signal[i + direction] >= signal[i]:
            return float(i)
        i += direction
    if i == peak or signal[i] > level:
        return float(i)  # the signal ends (or the video does) before the rep comes down
    crossing = _crossing(signal, i, direction, level)
    half = peak
    while 0 < half < signal.size - 1 and signal[half] > rest + 0.5 * amplitude:
        half += direction
    middle = _crossing(signal, half, direction, rest + 0.5 * amplitude)
    target = crossing + direction * min(abs(crossing - middle), reach)
    # Never past the lowest point before it (the rest, or the rep before).
    k = i
    while (
        0 < k < signal.size - 1
        and direction * (k - target) < 0
        and signal[k + direction] <= signal[k] + 0.02 * amplitude
    ):
        k += direction
    if direction * (k - target) < 0:
        target = float(k)
    return float(np.clip(target, 0, signal.size - 1))


def _crossing(signal: np.ndarray, i: int, direction: int, level: float) -> float:
    """Where (fractional sample) the signal crosses `level` between sample i (at or below it)
    and the sample before it on the way out (above it)."""
    j = i - direction
    if not 0 <= j < signal.size:
        return float(i)
    a, b = float(signal[i]), float(signal[j])
    if b == a:
        return float(i)
    return i + (level - a) / (b - a) * (j - i)


def _settle_boundaries(
    counted: list[FoundSet | None], parts: list[_Part], times: np.ndarray
) -> list[FoundSet]:
    """Neighbouring parts of one stretch may both have counted the reps near their boundary: a
    rep of one that lies beyond its own part, within half a rep of a rep of the other, goes."""
    kept = [s for s in counted if s is not None]
    owners = [p for s, p in zip(counted, parts, strict=True) if s is not None]
    for k in range(len(kept) - 1):
        a, b = kept[k], kept[k + 1]
        boundary = float(times[min(owners[k].core.stop, times.size - 1)])
        spacing = float(np.median(np.diff(a.rep_times + b.rep_times)))
        while (
            a.rep_times
            and a.rep_times[-1] > boundary
            and b.rep_times
            and (b.rep_times[0] - a.rep_times[-1] < 0.5 * spacing)
        ):
            a = _drop_rep(a, -1)
        while (
            b.rep_times
            and b.rep_times[0] < boundary
            and a.rep_times
            and (b.rep_times[0] - a.rep_times[-1] < 0.5 * spacing)
        ):
            b = _drop_rep(b, 0)
        kept[k], kept[k + 1] = a, b
    return [s for s in kept if s.rep_times]


def _drop_rep(s: FoundSet, index: int) -> FoundSet:
    """The set without its first (index 0) or last (-1) rep; it then starts or ends with the
    rep next to it."""
    keep = slice(1, None) if index == 0 else slice(None, -1)
    duration = s.rep_durations[index] if s.rep_durations else 0.0
    return replace(
        s,
        start=s.start + duration if index == 0 else s.start,
        end=s.end - duration if index != 0 else s.end,
        rep_times=s.rep_times[keep],
        rep_durations=s.rep_durations[keep],
        range_of_motion=None if s.range_of_motion is None else s.range_of_motion[keep],
    )


def _merge_pauses(sets: list[FoundSet], grid: BodyGrid, max_pause: float) -> list[FoundSet]:
    """Join consecutive sets of the same exercise and tempo separated by a pause: at most
    `max_pause` seconds during which the athlete holds still. Shaking the arms out, shifting
    about, fidgeting or walking off between two sets of squats is a rest, however short."""
    out: list[FoundSet] = []
    for s in sets:
        if out:
            prev = out[-1]
            gap = s.start - prev.end
            spacing = [float(np.median(np.diff(x.rep_times))) for x in (prev, s)]
            similar = abs(spacing[0] - spacing[1]) <= 0.35 * max(spacing)
            if (
                s.exercise == prev.exercise
                and 0 <= gap <= max_pause
                and similar
                and _holds_still(grid, prev.end, s.start)
            ):
                out[-1] = replace(
                    prev,
                    end=s.end,
                    rep_times=prev.rep_times + s.rep_times,
                    exercise_confidence=min(prev.exercise_confidence, s.exercise_confidence),
                    rep_durations=prev.rep_durations + s.rep_durations,
                    range_of_motion=(prev.range_of_motion or []) + (s.range_of_motion or []),
                )
                continue
        out.append(s)
    return out


def _holds_still(grid: BodyGrid, start: float, end: float) -> bool:
    """Whether the athlete holds a position from `start` to `end`: no limb angle wanders more
    than _HOLD_DEGREES (10th to 90th percentile of its pose samples there: a hold is a few
    degrees of estimator noise, shaking out or fidgeting is tens), and the hips stay put."""
    inside = (grid.raw_times > start) & (grid.raw_times < end)
    limbs = grid.raw_angles[inside][:, _LIMBS]
    known = ~np.isnan(limbs)
    spreads = [
        float(np.percentile(limbs[known[:, k], k], 90) - np.percentile(limbs[known[:, k], k], 10))
        for k in range(limbs.shape[1])
        if known[:, k].sum() >= 3
    ]
    # One limb may read loose (a side half hidden, a depth flip of the lifting), not two,
    # and not by much: shaking out or fidgeting moves both arms or a leg by tens of degrees.
    wandering = [x for x in spreads if x > _HOLD_DEGREES]
    if len(wandering) > 1 or any(x > 2 * _HOLD_DEGREES for x in wandering):
        return False
    return not _travels(grid, start, end, 0.15)


def find_sets(
    grid: BodyGrid, options: AnalysisOptions, cancel_event: threading.Event | None = None
) -> list[FoundSet]:
    """The sets in a body grid, in time order (see the module docstring).

    Raises:
        AnalysisCancelled: `cancel_event` was set.
    """
    rate = options.sample_fps
    n = grid.times.size
    limbs = grid.angles[:, _LIMBS]
    valid = ~np.isnan(limbs).all(axis=1)
    if valid.sum() < 3:
        return []
    # Missing stretches are bridged, so they neither move nor repeat by themselves.
    filled = np.stack([_fill(limbs[:, k]) for k in range(limbs.shape[1])], axis=1)
    filled = np.nan_to_num(filled)
    # Degrees per second of the fastest limb, smoothed over a second. The angles are smoothed
    # first: a few degrees of noise between samples a tenth of a second apart would otherwise
    # read as tens of degrees per second of a body holding still.
    steady = np.stack(
        [gaussian_smooth(filled[:, k], 0.15 * rate) for k in range(filled.shape[1])], axis=1
    )
    speed = np.abs(np.gradient(steady, axis=0)).max(axis=1) * rate
    moving = box_smooth(speed, round(rate)) > _MOVING_SPEED
    # Scaled so a 30-degree swing weighs 1, whatever the joint.
    period, strength = local_periodicity(
        filled / 30.0, rate, options.min_period, options.max_period, cancel_event
    )
    active = valid & moving & (strength >= options.periodicity_threshold) & (period > 0)
    active = close_gaps(active, round(1.0 * rate))
    stretches = merge_runs(runs(active), period, strength, options.periodicity_threshold)
    stretches = [
        (a, b, lag) for a, b, lag in stretches if b - a >= max(round(1.5 * rate), 1.5 * lag)
    ]
    sets: list[FoundSet] = []
    for i, (a, b, lag) in enumerate(stretches):
        stop_if_cancelled(cancel_event)
        lower = stretches[i - 1][1] if i else 0
        upper = stretches[i + 1][0] if i + 1 < len(stretches) else n
        margin = slice(max(lower, a - int(2 * lag)), min(upper, b + int(2 * lag)))
        parts = _split_by_exercise(grid.angles, slice(a, b), margin, lag)
        counted = [_count_part(grid, part, rate, options) for part in parts]
        sets.extend(_settle_boundaries(counted, parts, grid.times))
    claimed = np.zeros(n, dtype=bool)
    for s in sets:
        claimed[(grid.times >= s.start - 0.5) & (grid.times <= s.end + 0.5)] = True
    stop_if_cancelled(cancel_event)
    sets.extend(_short_sets(grid, valid & moving, claimed, options))
    sets = [s for s in sets if not _travels(grid, s.start, s.end)]
    sets.sort(key=lambda s: s.start)
    return _merge_pauses(_without_overlap(sets), grid, options.max_pause)


def _without_overlap(sets: list[FoundSet]) -> list[FoundSet]:
    """Sets whose margins overlapped end where the next begins (halfway between their reps)."""
    out: list[FoundSet] = []
    for s in sets:
        if out and s.start < out[-1].end:
            boundary = (out[-1].rep_times[-1] + s.rep_times[0]) / 2
            out[-1] = replace(out[-1], end=min(out[-1].end, boundary))
            s = replace(s, start=max(s.start, boundary))
        out.append(s)
    return out
