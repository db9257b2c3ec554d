"""What an analysis produces: frozen records of plain values, file references as names.

The service turns these into its wire models; nothing here knows about HTTP or sessions.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (refined by the analysis pass with what it decoded)."""

    duration: float
    fps: float
    width: int
    height: int
    frame_count: int


@dataclass(frozen=True)
class Highlight:
    """One highlight window; `thumbnail` is a file name inside the output directory, or None."""

    start: float
    end: float
    score: float
    reason: str
    peak_time: float
    thumbnail: str | None


@dataclass(frozen=True)
class WorkoutSegment:
    """An active set or a rest. `tempo` is reps per minute (None for rest), intensity is 0..1."""

    start: float
    end: float
    kind: str
    reps: int
    rep_times: list[float]
    tempo: float | None
    intensity: float


@dataclass(frozen=True)
class WorkoutSummary:
    """Sets and rests covering the whole video, in time order."""

    total_reps: int
    active_time: float
    rest_time: float
    segments: list[WorkoutSegment]


@dataclass(frozen=True)
class AnalysisResult:
    """Everything one analysis produced. File references are names inside `output_dir`."""

    analysis_type: str
    video: VideoInfo
    highlights: list[Highlight] | None
    workout: WorkoutSummary | None
    reel: str | None
    processing_time: float
    artifacts: list[str]
