"""What an analysis produces: frozen records of plain values, file references as names.

The service turns these into its wire models; nothing here knows about HTTP or sessions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

EXERCISES = ("squat", "jumping_jack", "bicep_curl", "push_up", "lunge", "unknown")
"""The exercises a set can be named as; "unknown" when none of the others fits."""

WORKOUT_METHODS = ("pose", "motion")
"""How the workout was analysed: from the athlete's body (pose) or, when no person could be
followed reliably, from the motion of the picture (motion)."""


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
    """An active set or a rest. `tempo` is reps per minute (None for rest), intensity is 0..1.

    For a set: `exercise` (one of EXERCISES) with its confidence (0..1), the duration of each rep
    (s), and, when the body was followed, the range of motion of each rep in degrees of
    `dominant_joint` (e.g. knee flexion for a squat). For a rest those are None and empty.
    """

    start: float
    end: float
    kind: str
    reps: int
    rep_times: list[float]
    tempo: float | None
    intensity: float
    exercise: str | None = None
    exercise_confidence: float | None = None
    rep_durations: list[float] = field(default_factory=list)
    range_of_motion: list[float] | None = None
    dominant_joint: str | None = None


@dataclass(frozen=True)
class WorkoutSummary:
    """Sets and rests covering the whole video, in time order."""

    total_reps: int
    active_time: float
    rest_time: float
    segments: list[WorkoutSegment]
    method: str = "motion"


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
