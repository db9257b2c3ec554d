"""Wire types: the pydantic models the API reads and writes, and nothing internal.

Field names are the frontend's contract (`sessionId`, `queuePosition`...): keep them, add only.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from session_manager import SessionStatus


class Exercise(StrEnum):
    """The exercises the analysis names (see `analysis.results.EXERCISES`)."""

    SQUAT = "squat"
    JUMPING_JACK = "jumping_jack"
    BICEP_CURL = "bicep_curl"
    PUSH_UP = "push_up"
    LUNGE = "lunge"
    UNKNOWN = "unknown"


class AnalysisType(StrEnum):
    """What to compute: highlights, the workout (sets, reps), or both in one pass."""

    HIGHLIGHTS = "highlights"
    WORKOUT = "workout"
    FULL = "full"


class AnalysisParams(BaseModel):
    """The optional `params` form field: a JSON object with any of these keys."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    segment_seconds: float = Field(5.0, ge=1, le=60, description="Length of an analysis segment.")
    max_highlights: int = Field(5, ge=1, le=20, description="Most highlights returned.")
    highlight_seconds: float = Field(5.0, ge=1, le=30, description="Length of a highlight window.")
    sample_fps: float = Field(10.0, ge=2, le=30, description="Frames analysed per second.")
    reel: bool = Field(False, description="Also cut the highlights into an H.264 MP4 reel.")


class Message(BaseModel):
    message: str = Field(examples=["Session cleaned up successfully"])


class ErrorResponse(BaseModel):
    """Every error the API answers has this shape."""

    detail: str = Field(examples=["Session not found"])


class UploadResponse(BaseModel):
    sessionId: str
    status: SessionStatus
    message: str
    eventsUrl: str = Field(
        description="The session's event stream; signed (expires, token) when API_KEY is set, "
        "so that an EventSource, which cannot send X-API-Key, can open it."
    )

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sessionId": "2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11",
                    "status": "queued",
                    "message": "Video uploaded successfully",
                    "eventsUrl": "/api/v1/video/events/2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11",
                }
            ]
        }
    )


class StatusResponse(BaseModel):
    sessionId: str
    status: SessionStatus
    progress: int = Field(ge=0, le=100)
    message: str
    analysisType: AnalysisType
    createdAt: float = Field(description="Unix time, seconds.")
    updatedAt: float = Field(description="Unix time, seconds.")
    queuePosition: int | None = Field(None, description="1-based, only while queued.")
    error: str | None = Field(None, description="Only when failed.")

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sessionId": "2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11",
                    "status": "processing",
                    "progress": 65,
                    "message": "Analyzing segment 13/20",
                    "analysisType": "workout",
                    "createdAt": 1795489366.16,
                    "updatedAt": 1795489370.02,
                }
            ]
        }
    )


class CancelResponse(BaseModel):
    sessionId: str
    status: Literal[SessionStatus.CANCELLED]
    message: str

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sessionId": "2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11",
                    "status": "cancelled",
                    "message": "Processing cancelled successfully",
                }
            ]
        }
    )


class VideoMeta(BaseModel):
    duration: float
    fps: float
    width: int
    height: int
    frame_count: int


class HighlightReason(StrEnum):
    """Why a window is a highlight: a closed set, described in HIGHLIGHT_REASONS."""

    HIGH_MOTION = "high_motion"
    PEAK_INTENSITY = "peak_intensity"
    SCENE_CHANGE = "scene_change"
    LOW_MOTION = "low_motion"


HIGHLIGHT_REASONS: dict[HighlightReason, str] = {
    HighlightReason.HIGH_MOTION: "sustained movement across the window (a set in full swing)",
    HighlightReason.PEAK_INTENSITY: "one short burst that towers over the rest of its window "
    "(a jump, a throw)",
    HighlightReason.SCENE_CHANGE: "the window contains a cut: the whole picture changes at once",
    HighlightReason.LOW_MOTION: "little movement anywhere: the video's most active moments are "
    "still quiet ones",
}


class HighlightOut(BaseModel):
    start: float
    end: float
    score: float = Field(ge=0, le=1)
    reason: HighlightReason = Field(
        description="Why this window is a highlight. "
        + "; ".join(f"`{r.value}`: {text}" for r, text in HIGHLIGHT_REASONS.items())
        + "."
    )
    thumbnail_url: str | None
    peak_time: float | None = None


