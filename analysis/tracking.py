"""Following the athlete through the video: which sampled frames get a pose estimate, and the
body track that comes out.

A pose estimate costs 30-40 ms of CPU here, ten times what decoding a frame does, so it runs only
as often as the movement needs (`PoseScheduler`):

- while the athlete holds still, every `pose_max_interval` seconds (enough to keep tracking and
  to notice the start of a set);
- as soon as the athlete's part of the picture moves, 5 times per shortest rep (`min_period`)
  until the rep tempo is known; then about `samples_per_rep` estimates per rep (a 3-second squat
  needs far fewer than a half-second jumping jack), never fewer than the still rate;
- while nobody is followed, at the next sample, then at intervals doubling up to
  `pose_search_interval` seconds (the person detector is the expensive part, but the first
  seconds of a video, or of someone stepping back into view, should not be missed).

The tempo comes from the pose samples themselves: the autocorrelation of the limb angle that
varies most over the last few seconds. Rates are chosen so that a sudden doubling of the tempo
is still sampled above the Nyquist rate and is noticed.
"""

from __future__ import annotations

import logging
import math
import threading
from typing import Any

import numpy as np

from analysis.body import BodyTrack, body_sample
from analysis.options import AnalysisOptions

logger = logging.getLogger(__name__)

_MOVING_DEGREES_PER_SECOND = 40.0
"""A limb angle changing faster than this (or the box moving) means the athlete is moving."""

_BOX_MOTION = 0.04
"""Fraction of moving pixels inside the athlete's box that means the athlete is moving."""

_MIN_PELVIS = 0.15
"""Metres between the hip joints of the 3D skeleton below which it is not a body's (median)."""

_MIN_PELVIS_RATIO = 0.35
"""Hip width / shoulder width that a body's pelvis stays above nearly always (10th percentile)."""

_TEMPO_WINDOW = 6.0
"""Seconds of pose samples the tempo is estimated from."""


