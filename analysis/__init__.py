"""The video analysis engine, one concern per module.

It is pure: a video path, options, a progress callback and a cancel event go in, a frozen result
comes out, and the only files it writes are artifacts inside the output folder it is given. It
imports nothing from the web service. `railway_video_generator.py` is its thin public facade.
"""

from analysis.errors import AnalysisCancelled, InvalidVideo, VideoDecodeError, VideoTooLong
from analysis.options import AnalysisOptions
from analysis.pipeline import ANALYSIS_TYPES, ProgressCallback, analyze
from analysis.reel import REEL_NAME
from analysis.results import AnalysisResult, Highlight, VideoInfo, WorkoutSegment, WorkoutSummary
from analysis.video import probe_video

__all__ = [
    "ANALYSIS_TYPES",
    "REEL_NAME",
    "AnalysisCancelled",
    "AnalysisOptions",
    "AnalysisResult",
    "Highlight",
    "InvalidVideo",
    "ProgressCallback",
    "VideoDecodeError",
    "VideoInfo",
    "VideoTooLong",
    "WorkoutSegment",
    "WorkoutSummary",
    "analyze",
    "probe_video",
]