class SegmentOut(BaseModel):
    start: float
    end: float
    kind: Literal["active", "rest"]
    reps: int
    rep_times: list[float] = Field(description="The moment of each rep (its turning point).")
    tempo: float | None = Field(description="Repetitions per minute; null for a rest.")
    intensity: float = Field(ge=0, le=1)
    exercise: Exercise | None = Field(
        None,
        description="The exercise of a set (`unknown` when none fits, always with the motion "
        "method); null for a rest.",
    )
    exercise_confidence: float | None = Field(
        None, ge=0, le=1, description="How sure the exercise is, 0..1; null for a rest."
    )
    rep_durations: list[float] = Field(
        default_factory=list, description="Seconds each rep took, in order; empty for a rest."
    )
    range_of_motion: list[float] | None = Field(
        None,
        description="Degrees the dominant joint moved in each rep (e.g. knee flexion for a "
        "squat); null when not measured (the motion method, or a rest).",
    )
    dominant_joint: Literal["knee", "hip", "elbow", "shoulder"] | None = Field(
        None, description="The joint whose angle counts the reps and measures range_of_motion."
    )


class WorkoutOut(BaseModel):
    total_reps: int
    active_time: float
    rest_time: float
    segments: list[SegmentOut]
    method: Literal["pose", "motion"] = Field(
        "motion",
        description="`pose`: sets and reps from the athlete's body (a pose estimator followed "
        "them); `motion`: from the motion of the picture, when no person could be followed "
        "reliably (no exercise names, no range of motion).",
    )


class AnalysisData(BaseModel):
    """The analysis result. `highlights` is present for highlights and full, `workout` for
    workout and full, `reel_url` when a reel was asked for; times are seconds from the start."""

    analysis_type: AnalysisType
    video: VideoMeta
    highlights: list[HighlightOut] | None = None
    workout: WorkoutOut | None = None
    reel_url: str | None = None
    processing_time: float

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "analysis_type": "full",
                    "video": {
                        "duration": 23.1,
                        "fps": 30.0,
                        "width": 480,
                        "height": 270,
                        "frame_count": 693,
                    },
                    "highlights": [
                        {
                            "start": 14.1,
                            "end": 19.1,
                            "score": 1.0,
                            "reason": "high_motion",
                            "thumbnail_url": "/api/v1/video/artifacts/"
                            "2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11/highlight_1.jpg",
                            "peak_time": 16.2,
                        }
                    ],
                    "workout": {
                        "total_reps": 6,
                        "active_time": 7.5,
                        "rest_time": 15.6,
                        "segments": [
                            {
                                "start": 0.0,
                                "end": 3.1,
                                "kind": "rest",
                                "reps": 0,
                                "rep_times": [],
                                "tempo": None,
                                "intensity": 0.1,
                            },
                            {
                                "start": 3.1,
                                "end": 10.6,
                                "kind": "active",
                                "reps": 6,
                                "rep_times": [3.7, 4.9, 6.1, 7.3, 8.6, 9.9],
                                "tempo": 48.3,
                                "intensity": 0.67,
                            },
                        ],
                    },
                    "reel_url": "/api/v1/video/artifacts/"
                    "2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11/highlight_reel.mp4",
                    "processing_time": 3.1,
                }
            ]
        }
    )


class ResultsResponse(BaseModel):
    sessionId: str
    status: Literal[SessionStatus.COMPLETED]
    data: AnalysisData

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "sessionId": "2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11",
                    "status": "completed",
                    "data": {
                        "analysis_type": "workout",
                        "video": {
                            "duration": 55.3,
                            "fps": 30.0,
                            "width": 640,
                            "height": 360,
                            "frame_count": 1658,
                        },
                        "workout": {
                            "total_reps": 10,
                            "active_time": 22.1,
                            "rest_time": 7.9,
                            "segments": [
                                {
                                    "start": 4.0,
                                    "end": 26.1,
                                    "kind": "active",
                                    "reps": 10,
                                    "rep_times": [4.1, 6.3],
                                    "tempo": 27.2,
                                    "intensity": 0.8,
                                },
                                {
                                    "start": 26.1,
                                    "end": 34.0,
                                    "kind": "rest",
                                    "reps": 0,
                                    "rep_times": [],
                                    "tempo": None,
                                    "intensity": 0.05,
                                },
                            ],
                        },
                        "processing_time": 4.2,
                    },
                }
            ]
        }
    )


class HealthResponse(BaseModel):
    status: Literal["healthy", "degraded"] = Field(
        description="`degraded` while the session database refuses writes: changes are kept "
        "in memory and retried, and uploads answer 503 until it recovers."
    )
    running: int
    queued: int
    sessions: int

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"status": "healthy", "running": 1, "queued": 0, "sessions": 3}]
        }
    )
