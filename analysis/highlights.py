"""Highlights: the most active non-overlapping windows, their reason, and their thumbnails."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import cv2
import numpy as np

from analysis.motion import ENERGY_FLOOR, downscale
from analysis.options import AnalysisOptions

_MIN_HIGHLIGHT_SCORE = 0.15
"""Windows weaker than this (relative to the best) are not highlights; the best one always is."""


def highlight_windows(
    times: np.ndarray,
    energy: np.ndarray,
    in_set: np.ndarray,
    cut: np.ndarray,
    duration: float,
    options: AnalysisOptions,
) -> list[tuple[float, float, float, str, float]]:
    """(start, end, score, reason, peak_time) of the best non-overlapping windows, best first.

    Windows on a set (`in_set`) come first, and motion outside sets counts a tenth: shuffling
    about or stepping aside between sets moves many pixels but is not a highlight of a workout,
    while a video without any sets still gets its most active moments.
    """
    if times.size == 0:
        return []
    energy = energy * np.where(in_set, 1.0, 0.1)
    rate = options.sample_fps
    width = max(1, round(options.highlight_seconds * rate))
    if times.size <= width:
        peak = int(np.argmax(energy))
        score = min(1.0, float(energy.mean()) / ENERGY_FLOOR)
        return [
            (
                0.0,
                round(duration, 2),
                round(score, 2),
                _reason(energy, cut),
                round(float(times[peak]), 2),
            )
        ]
    csum = np.concatenate([[0.0], np.cumsum(energy)])
    window_mean = (csum[width:] - csum[:-width]) / width
    norm = max(float(window_mean.max()), ENERGY_FLOOR)
    inside = np.concatenate([[0], np.cumsum(in_set)])
    on_set = (inside[width:] - inside[:-width]) > 0
    available = np.ones(window_mean.size, dtype=bool)
    out: list[tuple[float, float, float, str, float]] = []
    while len(out) < options.max_highlights and available.any():
        # Windows on a set come first, best first; the other moments fill the remaining places.
        rank = np.where(available, window_mean + np.where(on_set, 1.0 + norm, 0.0), -1.0)
        start = int(np.argmax(rank))
        score = float(window_mean[start]) / norm
        if out and score < _MIN_HIGHLIGHT_SCORE:
            break
        available[max(0, start - width + 1) : start + width] = False
        part = slice(start, start + width)
        peak = start + int(np.argmax(energy[part]))
        begin = float(times[start])
        end = min(duration, begin + options.highlight_seconds)
        out.append(
            (
                round(begin, 2),
                round(end, 2),
                round(score, 2),
                _reason(energy[part], cut[part]),
                round(float(times[peak]), 2),
            )
        )
    return out


def _reason(energy: np.ndarray, cut: np.ndarray) -> str:
    if cut.any():
        return "scene_change"
    mean = float(energy.mean())
    if mean < ENERGY_FLOOR:
        return "low_motion"
    # A short burst that towers over its window reads as one moment, not sustained effort.
    if float(energy.max()) > 3.0 * mean:
        return "peak_intensity"
    return "high_motion"


class ThumbnailKeeper:
    """One JPEG candidate per second of video: its most active sampled frame.

    The JPEGs go to an unlinked temporary file in the output folder and only their offsets stay
    in memory, so an hour of video costs a few hundred kilobytes of memory, not tens of
    megabytes. At most one full-size frame is held (the current second's best), and at most one
    JPEG is encoded per second.

    Args:
        folder: where the temporary file lives (the analysis' output folder).
        max_width: largest thumbnail width in pixels.
    """

    def __init__(self, folder: Path, max_width: int) -> None:
        self._file = tempfile.TemporaryFile(dir=folder)  # noqa: SIM115 - closed in close()
        self._max_width = max_width
        # second -> (energy, time, offset, length) of its JPEG in the file
        self._index: dict[int, tuple[float, float, int, int]] = {}
        self._candidate: tuple[int, float, float, np.ndarray] | None = None

    def offer(self, seconds: float, energy: float, frame: np.ndarray) -> None:
        """A sampled frame at `seconds` with its motion energy; kept if it is its second's best."""
        second = int(seconds)
        if self._candidate is not None and self._candidate[0] != second:
            self._store()
        if self._candidate is None or energy > self._candidate[1]:
            self._candidate = (second, energy, seconds, frame)

    def _store(self) -> None:
        assert self._candidate is not None
        second, energy, seconds, frame = self._candidate
        self._candidate = None
        jpeg = thumbnail_jpeg(frame, self._max_width)
        if jpeg is not None:
            offset = self._file.seek(0, os.SEEK_END)
            self._file.write(jpeg)
            self._index[second] = (energy, seconds, offset, len(jpeg))

    def pick(self, start: float, end: float, peak: float) -> bytes | None:
        """The most active thumbnail between `start` and `end` (closest to `peak` on a tie);
        the most active of all when none falls inside; None when there is none at all."""
        if self._candidate is not None:
            self._store()
        inside = [v for v in self._index.values() if start <= v[1] <= end]
        if not inside:
            inside = list(self._index.values())
        if not inside:
            return None
        _, _, offset, length = max(inside, key=lambda v: (v[0], -abs(v[1] - peak)))
        self._file.seek(offset)
        return self._file.read(length)

    def close(self) -> None:
        self._file.close()


def thumbnail_jpeg(frame: np.ndarray, max_width: int) -> bytes | None:
    """A JPEG of `frame`, at most `max_width` pixels wide."""
    height, width = frame.shape[:2]
    if width > max_width:
        frame = downscale(frame, (max_width, max(2, round(height * max_width / width))))
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return jpeg.tobytes() if ok else None
