"""What a caller may tune (`AnalysisOptions`), with the engine's own tunables beside them.

Every field has a docstring and a named default; the public ones are bounded here as well as in
the API's wire model, so the engine refuses nonsense whoever calls it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_PUBLIC_BOUNDS: dict[str, tuple[float, float]] = {
    "segment_seconds": (1.0, 60.0),
    "max_highlights": (1, 20),
    "highlight_seconds": (1.0, 30.0),
    "sample_fps": (2.0, 30.0),
}


@dataclass(frozen=True)
class AnalysisOptions:
    """What the caller may tune, plus the engine's private tunables (named, with their reasons)."""

    segment_seconds: float = 5.0
    """Length of a progress segment in seconds ("Analyzing segment i/N"); 1..60."""

    max_highlights: int = 5
    """At most this many highlight windows; 1..20."""

    highlight_seconds: float = 5.0
    """Length of a highlight window in seconds; 1..30."""

    sample_fps: float = 10.0
    """Frames analysed per second of video (the rest are decoded and skipped); 2..30."""

    reel: bool = False
    """Also write an H.264 highlight reel (`highlight_reel.mp4`) into the output directory."""

    max_seconds: float | None = None
    """Refuse a video longer than this (VideoTooLong), measured while decoding: a container may
    not declare its length, or declare a wrong one. None accepts any length."""

    decoder: str = "pyav"
    """How frames are decoded: "pyav" (skips H.264's deblocking, a quarter of decoding) or
    "opencv" (see analysis.video)."""

    analysis_width: int = 256
    """Width in pixels of the grey image the motion is measured on (height keeps the aspect)."""

    grid_width: int = 48
    """Width in cells of the coarse pose grid; fine enough to see a forearm move at 256 px."""

    grid_blur: float = 1.5
    """Gaussian blur of the pose grid, in cells: thin limbs then change the grid smoothly."""

    projection_dims: int = 64
    """Numbers kept per sample from the pose grid (random projection: distances survive)."""

    diff_threshold: float = 14.0
    """Grey levels (brightness-normalised, lightly blurred) a pixel must change to be moving."""

    moving_fraction: float = 0.002
    """Smoothed fraction of moving pixels below which a stretch is considered still."""

    min_period: float = 0.5
    """Shortest repetition period in seconds."""

    max_period: float = 6.0
    """Longest repetition period in seconds."""

    periodicity_threshold: float = 0.45
    """Self-similarity at the rep period (0..1) from which motion counts as repetitive."""

    min_reps: int = 4
    """A periodic stretch with fewer repetitions is not a set: adjusting and shuffling between sets
    produce two or three similar movements in a row often enough."""

    pose: bool = True
    """Analyse the workout on the athlete's body when a pose estimator is installed and finds a
    person; otherwise (and always when False) on the motion of the picture."""

    pose_model: str = "lite"
    """BlazePose landmark model: "lite" (faster) or "full" (see analysis.pose)."""

    pose_max_interval: float = 0.4
    """Seconds between pose estimates while the athlete holds still (the least pose rate)."""

    samples_per_rep: float = 7.0
    """Pose estimates per repetition once the tempo is known: enough to count a rep and to find
    its turning points, which are then refined between samples."""

    pose_search_interval: float = 1.0
    """Seconds between looks for a person while nobody is followed (the detector is costly)."""

    min_pose_coverage: float = 0.6
    """Fraction of the video's pose estimates that must find a reliable person for the workout
    to be analysed on the body; below it the motion analysis is used."""

    max_pause: float = 6.0
    """A set that stops for at most this many seconds and goes on with the same exercise is one
    set with a pause, not two sets."""

    thumbnail_width: int = 320
    """Maximum width of a highlight thumbnail in pixels."""

    reel_max_height: int = 720
    """The reel is scaled down to at most this many lines (the shorter side for portrait video)."""

    def __post_init__(self) -> None:
        for name, (low, high) in _PUBLIC_BOUNDS.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{name} must be a number, got {type(value).__name__}")
            if name == "max_highlights" and not isinstance(value, int):
                raise ValueError(f"max_highlights must be an integer, got {value!r}")
            if not math.isfinite(value) or not low <= value <= high:
                raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
        if not isinstance(self.reel, bool):
            raise ValueError(f"reel must be true or false, got {self.reel!r}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"max_seconds must be positive, got {self.max_seconds!r}")
        if not 0 < self.min_period < self.max_period:
            raise ValueError("min_period must be positive and below max_period")
        if self.decoder not in ("pyav", "opencv"):
            raise ValueError(f"decoder must be pyav or opencv, got {self.decoder!r}")
        if self.pose_model not in ("lite", "full"):
            raise ValueError(f"pose_model must be lite or full, got {self.pose_model!r}")
        if not 0 < self.pose_max_interval <= 2 or not 0 < self.pose_search_interval <= 10:
            raise ValueError("pose_max_interval and pose_search_interval are out of range")
        if self.analysis_width < 32 or self.grid_width < 4 or self.projection_dims < 4:
            raise ValueError("analysis_width, grid_width and projection_dims are too small")
