"""The analysis pipeline: one streaming pass over the video, then the signal processing.

`analyze` owns the loop (as PySceneDetect's SceneManager does): frames come from `SampledFrames`,
each sampled frame goes to the detectors' `process_frame`, progress is reported per segment of
video and the cancel event is checked between samples and between the stages after the pass.

Three threads share the work, so that two cores are kept busy: FFmpeg decodes (in its own
threads, driven by `SampledFrames`' thread), a second thread measures the motion of each sampled
frame (`_measured`), and this one runs the pose estimator, which mostly waits for the next
sample's motion otherwise. OpenCV, numpy, PyAV and LiteRT let go of the GIL while they compute.

Memory stays bounded whatever the video's length: per sample only a few numbers are kept (a
64-number pose-grid summary is the largest, 256 bytes), thumbnail JPEGs spill to a temporary
file, and the periodicity is computed block by block.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from analysis import pose_workout
from analysis.body import lifted_angles
from analysis.errors import VideoTooLong
from analysis.highlights import ThumbnailKeeper, highlight_windows
from analysis.motion import CUT_CHANGE, MotionDetector, MotionSample, scene_cuts
from analysis.motion_workout import find_sets, periodicity
from analysis.options import AnalysisOptions
from analysis.reel import REEL_NAME, write_reel
from analysis.results import AnalysisResult, Highlight, VideoInfo
from analysis.signals import resample
from analysis.tracking import AthleteTracker
from analysis.video import SampledFrames, check_not_cut_short, open_video, stop_if_cancelled
from analysis.workout import summarise

logger = logging.getLogger(__name__)

ANALYSIS_TYPES = ("highlights", "workout", "full")

ProgressCallback = Callable[[int, str], None]


class Progress:
    """Monotonic per-segment progress that survives a wrong or missing frame count."""

    def __init__(
        self,
        callback: ProgressCallback | None,
        segment_seconds: float,
        duration_estimate: float,
        ceiling: int,
    ) -> None:
        self._callback = callback
        self._segment_seconds = segment_seconds
        self._total = max(1, math.ceil(duration_estimate / segment_seconds - 1e-9))
        # The percent the analysis pass may reach; what is left is for the reel and the end.
        self.ceiling = ceiling
        self._segment = 0
        self._percent = 0

    def report(self, percent: int, message: str) -> None:
        percent = max(self._percent, min(100, int(percent)))
        self._percent = percent
        if self._callback is not None:
            self._callback(percent, message)

    def at_time(self, seconds: float) -> None:
        segment = int(seconds // self._segment_seconds) + 1
        if segment <= self._segment:
            return
        self._segment = segment
        if segment > self._total:
            # The container under-reported its length: keep moving, never reach the ceiling early.
            self._total = segment + 1
        percent = self.ceiling * (segment - 1) // self._total
        self.report(percent, f"Analyzing segment {segment}/{self._total}")


class _Features:
    """What the pass keeps per sample, in arrays that grow by doubling (no per-sample objects)."""

    def __init__(self, dims: int) -> None:
        self.count = 0
        self.times = np.zeros(256)
        self.energy = np.zeros(256)
        self.change = np.zeros(256)
        self.pose = np.zeros((256, dims), dtype=np.float32)

    def append(self, seconds: float, energy: float, change: float, pose: np.ndarray) -> None:
        if self.count == self.times.size:
            grow = self.count
            self.times = np.concatenate([self.times, np.zeros(grow)])
            self.energy = np.concatenate([self.energy, np.zeros(grow)])
            self.change = np.concatenate([self.change, np.zeros(grow)])
            self.pose = np.concatenate(
                [self.pose, np.zeros((grow, self.pose.shape[1]), np.float32)]
            )
        i = self.count
        self.times[i], self.energy[i], self.change[i], self.pose[i] = seconds, energy, change, pose
        self.count += 1


_MEASURE_AHEAD = 3
"""Sampled frames the motion thread may run ahead of the pose estimator (each holds its frame)."""

_POLL_S = 0.1


def _measured(
    sampled: SampledFrames, motion: MotionDetector
) -> Iterator[tuple[int, np.ndarray, float, MotionSample]]:
    """`sampled`'s frames with their motion, measured in a second thread a few samples ahead.

    Yields `(index, frame, reached, motion sample)` in order; an error of the decoding or of the
    motion maths is raised here. The thread (and the decoding under it) has ended when this
    generator ends, raises or is closed."""
    handed: queue.Queue[tuple[int, np.ndarray, float, MotionSample] | BaseException | None]
    handed = queue.Queue(maxsize=_MEASURE_AHEAD)
    stop = threading.Event()

    def hand_over(item: tuple[int, np.ndarray, float, MotionSample] | BaseException | None) -> bool:
        while not stop.is_set():
            try:
                handed.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def measure() -> None:
        frames = iter(sampled)
        try:
            for index, frame, reached in frames:
                if not hand_over((index, frame, reached, motion.process_frame(frame))):
                    return
            hand_over(None)
        except BaseException as exc:  # handed to the iterating thread, which raises it
            hand_over(exc)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()  # stops and joins the decoding thread

    worker = threading.Thread(target=measure, name="motion", daemon=True)
    worker.start()
    try:
        while True:
            item = handed.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        worker.join()


def _athlete_tracker(options: AnalysisOptions) -> AthleteTracker | None:
    """A tracker for this analysis, or None when no pose estimator is installed."""
    try:
        from analysis.pose import PoseUnavailable
    except ImportError as exc:  # pragma: no cover - the pose module ships with the engine
        logger.warning("pose estimation unavailable, the workout is analysed on motion: %s", exc)
        return None
    try:
        return AthleteTracker(options.sample_fps, options)
    except PoseUnavailable as exc:
        logger.warning("pose estimation unavailable, the workout is analysed on motion: %s", exc)
        return None


def analyze(
    video_path: str | os.PathLike[str],
    analysis_type: str = "highlights",
    progress_callback: ProgressCallback | None = None,
    *,
    cancel_event: threading.Event | None = None,
    output_dir: str | os.PathLike[str] | None = None,
    options: AnalysisOptions | None = None,
) -> AnalysisResult:
    """Analyse a video in one decoding pass (plus a second, partial one for a reel).

    Args:
        video_path: the video file.
        analysis_type: "highlights", "workout" or "full" (both from the same pass).
        progress_callback: called with (percent, message) per segment; percent never goes
            down and ends at exactly 100.
        cancel_event: checked every frame and between the stages after the pass; once set the
            analysis raises AnalysisCancelled.
        output_dir: where thumbnails and the reel are written; without it none are.
        options: the analysis options (defaults when None).

    Returns:
        The analysis result; artifact references are file names inside `output_dir`.

    Raises:
        ValueError: unknown analysis_type.
        InvalidVideo: the file cannot be opened or its first frame decoded.
        VideoDecodeError: decoding failed part-way, or stopped well short of the container's
            declared length.
        VideoTooLong: the video is longer than `options.max_seconds`.
        AnalysisCancelled: `cancel_event` was set.
    """
    if analysis_type not in ANALYSIS_TYPES:
        raise ValueError(
            f"analysis_type must be one of {', '.join(ANALYSIS_TYPES)}, got {analysis_type!r}"
        )
    options = options or AnalysisOptions()
    began = time.perf_counter()
    want_highlights = analysis_type in ("highlights", "full")
    want_workout = analysis_type in ("workout", "full")
    out_dir = Path(output_dir) if output_dir is not None else None
    want_reel = options.reel and want_highlights and out_dir is not None
    thumbnails = (
        ThumbnailKeeper(out_dir, options.thumbnail_width)
        if want_highlights and out_dir is not None
        else None
    )
    try:
        return _analyze(
            video_path,
            analysis_type,
            progress_callback,
            cancel_event,
            out_dir,
            options,
            thumbnails,
            want_workout,
            want_reel,
            began,
        )
    finally:
        if thumbnails is not None:
            thumbnails.close()


def _analyze(
    video_path: str | os.PathLike[str],
    analysis_type: str,
    progress_callback: ProgressCallback | None,
    cancel_event: threading.Event | None,
    out_dir: Path | None,
    options: AnalysisOptions,
    thumbnails: ThumbnailKeeper | None,
    want_workout: bool,
    want_reel: bool,
    began: float,
) -> AnalysisResult:
    with open_video(video_path, options.decoder) as stream:
        fps, declared = stream.fps, stream.declared_duration
        if options.max_seconds is not None and declared > options.max_seconds:
            raise VideoTooLong(
                f"the video is longer than the {options.max_seconds / 60:g} minutes accepted"
            )
        height, width = stream.first_frame.shape[:2]
        progress = Progress(
            progress_callback,
            options.segment_seconds,
            declared if declared > 0 else 60.0,
            85 if want_reel else 95,
        )
        motion = MotionDetector(width, height, options)
        features = _Features(options.projection_dims)
        tracker = _athlete_tracker(options) if want_workout and options.pose else None
        reached = 0.0
        reported = 0  # frames whose progress has been reported, as a frame-by-frame loop would
        sampled = SampledFrames(stream, 1.0 / options.sample_fps, cancel_event, options.max_seconds)
        for index, frame, position, moved in _measured(sampled, motion):
            for skipped in range(reported, index):
                stop_if_cancelled(cancel_event)
                progress.at_time(skipped / fps)
            stop_if_cancelled(cancel_event)
            seconds = index / fps
            reached = max(reached, position)
            features.append(seconds, moved.energy, moved.change, moved.pose)
            if tracker is not None:
                if moved.change >= CUT_CHANGE:
                    # Perhaps a cut, perhaps something sweeping past: look now.
                    tracker.picture_changed()
                box = tracker.box
                box_motion = moved.moving_fraction_in(box) if box is not None else None
                tracker.process_frame(features.count - 1, seconds, frame, box_motion)
            if thumbnails is not None:
                thumbnails.offer(seconds, moved.energy, frame)
            progress.at_time(seconds)
            reported = index + 1
        for skipped in range(reported, sampled.frames):
            stop_if_cancelled(cancel_event)
            progress.at_time(skipped / fps)
        stop_if_cancelled(cancel_event)
        frames = sampled.frames

    duration = frames / fps
    check_not_cut_short(declared, max(reached, duration))
    info = VideoInfo(round(duration, 2), round(fps, 3), stream.width, stream.height, frames)
    logger.info(
        "decoded %s frames (container said %s), %s samples",
        frames,
        round(declared * fps),
        features.count,
    )
    n = features.count
    times = features.times[:n]
    grid, energy_u = resample(times, features.energy[:n], options.sample_fps)
    cut_u = np.zeros(grid.size, dtype=bool)
    cuts = scene_cuts(features.change[:n])
    cut_u[np.clip(np.searchsorted(grid, times[cuts]), 0, grid.size - 1)] = True
    progress.report(progress.ceiling, "Finding sets and highlights")

    # Sets are found once: the workout reports them, the highlights prefer them. On the body
    # when a person was followed reliably, else on the motion of the picture.
    stop_if_cancelled(cancel_event)
    method = "motion"
    if tracker is not None and tracker.reliable(options.min_pose_coverage):
        track = tracker.track.sorted()
        body = pose_workout.to_grid(track, lifted_angles(track), options.sample_fps, duration)
        sets = pose_workout.find_sets(body, options, cancel_event)
        method = "pose"
        logger.info(
            "workout on the body: %d pose estimates (%d found a person), %d set(s)",
            tracker.estimates,
            tracker.found,
            len(sets),
        )
    else:
        if tracker is not None:
            logger.info(
                "no person followed reliably (%d of %d estimates): workout on motion",
                tracker.found,
                tracker.estimates,
            )
        _, pose_u = resample(times, features.pose[:n].astype(np.float64), options.sample_fps)
        period, strength = periodicity(pose_u, options, cancel_event)
        sets = find_sets(grid, energy_u, pose_u, period, strength, options, cancel_event)
    del features
    stop_if_cancelled(cancel_event)
    in_set = np.zeros(grid.size, dtype=bool)
    for s in sets:
        in_set[(grid >= s.start) & (grid < s.end)] = True
    workout = summarise(grid, energy_u, sets, duration, options, method) if want_workout else None

    highlights = None
    artifacts: list[str] = []
    reel_name = None
    if analysis_type in ("highlights", "full"):
        windows = highlight_windows(grid, energy_u, in_set, cut_u, duration, options)
        highlights = []
        for rank, (start, end, score, reason, peak) in enumerate(windows, 1):
            name = None
            if out_dir is not None and thumbnails is not None:
                jpeg = thumbnails.pick(start, end, peak)
                if jpeg is not None:
                    name = f"highlight_{rank}.jpg"
                    (out_dir / name).write_bytes(jpeg)
                    artifacts.append(name)
            highlights.append(Highlight(start, end, score, reason, peak, name))
        if want_reel and highlights:
            assert out_dir is not None
            ceiling = progress.ceiling

            def reel_progress(fraction: float) -> None:
                stop_if_cancelled(cancel_event)
                progress.report(ceiling + int((99 - ceiling) * fraction), "Writing highlight reel")

            write_reel(
                video_path,
                [(h.start, h.end) for h in highlights],
                out_dir / REEL_NAME,
                options,
                cancel_event,
                reel_progress,
            )
            reel_name = REEL_NAME
            artifacts.append(REEL_NAME)

    progress.report(100, "Analysis complete")
    return AnalysisResult(
        analysis_type,
        info,
        highlights,
        workout,
        reel_name,
        round(time.perf_counter() - began, 3),
        artifacts,
    )
