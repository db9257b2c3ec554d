"""Pure numpy signal helpers: smoothing, resampling, self-similarity and local period, runs of a
mask, a hysteresis peak counter and principal axes. Unit-tested on synthetic signals."""

from __future__ import annotations

import math
import threading

import numpy as np

from analysis.errors import AnalysisCancelled


def box_smooth(signal: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with edge-aware normalisation (no shrink towards zero at the ends)."""
    # np.convolve(mode="same") returns the longer of its inputs: never let the kernel be longer.
    width = max(1, min(int(width), signal.size))
    if width == 1 or signal.size == 0:
        return signal.astype(np.float64)
    kernel = np.ones(width)
    total = np.convolve(signal, kernel, mode="same")
    count = np.convolve(np.ones_like(signal, dtype=np.float64), kernel, mode="same")
    return total / count


def gaussian_smooth(signal: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.5 or signal.size == 0:
        return signal.astype(np.float64)
    radius = min(int(3 * sigma + 0.5), (signal.size - 1) // 2)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    total = np.convolve(signal, kernel, mode="same")
    count = np.convolve(np.ones(signal.size), kernel, mode="same")
    return total / count


def resample(times: np.ndarray, values: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Put irregular samples (24 fps sampled at 10/s: 3,2,3,2... frames apart) on a uniform grid."""
    grid = np.arange(0.0, times[-1] + 1e-9, 1.0 / rate)
    if values.ndim == 1:
        return grid, np.interp(grid, times, values)
    columns = [np.interp(grid, times, values[:, k]) for k in range(values.shape[1])]
    return grid, np.stack(columns, axis=1)


def self_similarity(
    pose: np.ndarray, max_lag: int, min_half_window: int, centres: slice | None = None
) -> np.ndarray:
    """Local self-similarity of a multichannel signal at every sample and every lag.

    S[c, L] = 1 - mean ||x_j - x_{j+L}||^2 / (2 * local variance), over the pairs whose midpoint is
    within max(L, min_half_window) samples of c. S is 1 where the signal repeats exactly after L
    samples, about 0 for unrelated samples (or pure noise) and negative for anti-phase. Column 0 is
    unused (lag 0).

    Args:
        pose: samples (rows) of the signal.
        max_lag: the longest lag computed.
        min_half_window: the least half-width of the window of pairs around a centre.
        centres: the rows of S to compute (all when None). Only the samples within reach of
            them are touched, so a long signal can be processed block by block in bounded memory
            (see `blocked_self_similarity`).

    Returns:
        S for the centres, shape (number of centres, max_lag + 1).
    """
    n = pose.shape[0]
    c0, c1 = (0, n) if centres is None else (max(0, centres.start), min(n, centres.stop))
    similarity = np.full((max(0, c1 - c0), max_lag + 1), np.nan)
    if n < 3 or c1 <= c0:
        return similarity
    # The window of samples any pair of these centres can touch (see j0, j1 below).
    reach = max(max_lag, min_half_window) + max_lag + 1
    a, b = max(0, c0 - reach), min(n, c1 + reach)
    local = pose[a:b]
    csum = np.vstack([np.zeros((1, pose.shape[1])), np.cumsum(local, axis=0)])
    csq = np.concatenate([[0.0], np.cumsum((local * local).sum(axis=1))])
    centre = np.arange(c0, c1)
    for lag in range(1, min(max_lag, n - 1) + 1):
        dist = ((local[lag:] - local[:-lag]) ** 2).sum(axis=1)
        cdist = np.concatenate([[0.0], np.cumsum(dist)])
        half = max(lag, min_half_window)
        pairs = n - lag
        # Global pair indices, then shifted into the window (which contains all of them).
        j0 = np.clip(centre - half - lag // 2, 0, pairs)
        j1 = np.clip(centre + half - lag // 2 + 1, 0, pairs)
        count = j1 - j0
        mean_dist = (cdist[j1 - a] - cdist[j0 - a]) / np.maximum(count, 1)
        s0, s1 = j0 - a, np.minimum(j1 + lag, n) - a
        span = np.maximum(s1 - s0, 1)
        mean = (csum[s1] - csum[s0]) / span[:, None]
        variance = (csq[s1] - csq[s0]) / span - (mean * mean).sum(axis=1)
        value = 1.0 - mean_dist / (2.0 * np.maximum(variance, 1e-9))
        # Fewer than one period of pairs is not evidence of repetition.
        value[count < lag] = np.nan
        similarity[:, lag] = value
    return similarity


def local_period(
    similarity: np.ndarray, min_lag: int, max_lag: int, min_dip: float = 0.25
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample: the repetition period (in samples) and how strongly the signal repeats.

    A lag counts only if the similarity curve has a local maximum there *after dipping* by
    `min_dip`: smooth, slow, non-repetitive motion is self-similar at short lags too, but it never
    comes back after having changed. Among qualifying peaks the shortest one within 85 % of the best
    is taken, so a period of P is not reported as 2P.
    """
    n = similarity.shape[0]
    curve = np.nan_to_num(similarity[:, 1:], nan=-1.0)  # column k is lag k + 1
    if curve.shape[1] < 3:
        return np.zeros(n, dtype=int), np.zeros(n)
    running_min = np.minimum.accumulate(curve, axis=1)
    peak = np.zeros_like(curve, dtype=bool)
    peak[:, 1:-1] = (curve[:, 1:-1] >= curve[:, :-2]) & (curve[:, 1:-1] > curve[:, 2:])
    lags = np.arange(1, curve.shape[1] + 1)
    peak &= (lags >= min_lag)[None, :] & (lags <= max_lag)[None, :]
    peak &= (curve - running_min) >= min_dip
    masked = np.where(peak, curve, -np.inf)
    best = masked.max(axis=1)
    choose = peak & (curve >= best[:, None] - 0.1)
    first = np.argmax(choose, axis=1)
    has = peak.any(axis=1)
    period = np.where(has, lags[first], 0)
    strength = np.where(has, curve[np.arange(n), first], 0.0)
    return period, strength


def runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def close_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill False gaps of at most `max_gap` samples that lie between two True runs."""
    out = mask.copy()
    found = runs(mask)
    for (_, end), (start, _) in zip(found, found[1:], strict=False):
        if start - end <= max_gap:
            out[end:start] = True
    return out


def hysteresis_peaks(
    signal: np.ndarray, low: float, high: float, dip: float | None = None
) -> list[int]:
    """Indices of one peak per excursion above `high` that is closed by a fall below `low`.

    A Schmitt trigger: noise around either level cannot add or split a count. An excursion still
    open at the end of the signal counts (the rep reached its top; the video simply ended).

    With `dip`, an excursion that falls by at least `dip` from its peak and then climbs by at
    least `dip` back above `high` is two: two reps with a half-finished return between them (a
    tired lifter's push-ups that no longer lock out), which never fall below `low`.
    """
    peaks: list[int] = []
    above = False
    best = -1
    trough = 0.0
    for i, value in enumerate(signal):
        if above:
            if (
                dip is not None
                and value > high
                and signal[best] - trough >= dip
                and value - trough >= dip
            ):
                peaks.append(best)
                best, trough = i, value
                continue
            if value > signal[best]:
                best, trough = i, value
            trough = min(trough, value)
            if value < low:
                peaks.append(best)
                above = False
        elif value > high:
            above, best, trough = True, i, value
    if above:
        peaks.append(best)
    return peaks


def leading_axes(centred: np.ndarray, count: int) -> np.ndarray:
    """The `count` leading principal axes (columns) of centred samples (rows).

    By repeated squaring of the covariance (C^256 is, to machine precision, its top eigenvector
    times its transpose unless the top eigenvalues are within a few percent of each other, when
    either axis serves) and deflation. LAPACK's eigh does the same job but its OpenBLAS threads
    made it take 10-30 ms per 64x64 call on a busy machine, many times per video.
    """
    covariance = centred.T @ centred
    axes = []
    for _ in range(count):
        power = covariance / max(float(np.abs(covariance).max()), 1e-300)
        for _ in range(8):
            power = power @ power
            power /= max(float(np.abs(power).max()), 1e-300)
        vector = power[:, int(np.argmax(np.einsum("ij,ij->j", power, power)))].copy()
        for _ in range(5):  # polish with the covariance itself
            vector = covariance @ vector
            vector /= max(float(np.linalg.norm(vector)), 1e-300)
        axes.append(vector)
        covariance = covariance - float(vector @ covariance @ vector) * np.outer(vector, vector)
    return np.stack(axes, axis=1)


def local_periodicity(
    pose: np.ndarray,
    rate: float,
    min_period: float,
    max_period: float,
    cancel_event: threading.Event | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of a uniform grid: the local repetition period (in samples, 0 = none) and how
    strongly the signal repeats at it (see `self_similarity` and `local_period`).

    Computed in blocks of samples, so memory stays bounded whatever the signal's length and
    rate (the whole similarity matrix is length x lag), and a cancel is seen between blocks.

    Raises:
        AnalysisCancelled: `cancel_event` was set.
    """
    n = pose.shape[0]
    min_lag = max(2, int(math.floor(min_period * rate)))
    max_lag = int(math.ceil(max_period * rate * 1.1)) + 1
    period, strength = np.zeros(n, dtype=int), np.zeros(n)
    if n < 2 * min_lag + 2:
        return period, strength
    half_window = round(1.5 * rate)
    # Each block re-reads the samples within reach of its edges: blocks of 8 reaches keep that
    # overhead small, and a block of similarity is then a few megabytes.
    block = max(1024, 8 * (max(max_lag, half_window) + max_lag))
    for start in range(0, n, block):
        if cancel_event is not None and cancel_event.is_set():
            raise AnalysisCancelled("analysis cancelled")
        centres = slice(start, min(n, start + block))
        similarity = self_similarity(pose, max_lag, half_window, centres)
        period[centres], strength[centres] = local_period(similarity, min_lag, max_lag)
    return period, strength
