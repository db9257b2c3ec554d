"""The engine's facade, as the specification names it: `RailwayVideoGenerator`.

The analysis itself lives in the `analysis` package, one concern per module (reading video,
camera motion, motion features, signals, sets and reps, highlights, reel, and the pipeline that
owns the loop). This module only gives it the specification's shape and re-exports the names the
service uses.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from analysis import (
    ANALYSIS_TYPES,
    REEL_NAME,
    AnalysisCancelled,
    AnalysisOptions,
    AnalysisResult,
    Highlight,
    InvalidVideo,
    ProgressCallback,
    VideoDecodeError,
    VideoInfo,
    VideoTooLong,
    WorkoutSegment,
    WorkoutSummary,
    analyze,
    probe_video,
)

__all__ = [
    "ANALYSIS_TYPES",
    "REEL_NAME",
    "AnalysisCancelled",
    "AnalysisOptions",
    "AnalysisResult",
    "Highlight",
    "InvalidVideo",
    "RailwayVideoGenerator",
    "VideoDecodeError",
    "VideoInfo",
    "VideoTooLong",
    "WorkoutSegment",
    "WorkoutSummary",
    "probe_video",
]


class RailwayVideoGenerator:
    """Analyse workout videos: highlights, sets and reps, and an optional highlight reel."""

    def __init__(self, options: AnalysisOptions | None = None) -> None:
        self.options = options or AnalysisOptions()

    def generate_highlights(
        self,
        video_path: str | os.PathLike[str],
        progress_callback: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> AnalysisResult:
        """The most intense moments of the video. Same keyword arguments as `analyze`."""
        return self.analyze(video_path, "highlights", progress_callback, **kwargs)

    def analyze_workout_with_timestamps(
        self,
        video_path: str | os.PathLike[str],
        progress_callback: ProgressCallback | None = None,
        **kwargs: Any,
    ) -> AnalysisResult:
        """Sets, rests, reps with their times. Same keyword arguments as `analyze`."""
        return self.analyze(video_path, "workout", progress_callback, **kwargs)

    def analyze(
        self,
        video_path: str | os.PathLike[str],
        analysis_type: str = "highlights",
        progress_callback: ProgressCallback | None = None,
        *,
        cancel_event: threading.Event | None = None,
        output_dir: str | os.PathLike[str] | None = None,
        options: AnalysisOptions | None = None,
    ) -> AnalysisResult:
        """Analyse a video; see `analysis.analyze` (options default to the generator's)."""
        return analyze(
            video_path,
            analysis_type,
            progress_callback,
            cancel_event=cancel_event,
            output_dir=output_dir,
            options=options or self.options,
        )