class PoseScheduler:
    """Decides, sample by sample, whether the athlete's pose is estimated (see module doc).

    Args:
        rate: sampled frames per second.
        options: the analysis options (pose_max_interval, samples_per_rep, pose_search_interval,
            min_period, max_period).
    """

    def __init__(self, rate: float, options: AnalysisOptions) -> None:
        self.rate = rate
        self.options = options
        self.still_stride = max(1, round(options.pose_max_interval * rate))
        self.search_stride = max(1, round(options.pose_search_interval * rate))
        self._search = 1  # samples until the next look while nobody is followed
        self._soon = False
        self.stride = 1
        self.last: int | None = None  # sample index of the last estimate
        self.tracking = False
        self._moving_until = -1.0
        self._times: list[float] = []
        self._angles: list[np.ndarray] = []
        self._next_tempo = 0.0

    def wants(self, index: int, seconds: float, box_motion: float | None) -> bool:
        """Whether sample `index` (at `seconds`) gets a pose estimate; `box_motion` is the
        fraction of moving pixels in the athlete's box (None when unknown)."""
        if self.last is None or self._soon:
            self._soon = False
            return True
        since = index - self.last
        if not self.tracking:
            return since >= self._search
        if box_motion is not None and box_motion >= _BOX_MOTION:
            self._moving_until = max(self._moving_until, seconds + 1.0)
        stride = self.stride if seconds <= self._moving_until else self.still_stride
        return since >= min(stride, self.still_stride)

    def observed(self, index: int, seconds: float, angles: np.ndarray | None) -> None:
        """Record the estimate made at sample `index`: the limb angles, or None (nobody)."""
        self.last = index
        if angles is None:
            # Look again soon, then less and less often while nobody is there.
            self._search = 1 if self.tracking else min(self.search_stride, 2 * self._search)
            self.tracking = False
            self._times.clear()
            self._angles.clear()
            return
        self.tracking = True
        self._search = 1
        if self._times:
            dt = max(seconds - self._times[-1], 1e-3)
            if float(np.nanmax(np.abs(angles[:8] - self._angles[-1][:8]))) / dt > (
                _MOVING_DEGREES_PER_SECOND
            ):
                self._moving_until = max(self._moving_until, seconds + 1.0)
        self._times.append(seconds)
        self._angles.append(angles)
        while self._times and self._times[0] < seconds - _TEMPO_WINDOW:
            self._times.pop(0)
            self._angles.pop(0)
        if seconds >= self._next_tempo:
            self._next_tempo = seconds + 0.5
            self.stride = self._stride_for(self._tempo())

    def look_soon(self) -> None:
        """Estimate at the next sample whatever the stride."""
        self._soon = True

    def _stride_for(self, period: float | None) -> int:
        if period is None:
            # Moving without a tempo (the first reps of a set, a set of two or three reps,
            # fidgeting in a rest): five estimates per shortest rep at least, so even a
            # half-second rep's top is caught (a set too short to show a tempo is measured
            # on these alone); then the tempo sets the rate.
            return max(1, math.floor(self.rate * self.options.min_period / 5))
        per_rep = round(period * self.rate / self.options.samples_per_rep)
        return max(1, min(self.still_stride, per_rep))

    def _tempo(self) -> float | None:
        """The rep period (s) of the last seconds' most varying limb angle, or None."""
        if len(self._times) < 6 or self._times[-1] - self._times[0] < 2 * self.options.min_period:
            return None
        times = np.asarray(self._times)
        angles = np.asarray(self._angles)[:, :8]
        column = int(np.nanargmax(np.nanvar(angles, axis=0)))
        grid = np.arange(times[0], times[-1], 1.0 / self.rate)
        if grid.size < 6:
            return None
        values = np.interp(grid, times, angles[:, column])
        values = values - values.mean()
        energy = float(values @ values)
        if energy <= 1e-6:
            return None
        min_lag = max(2, round(self.options.min_period * self.rate))
        max_lag = min(grid.size // 2, round(self.options.max_period * self.rate))
        if max_lag <= min_lag:
            return None
        correlation = np.array(
            [float(values[:-lag] @ values[lag:]) / energy for lag in range(min_lag, max_lag + 1)]
        )
        best = int(np.argmax(correlation))
        if correlation[best] < 0.3:
            return None
        return (min_lag + best) / self.rate


_ESTIMATORS = threading.local()


def _estimator(options: AnalysisOptions) -> Any:
    """This thread's pose estimator (the runtime's interpreters are not thread-safe, and
    loading one costs more than a short video's analysis), made on first use.

    Raises:
        PoseUnavailable: the runtime or its model files are missing.
    """
    from analysis.pose import PoseEstimator

    key = (options.pose_model,)
    cached = getattr(_ESTIMATORS, "by_key", None)
    if cached is None:
        cached = _ESTIMATORS.by_key = {}
    if key not in cached:
        cached[key] = PoseEstimator(model=options.pose_model)
    estimator = cached[key]
    estimator.reset()
    return estimator


class AthleteTracker:
    """Runs the pose estimator on the samples the scheduler picks and builds the body track.

    Args:
        rate: sampled frames per second.
        options: the analysis options.

    Raises:
        PoseUnavailable: no pose runtime or model files (the caller falls back to motion).
    """

    def __init__(self, rate: float, options: AnalysisOptions) -> None:
        self.estimator = _estimator(options)
        self.scheduler = PoseScheduler(rate, options)
        self.track = BodyTrack()
        self.estimates = 0
        self.found = 0
        self.box: tuple[float, float, float, float] | None = None

    def process_frame(
        self, index: int, seconds: float, frame: np.ndarray, box_motion: float | None
    ) -> None:
        """Estimate the pose on this sampled frame if the scheduler wants it."""
        if not self.scheduler.wants(index, seconds, box_motion):
            return
        self.estimates += 1
        observation = self.estimator.process(frame, seconds)
        if observation is None:
            self.box = None
            self.scheduler.observed(index, seconds, None)
            return
        sample = body_sample(
            observation.landmarks,
            observation.world,
            observation.visibility,
            observation.score,
            (frame.shape[1], frame.shape[0]),
        )
        self.found += 1
        self.box = observation.box
        self.track.append(seconds, sample)
        self.scheduler.observed(index, seconds, sample.angles)

    def reliable(self, min_coverage: float) -> bool:
        """Whether the body was followed well enough to analyse the workout on it: a person in
        at least `min_coverage` of the estimates, confidently, with a body's pelvis.

        The estimator puts a skeleton on whatever it tracks, and its confidence says little: on
        drawn figures it is as sure as on people. What gives wrong landmarks away is the
        pelvis of its 3D skeleton. A body's keeps its width, about 0.2 m between the hip
        joints and 0.6 of the shoulders' width, in any view; a figure drawn with thick lines
        gets about 0.1 m, and its hips collapse onto one point every so often (measured: median
        0.10-0.13 m and a 10th percentile of 0.24-0.33 of the shoulders' width on them, against
        0.195-0.23 m and 0.38-0.65 on the real man and on rendered people)."""
        if self.found < 5 or self.found < min_coverage * self.estimates:
            return False
        n = self.track.count
        if float(np.median(self.track.score[:n])) < 0.5:
            return False
        pelvis, shoulders = self.track.pelvis[:n], self.track.shoulders[:n]
        ratio = pelvis / np.maximum(shoulders, 1e-6)
        return (
            float(np.median(pelvis)) >= _MIN_PELVIS
            and float(np.percentile(ratio, 10)) >= _MIN_PELVIS_RATIO
        )

    def picture_changed(self) -> None:
        """The picture changed completely (a cut, or something large sweeping past): look at
        the next sample. The estimator keeps who it follows, and checks that whoever it finds
        is still them (see analysis.pose), so a cut back to the athlete finds them again."""
        self.scheduler.look_soon()
