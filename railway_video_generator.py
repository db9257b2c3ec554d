"""The video analysis engine: highlights, workout sets and repetitions, and the highlight reel.

This module owns everything that looks at pixels. It is pure: a video path, options, a progress
callback and a cancel event go in, a frozen `AnalysisResult` comes out, and the only files it writes
are artifacts (thumbnails, reel) inside the `output_dir` it is given. It imports nothing from the
web service.

How it works, in one streaming pass over the video:

1. Every frame is decoded (`grab()`), but only about `sample_fps` frames per second are converted
   (`retrieve()`) and shrunk to a small grey image, brightness-normalised against flicker.
2. The camera's shake and drift are measured against a reference frame (coarse-to-fine
   Lucas-Kanade on a 3x3 grid of tiles, median of the tiles) and removed, so what remains is the
   motion of the subject. Per sample we keep a handful of numbers: the fraction of pixels that
   moved, whether it looked like a cut, and a 64-number random projection of a coarse, aligned,
   blurred grid of the frame (a compact stand-in for the pose). Per second we keep one JPEG
   thumbnail candidate. That is a few kilobytes per second of video, whatever the resolution.
3. Workout: a pose that repeats shows as a high self-similarity of the projected frames at the rep
   period. Stretches that are both moving and periodic become sets; everything else (stillness,
   fidgeting, adjusting) is rest. In each set the frames are projected on their leading principal
   component, and a hysteresis counter turns that one-dimensional signal into repetitions; reps at
   the edges of a set count only if they keep its rhythm, stay in its plane of motion and pass
   through its start pose.
4. Highlights: the windows with the most subject motion, greedily, without overlap; windows on a
   set come first (fidgeting between sets moves pixels but is not a highlight).
5. Reel (optional): a second, seek-based pass with PyAV over just the highlight windows, encoded
   H.264/yuv420p with faststart so browsers play it.
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger(__name__)


ANALYSIS_TYPES = ("highlights", "workout", "full")

ProgressCallback = Callable[[int, str], None]


class InvalidVideo(ValueError):
    """The file cannot be opened or decoded as a video."""


class AnalysisCancelled(Exception):
    """The caller set the cancel event; the analysis stopped early."""


class VideoDecodeError(RuntimeError):
    """Decoding failed part-way through a video that opened fine."""


@dataclass(frozen=True)
class VideoInfo:
    """What the container says about a video (refined by the analysis pass with what it decoded)."""

    duration: float
    fps: float
    width: int
    height: int
    frame_count: int


# --------------------------------------------------------------------------------------------
# Options
# --------------------------------------------------------------------------------------------

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
        if not 0 < self.min_period < self.max_period:
            raise ValueError("min_period must be positive and below max_period")
        if self.analysis_width < 32 or self.grid_width < 4 or self.projection_dims < 4:
            raise ValueError("analysis_width, grid_width and projection_dims are too small")


# --------------------------------------------------------------------------------------------
# Results
# --------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------
# Opening videos
# --------------------------------------------------------------------------------------------


def _open_capture(path: str | os.PathLike) -> cv2.VideoCapture:
    """Open a capture, or raise InvalidVideo. The caller releases it."""
    if not Path(path).is_file():
        raise InvalidVideo("video file does not exist")
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise InvalidVideo("the file is not a video OpenCV can open")
    return capture


def _container_fps(capture: cv2.VideoCapture) -> float:
    fps = capture.get(cv2.CAP_PROP_FPS)
    # A missing or absurd rate would wreck every timestamp; 30 is the commonest real rate.
    if not math.isfinite(fps) or not 1.0 <= fps <= 1000.0:
        logger.warning("container reports fps=%s; assuming 30", fps)
        return 30.0
    return float(fps)


def _container_frame_count(capture: cv2.VideoCapture) -> int:
    count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
    if not math.isfinite(count) or count < 0:
        return 0
    return int(count)


def _first_frame(capture: cv2.VideoCapture) -> tuple[np.ndarray, float, int]:
    """The first decoded frame, the frame rate and the container's frame count."""
    try:
        ok, frame = capture.read()
    except cv2.error as exc:
        raise InvalidVideo("the first frame could not be decoded") from exc
    if not ok or frame is None or frame.size == 0:
        raise InvalidVideo("no frame could be decoded from the file")
    return frame, _container_fps(capture), _container_frame_count(capture)


def probe_video(path: str | os.PathLike) -> VideoInfo:
    """Check that a file is a decodable video and describe it.

    Args:
        path: the video file.

    Returns:
        Duration, frame rate, size of a decoded frame and the container's frame count (which may be
        wrong or 0; the analysis never relies on it).

    Raises:
        InvalidVideo: the file cannot be opened or its first frame cannot be decoded.
    """
    capture = _open_capture(path)
    try:
        frame, fps, count = _first_frame(capture)
        height, width = frame.shape[:2]
        return VideoInfo(round(count / fps, 2), round(fps, 3), int(width), int(height), count)
    finally:
        capture.release()


# --------------------------------------------------------------------------------------------
# Progress
# --------------------------------------------------------------------------------------------


class _Progress:
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


# --------------------------------------------------------------------------------------------
# The streaming pass
# --------------------------------------------------------------------------------------------


@dataclass
class _Scan:
    """What the streaming pass keeps: a few numbers per sample and a JPEG per second."""

    fps: float
    width: int
    height: int
    frames: int = 0
    times: list[float] = field(default_factory=list)
    energy: list[float] = field(default_factory=list)
    cut: list[bool] = field(default_factory=list)
    pose: list[np.ndarray] = field(default_factory=list)
    # second -> (energy, time, jpeg bytes) of the most active sampled frame of that second
    thumbs: dict[int, tuple[float, float, bytes]] = field(default_factory=dict)
    # The furthest presentation time decoded (s). Unlike the frame count it is right for
    # variable-frame-rate video, so it is what tells a file that ends early from one that lies.
    reached: float = 0.0


def _downscale(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Shrink a frame fast. INTER_AREA straight from 1080p costs ~8 ms in OpenCV 5; picking every
    other pixel down to twice the target and then averaging 2x2 costs ~0.3 ms and still averages
    four samples per output pixel (noise is blurred further downstream anyway)."""
    width, height = size
    if frame.shape[1] >= 2 * width and frame.shape[0] >= 2 * height:
        frame = cv2.resize(frame, (2 * width, 2 * height), interpolation=cv2.INTER_NEAREST)
        return cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(frame, size, interpolation=cv2.INTER_LINEAR)


def _tile_sums(image: np.ndarray, tile_h: int, tile_w: int) -> np.ndarray:
    """Sums over a 3x3 grid of tiles, row by row (the remainder rows/columns are ignored)."""
    # INTER_AREA on an exact 3x3 reduction is a tile mean, and far cheaper than numpy's reshape-sum.
    means = cv2.resize(image[: 3 * tile_h, : 3 * tile_w], (3, 3), interpolation=cv2.INTER_AREA)
    return means.ravel().astype(np.float64) * (tile_h * tile_w)


def _column_median(values: np.ndarray) -> np.ndarray:
    """`np.median(values, axis=0)` for a few rows, bit for bit, without its ~60 us of overhead
    (it ran six times per sample). NaN is passed on as np.median does."""
    ordered = np.sort(values, axis=0)
    half = ordered.shape[0] // 2
    if ordered.shape[0] % 2:
        middle = ordered[half]
    else:
        middle = (ordered[half - 1] + ordered[half]) / 2
    # np.sort puts NaN last, where the middle may miss it; np.median would return NaN.
    return np.where(np.isnan(ordered[-1]), np.nan, middle)


class _CameraTracker:
    """Where the camera is relative to a reference frame: a translation, in pixels.

    Coarse-to-fine Lucas-Kanade from an eighth to a half of the analysis size (sub-pixel at half
    size is plenty), solved separately on each tile of a 3x3 grid and combined by the median: the
    person moves a few tiles, the camera moves them all. It is measured against a fixed reference
    rather than the previous frame because summing frame-to-frame estimates is a random walk that
    slowly misaligns everything. (Phase correlation on windowed tiles was tried first: it is biased
    towards zero shift and half a pixel off.)
    """

    LEVELS = (3, 2, 1)
    """Pyramid levels used, coarse to fine (level k is 2**k times smaller than the input); the
    coarsest one catches a hand-held jolt of ten pixels or more between two samples."""

    def __init__(self) -> None:
        self.levels: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]
        self.levels = {}

    @classmethod
    def _pyramid(cls, image: np.ndarray) -> dict[int, np.ndarray]:
        out = {}
        for level in range(1, max(cls.LEVELS) + 1):
            image = cv2.pyrDown(image)
            out[level] = image
        return out

    def anchor(self, reference: np.ndarray) -> None:
        self.levels = {}
        for level, image in self._pyramid(reference).items():
            if level not in self.LEVELS:
                continue
            gx = cv2.Sobel(image, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)
            gy = cv2.Sobel(image, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)
            tile_h, tile_w = image.shape[0] // 3, image.shape[1] // 3
            sxx = _tile_sums(gx * gx, tile_h, tile_w)
            sxy = _tile_sums(gx * gy, tile_h, tile_w)
            syy = _tile_sums(gy * gy, tile_h, tile_w)
            det = sxx * syy - sxy * sxy
            # A tile of flat wall cannot tell where it moved: require texture in both directions.
            trace = sxx + syy
            smallest = trace / 2 - np.sqrt(np.maximum(trace * trace / 4 - det, 0.0))
            usable = smallest > 0.05 * tile_h * tile_w
            safe = np.where(usable, det, 1.0)
            inverse = (
                np.stack([np.stack([syy, -sxy], axis=1), np.stack([-sxy, sxx], axis=1)], axis=1)
                / safe[:, None, None]
            )
            self.levels[level] = (image, gx, gy, inverse, usable)

    def locate(self, grey: np.ndarray, start: tuple[float, float]) -> tuple[float, float] | None:
        """The camera shift of `grey`, starting the search at `start`; None if it cannot be told."""
        pyramid = self._pyramid(grey)
        shift = np.array(start, dtype=np.float64)
        for level in self.LEVELS:
            reference, gx, gy, inverse, usable = self.levels[level]
            if usable.sum() < 3:
                return None
            scale = 2.0**level
            tile_h, tile_w = reference.shape[0] // 3, reference.shape[1] // 3
            for _ in range(2):
                moved = _shift_image(
                    pyramid[level], (shift[0] / scale, shift[1] / scale), reference
                )
                diff = moved - reference
                b = np.empty((9, 2))
                b[:, 0] = _tile_sums(gx * diff, tile_h, tile_w)
                b[:, 1] = _tile_sums(gy * diff, tile_h, tile_w)
                # moved(x) = reference(x - r)  =>  moved - reference = -grad . r
                residual = -np.einsum("tij,tj->ti", inverse, b)[usable]
                shift += _column_median(residual) * scale
        return float(shift[0]), float(shift[1])


class _FrameAnalyser:
    """Per-sample frame maths: brightness normalisation, camera-motion removal, motion, pose."""

    def __init__(self, width: int, height: int, options: AnalysisOptions) -> None:
        self.options = options
        # Portrait video: bound the long side instead, so a 1080x1920 phone clip costs the same.
        scale = options.analysis_width / max(width, height)
        self.size = (max(16, round(width * scale)), max(16, round(height * scale)))
        grid_scale = options.grid_width / max(self.size)
        self.grid = (
            max(4, round(self.size[0] * grid_scale)),
            max(4, round(self.size[1] * grid_scale)),
        )
        rng = np.random.default_rng(12345)
        cells = self.grid[0] * self.grid[1]
        self.projection = (
            rng.standard_normal((cells, options.projection_dims))
            / math.sqrt(options.projection_dims)
        ).astype(np.float32)
        self.camera = _CameraTracker()
        self.reference: np.ndarray | None = None
        self.prev_aligned: np.ndarray | None = None
        self.prev_cells: np.ndarray | None = None
        self.prev_shift = (0.0, 0.0)
        self.shift = (0.0, 0.0)

    def _anchor(self, grey: np.ndarray) -> None:
        self.reference = grey
        self.camera.anchor(grey)
        self.shift = (0.0, 0.0)

    def process(self, frame: np.ndarray) -> tuple[float, bool, np.ndarray]:
        """Return (moving fraction, looks like a cut, pose vector) for one frame."""
        grey: np.ndarray = cv2.cvtColor(_downscale(frame, self.size), cv2.COLOR_BGR2GRAY)
        grey = grey.astype(np.float32)
        # Flicker and auto-exposure change the gain of the whole frame; undo it.
        grey *= 128.0 / max(float(grey.mean()), 1.0)
        # Sensor noise is per pixel; a light blur stops it from counting as motion.
        grey = cv2.GaussianBlur(grey, (5, 5), 1.2)
        energy, cut = 0.0, False
        self.prev_shift = self.shift
        if self.reference is None:
            self._anchor(grey)
        else:
            shift = self.camera.locate(grey, self.shift)
            if (
                shift is None
                or abs(shift[0]) > self.size[0] / 5
                or abs(shift[1]) > self.size[1] / 5
            ):
                # Lost (a cut, a textureless view) or too little overlap left with the reference
                # (a pan): start again from this frame.
                self._anchor(grey)
            else:
                self.shift = shift
        # Where the camera has drifted away, keep what was last seen there (a mosaic): the frame's
        # border then does not change with every wobble of the camera, and no motion is invented.
        fill = self.prev_aligned if self.prev_aligned is not None else self.reference
        aligned = _shift_image(grey, self.shift, fill)
        if self.prev_aligned is not None:
            xs, ys = _common_window(self.size, self.prev_shift, self.shift)
            diff = cv2.absdiff(aligned[ys, xs], self.prev_aligned[ys, xs])
            moving = diff > self.options.diff_threshold
            energy = float(moving.mean()) if moving.size else 0.0
        self.prev_aligned = aligned
        cells = cv2.resize(aligned, self.grid, interpolation=cv2.INTER_AREA)
        if self.prev_cells is not None:
            # A cut replaces the whole picture: the coarse frames stop correlating. (Counting
            # moving pixels misses cuts between two low-contrast scenes.)
            cut = _correlation(cells, self.prev_cells) < 0.3
        self.prev_cells = cells
        # Thin limbs sweep through cells abruptly; blurring the grid makes the pose vector a smooth
        # function of the pose, so slightly different timings of one movement stay close.
        cells = cv2.GaussianBlur(cells, (0, 0), self.options.grid_blur).reshape(-1)
        return energy, cut, cells @ self.projection


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation of two images (1 for the same picture, about 0 for unrelated ones)."""
    a = a - a.mean()
    b = b - b.mean()
    denominator = math.sqrt(float((a * a).sum()) * float((b * b).sum()))
    return float((a * b).sum()) / denominator if denominator > 0 else 1.0


def _thumbnail_jpeg(frame: np.ndarray, max_width: int) -> bytes | None:
    height, width = frame.shape[:2]
    if width > max_width:
        frame = _downscale(frame, (max_width, max(2, round(height * max_width / width))))
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 85])
    return jpeg.tobytes() if ok else None


def _shift_image(
    image: np.ndarray, shift: tuple[float, float], fill: np.ndarray | None = None
) -> np.ndarray:
    """Move the image back by the camera's shift, into reference-frame coordinates.

    Where the shifted image has no pixels (the camera drifted), the reference frame fills in: a
    border that changed with every wobble would look like motion.
    """
    if shift == (0.0, 0.0):
        return image
    matrix = np.array([[1, 0, -shift[0]], [0, 1, -shift[1]]], dtype=np.float32)
    size = (image.shape[1], image.shape[0])
    if fill is None or fill.shape != image.shape:
        return cv2.warpAffine(
            image, matrix, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    out = fill.copy()
    cv2.warpAffine(
        image, matrix, size, dst=out, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT
    )
    return out


def _common_window(
    size: tuple[int, int], a: tuple[float, float], b: tuple[float, float]
) -> tuple[slice, slice]:
    """Pixels that are real image (not border fill) in both of two shifted frames."""
    width, height = size
    x0 = math.ceil(max(-a[0], -b[0], 0.0)) + 1
    x1 = math.floor(min(width - 1 - a[0], width - 1 - b[0], width - 1.0))
    y0 = math.ceil(max(-a[1], -b[1], 0.0)) + 1
    y1 = math.floor(min(height - 1 - a[1], height - 1 - b[1], height - 1.0))
    return slice(x0, max(x0, x1)), slice(y0, max(y0, y1))


def _stop_if_cancelled(cancel_event: threading.Event | None) -> None:
    if cancel_event is not None and cancel_event.is_set():
        raise AnalysisCancelled("analysis cancelled")


_QUEUE_POLL_S = 0.1
# Sampled frames the decoding thread may run ahead of the analysis. They are full-size (25 MB
# each at 4K), and analysis outpaces decoding, so the queue is nearly always empty: 3 keeps the
# overlap (measured: the same speed as 8) and bounds the worst case when the CPU is contended.
_DECODE_AHEAD = 3


def _hand_over(samples: queue.Queue, stop: threading.Event, item: tuple) -> bool:
    """Put `item` on the queue unless `stop` is set first; whether it was put."""
    while not stop.is_set():
        try:
            samples.put(item, timeout=_QUEUE_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _decode_samples(
    capture: cv2.VideoCapture,
    first_frame: np.ndarray,
    fps: float,
    step: float,
    samples: queue.Queue,
    stop: threading.Event,
    cancel_event: threading.Event | None,
) -> None:
    """The decoding thread: decode every frame, hand over the sampled ones in order as
    (frame index, frame, presentation time reached in s), then (frames decoded, None, the error
    that stopped it or None). OpenCV lets go of the GIL while it decodes, so the next frames are
    decoded while the previous sample is analysed."""
    next_sample = 0.0
    index = 0
    frame: np.ndarray | None = first_frame
    error: BaseException | None = None
    try:
        while not stop.is_set():
            if cancel_event is not None and cancel_event.is_set():
                break
            seconds = index / fps
            if frame is None:
                try:
                    if not capture.grab():
                        break
                    if seconds + 1e-6 >= next_sample:
                        ok, frame = capture.retrieve()
                        if not ok or frame is None:
                            raise VideoDecodeError(
                                f"the frame at {seconds:.2f} s could not be read"
                            )
                except cv2.error as exc:
                    raise VideoDecodeError(f"decoding failed at {seconds:.2f} s: {exc}") from exc
            if frame is not None:
                next_sample = max(next_sample + step, seconds + step / 2)
                reached = capture.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
                if not _hand_over(samples, stop, (index, frame, reached)):
                    return
                frame = None
            index += 1
    except BaseException as exc:  # handed to the analysing thread, which raises it
        error = exc
    _hand_over(samples, stop, (index, None, error))


def _scan_video(
    options: AnalysisOptions,
    progress: _Progress | None,
    cancel_event: threading.Event | None,
    keep_thumbnails: bool,
    capture: cv2.VideoCapture,
    first_frame: np.ndarray,
    fps: float,
) -> _Scan:
    """Decode every frame once (in a second thread), analyse a sampled subset. The caller
    releases the capture; the decoding thread has ended when this returns or raises."""
    height, width = first_frame.shape[:2]
    scan = _Scan(fps=fps, width=width, height=height)
    analyser = _FrameAnalyser(width, height, options)
    samples: queue.Queue = queue.Queue(maxsize=_DECODE_AHEAD)
    stop = threading.Event()
    decoder = threading.Thread(
        target=_decode_samples,
        args=(capture, first_frame, fps, 1.0 / options.sample_fps, samples, stop, cancel_event),
        name="video-decode",
        daemon=True,
    )
    # The most active frame of the current second, full size; compressed when the second ends,
    # so at most one JPEG encode per second of video.
    candidate: tuple[int, float, float, np.ndarray] | None = None
    reported = 0  # frames whose progress has been reported, as a frame-by-frame loop would
    decoder.start()
    try:
        while True:
            index, frame, extra = samples.get()
            for skipped in range(reported, index):
                _stop_if_cancelled(cancel_event)
                if progress is not None:
                    progress.at_time(skipped / fps)
            reported = index
            _stop_if_cancelled(cancel_event)
            if frame is None:
                if extra is not None:
                    raise extra
                break
            seconds = index / fps
            scan.reached = max(scan.reached, extra)
            energy, cut, pose = analyser.process(frame)
            scan.times.append(seconds)
            scan.energy.append(energy)
            scan.cut.append(cut)
            scan.pose.append(pose)
            if keep_thumbnails:
                second = int(seconds)
                if candidate is not None and candidate[0] != second:
                    _store_thumbnail(scan, candidate, options)
                    candidate = None
                if candidate is None or energy > candidate[1]:
                    candidate = (second, energy, seconds, frame)
            if progress is not None:
                progress.at_time(seconds)
            reported = index + 1
    finally:
        stop.set()
        decoder.join()
    if candidate is not None:
        _store_thumbnail(scan, candidate, options)
    scan.frames = reported
    return scan


def _check_not_cut_short(declared: float, reached: float) -> None:
    """Raise VideoDecodeError when decoding stopped well before the container's duration.

    A file with a corrupt or missing tail opens, decodes its first frames at upload, and then
    the decoder gives up part-way: an analysis of the part that decoded would be presented as
    the whole video. Containers do misstate their length a little (and raw streams know
    nothing, `declared` 0), hence the margins: it must fall short by 10 % and by 2 s.
    """
    if declared > 0 and reached < declared * 0.9 and declared - reached >= 2.0:
        raise VideoDecodeError(
            f"the video stops at {reached:.1f} s of the {declared:.1f} s its container declares: "
            "the file is truncated or corrupt"
        )


def _store_thumbnail(
    scan: _Scan, candidate: tuple[int, float, float, np.ndarray], options: AnalysisOptions
) -> None:
    second, energy, seconds, frame = candidate
    jpeg = _thumbnail_jpeg(frame, options.thumbnail_width)
    if jpeg is not None:
        scan.thumbs[second] = (energy, seconds, jpeg)


# --------------------------------------------------------------------------------------------
# Signal helpers (pure numpy, unit-tested on synthetic signals)
# --------------------------------------------------------------------------------------------


def _box_smooth(signal: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average with edge-aware normalisation (no shrink towards zero at the ends)."""
    # np.convolve(mode="same") returns the longer of its inputs: never let the kernel be longer.
    width = max(1, min(int(width), signal.size))
    if width == 1 or signal.size == 0:
        return signal.astype(np.float64)
    kernel = np.ones(width)
    total = np.convolve(signal, kernel, mode="same")
    count = np.convolve(np.ones_like(signal, dtype=np.float64), kernel, mode="same")
    return total / count


def _gaussian_smooth(signal: np.ndarray, sigma: float) -> np.ndarray:
    if sigma < 0.5 or signal.size == 0:
        return signal.astype(np.float64)
    radius = min(int(3 * sigma + 0.5), (signal.size - 1) // 2)
    x = np.arange(-radius, radius + 1)
    kernel = np.exp(-0.5 * (x / sigma) ** 2)
    total = np.convolve(signal, kernel, mode="same")
    count = np.convolve(np.ones(signal.size), kernel, mode="same")
    return total / count


def _resample(times: np.ndarray, values: np.ndarray, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """Put irregular samples (24 fps sampled at 10/s: 3,2,3,2... frames apart) on a uniform grid."""
    grid = np.arange(0.0, times[-1] + 1e-9, 1.0 / rate)
    if values.ndim == 1:
        return grid, np.interp(grid, times, values)
    columns = [np.interp(grid, times, values[:, k]) for k in range(values.shape[1])]
    return grid, np.stack(columns, axis=1)


def _self_similarity(pose: np.ndarray, max_lag: int, min_half_window: int) -> np.ndarray:
    """Local self-similarity of a multichannel signal at every sample and every lag.

    S[c, L] = 1 - mean ||x_j - x_{j+L}||^2 / (2 * local variance), over the pairs whose midpoint is
    within max(L, min_half_window) samples of c. S is 1 where the signal repeats exactly after L
    samples, about 0 for unrelated samples (or pure noise) and negative for anti-phase. Column 0 is
    unused (lag 0).
    """
    n = pose.shape[0]
    similarity = np.full((n, max_lag + 1), np.nan)
    if n < 3:
        return similarity
    csum = np.vstack([np.zeros((1, pose.shape[1])), np.cumsum(pose, axis=0)])
    csq = np.concatenate([[0.0], np.cumsum((pose * pose).sum(axis=1))])
    centres = np.arange(n)
    for lag in range(1, min(max_lag, n - 1) + 1):
        dist = ((pose[lag:] - pose[:-lag]) ** 2).sum(axis=1)
        cdist = np.concatenate([[0.0], np.cumsum(dist)])
        half = max(lag, min_half_window)
        pairs = n - lag
        j0 = np.clip(centres - half - lag // 2, 0, pairs)
        j1 = np.clip(centres + half - lag // 2 + 1, 0, pairs)
        count = j1 - j0
        mean_dist = (cdist[j1] - cdist[j0]) / np.maximum(count, 1)
        s0, s1 = j0, np.minimum(j1 + lag, n)
        span = np.maximum(s1 - s0, 1)
        mean = (csum[s1] - csum[s0]) / span[:, None]
        variance = (csq[s1] - csq[s0]) / span - (mean * mean).sum(axis=1)
        value = 1.0 - mean_dist / (2.0 * np.maximum(variance, 1e-9))
        # Fewer than one period of pairs is not evidence of repetition.
        value[count < lag] = np.nan
        similarity[:, lag] = value
    return similarity


def _local_period(
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


def _runs(mask: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index pairs of the True runs of a boolean array."""
    padded = np.concatenate([[False], mask.astype(bool), [False]])
    edges = np.flatnonzero(padded[1:] != padded[:-1])
    return [(int(a), int(b)) for a, b in zip(edges[::2], edges[1::2], strict=True)]


def _close_gaps(mask: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill False gaps of at most `max_gap` samples that lie between two True runs."""
    out = mask.copy()
    runs = _runs(mask)
    for (_, end), (start, _) in zip(runs, runs[1:], strict=False):
        if start - end <= max_gap:
            out[end:start] = True
    return out


def _hysteresis_peaks(signal: np.ndarray, low: float, high: float) -> list[int]:
    """Indices of one peak per excursion above `high` that is closed by a fall below `low`.

    A Schmitt trigger: noise around either level cannot add or split a count. An excursion still
    open at the end of the signal counts (the rep reached its top; the video simply ended).
    """
    peaks: list[int] = []
    above = False
    best = -1
    for i, value in enumerate(signal):
        if above:
            if value > signal[best]:
                best = i
            if value < low:
                peaks.append(best)
                above = False
        elif value > high:
            above, best = True, i
    if above:
        peaks.append(best)
    return peaks


def _count_cycles(
    signal: np.ndarray,
    core: slice,
    period: float,
    poses: list[np.ndarray] | None = None,
    level: np.ndarray | None = None,
    level_offset: int = 0,
) -> list[int]:
    """Rep peaks of a 1-D rep signal whose set occupies `core`; the rest is margin on either side.

    Levels come from the set itself (10th/90th percentiles). Peaks in the margins join only if they
    continue the rhythm (0.6..1.45 of the typical spacing from a counted rep), reach a rep-like
    height and, when the frames' pose vectors are given, stay in the set's plane of motion
    (`_off_plane_test`): a wave or a stretch of one arm next to a set of curls is not a curl.
    With `level` (the rep axis projection, not detrended, over the whole video; index i of the
    signal is `level_offset + i` there), an edge rep must also pass through the set's start pose
    on its outer side, as a first rep starts from it and a last rep returns to it; walking off
    into another pose after the set makes no rep. (Judging that on whole pose vectors instead
    was tried: camera drift and shuffling then rejected real edge reps on held-out clips.)
    A peak after the set must also fall back below the low level before the signal ends, unless
    the signal ends with the video.
    """
    core_values = signal[core]
    if core_values.size < 3:
        return []
    bottom, top = np.percentile(core_values, [10, 90])
    amplitude = top - bottom
    if amplitude <= 0:
        return []
    peaks = _hysteresis_peaks(signal, bottom + 0.35 * amplitude, bottom + 0.65 * amplitude)
    inside = [p for p in peaks if core.start <= p < core.stop]
    if not inside:
        return []
    typical = float(np.median(signal[inside]))
    min_height = bottom + 0.5 * (typical - bottom)
    spacing = float(np.median(np.diff(inside))) if len(inside) > 1 else period
    if poses:
        looks_like_rep = _off_plane_test(poses, core, inside, spacing, (4.0, 3.5))
    else:

        def looks_like_rep(_: int) -> bool:
            return True

    reach = max(1, int(round(spacing)))
    if level is not None:
        in_core = level[core.start + level_offset : core.stop + level_offset]
        low_level, high_level = np.percentile(in_core, [10, 90])
        start_pose = low_level + 0.35 * (high_level - low_level)

    def passes_start_pose(p: int, outwards: int) -> bool:
        if level is None:
            return True
        p += level_offset
        lo, hi = (p + 1, p + 1 + reach) if outwards > 0 else (p - reach, p)
        window = level[max(0, lo) : max(0, hi)]
        # Cut short by the end of the video: the rep may well have finished off camera.
        return window.size < reach // 2 or float(window.min()) <= start_pose

    low = bottom + 0.35 * amplitude
    # The signal stops short of the video's end (at the margin of the set, not the last frame).
    cut_short = level is None or level_offset + signal.size < level.size

    def closes(p: int, outwards: int) -> bool:
        # A rep after the set must fall back below the low level, as `_hysteresis_peaks` demands
        # of every count except one still open at the video's end. Fidgeting right after a set
        # can rise to rep height and hover there until the margin ends; that is no rep.
        return outwards < 0 or not cut_short or bool((signal[p + 1 :] < low).any())

    def continues(gap: int, p: int, outwards: int) -> bool:
        return (
            0.6 * spacing <= gap <= 1.45 * spacing
            and signal[p] >= min_height
            and closes(p, outwards)
            and looks_like_rep(p)
            and passes_start_pose(p, outwards)
        )

    kept = list(inside)
    for p in reversed([p for p in peaks if p < core.start]):
        if not continues(kept[0] - p, p, -1):
            break
        kept.insert(0, p)
    for p in [p for p in peaks if p >= core.stop]:
        if not continues(p - kept[-1], p, +1):
            break
        kept.append(p)
    return kept


def _leading_axes(centred: np.ndarray, count: int) -> np.ndarray:
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


def _off_plane_test(
    poses: list[np.ndarray],
    core: slice,
    peaks: list[int],
    spacing: float,
    limits: tuple[float, ...],
) -> Callable[[int], bool]:
    """A test that the movement around a frame stays in the set's plane of motion.

    A set's frames lie close to a plane in pose space (their two leading principal components):
    one movement, repeated. Fidgeting, adjusting or stepping aside leaves that plane, even when one
    of its peaks happens to reach rep height on the rep signal. For each pose representation in
    `poses` (raw: catches a step aside; detrended: immune to camera drift), the distance to the
    plane over a rep-long window must stay within `limits` times that of the set's own reps.
    """
    half = max(1, int(round(spacing / 2)))
    tests = []
    for pose, limit in zip(poses, limits, strict=True):
        inside = pose[core]
        mean = inside.mean(axis=0)
        plane = _leading_axes(inside - mean, 2)

        def off_plane(p: int, pose=pose, mean=mean, plane=plane) -> float:
            centred = pose[max(0, p - half) : p + half + 1] - mean
            return float(np.linalg.norm(centred - (centred @ plane) @ plane.T, axis=1).mean())

        typical = float(np.median([off_plane(p) for p in peaks]))
        tests.append((off_plane, limit * typical))
    return lambda p: all(off_plane(p) <= bound for off_plane, bound in tests)


def _rep_signal(
    pose: np.ndarray, core: slice, margin: slice, period: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Project frames on the leading principal component of the set in `core`.

    Returns the rep signal over `margin` (detrended, smoothed), the detrended pose over `margin`
    and the raw projection of every sample (not detrended, so rest pose keeps its level). The sign
    of the axis is arbitrary; see `_rest_is_low`.
    """
    window = max(1, int(round(period)))
    trend = np.stack([_box_smooth(pose[margin, k], window) for k in range(pose.shape[1])], axis=1)
    # Subtracting a one-period moving average removes slow drift (the person shuffling, residual
    # camera drift) and keeps the repetition, whatever its phase.
    detrended = pose[margin] - trend
    offset = core.start - margin.start
    core_local = slice(offset, offset + core.stop - core.start)
    centred = detrended[core_local] - detrended[core_local].mean(axis=0)
    axis = _leading_axes(centred, 1)[:, 0]
    signal = _gaussian_smooth((detrended - detrended[core_local].mean(axis=0)) @ axis, period / 10)
    raw = (pose - pose[core].mean(axis=0)) @ axis
    return signal, detrended, raw


def _rest_is_low(raw: np.ndarray, core: slice, reference: np.ndarray) -> bool:
    """Whether rest pose projects below the set's average, i.e. rep turning points are peaks.

    `reference` holds the raw projection of nearby rest samples. Without any (the set fills the
    video), the set's own first and last moments stand in: a set starts and ends at rest pose.
    """
    if reference.size < 3:
        edge = max(2, (core.stop - core.start) // 20)
        reference = np.concatenate([raw[core][:edge], raw[core][-edge:]])
    return bool(np.median(reference) <= np.median(raw[core]))


# --------------------------------------------------------------------------------------------
# Workout analysis
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Set:
    start: float
    end: float
    rep_times: list[float]


def _periodicity(pose: np.ndarray, options: AnalysisOptions) -> tuple[np.ndarray, np.ndarray]:
    """Per sample of a uniform grid: local repetition period (samples, 0 = none) and strength."""
    rate = options.sample_fps
    n = pose.shape[0]
    min_lag = max(2, int(math.floor(options.min_period * rate)))
    max_lag = int(math.ceil(options.max_period * rate * 1.1)) + 1
    if n < 2 * min_lag + 2:
        return np.zeros(n, dtype=int), np.zeros(n)
    similarity = _self_similarity(pose, max_lag, min_half_window=round(1.5 * rate))
    return _local_period(similarity, min_lag, max_lag)


def _merge_runs(
    runs: list[tuple[int, int]], period: np.ndarray, strength: np.ndarray, threshold: float
) -> list[tuple[int, int, float]]:
    """Join periodic runs with the same period that are less than two periods apart.

    A small or noisy movement keeps its rhythm but its periodicity flickers around the threshold;
    one set then shows as several runs, which would each be too short to count."""
    merged: list[tuple[int, int, float]] = []
    for a, b in runs:
        periods = period[a:b][strength[a:b] >= threshold]
        if periods.size == 0:
            continue
        lag = float(np.median(periods))
        if merged:
            a0, b0, lag0 = merged[-1]
            if a - b0 <= 2 * max(lag, lag0) and abs(lag - lag0) <= 0.1 * max(lag, lag0):
                weight = (b0 - a0) / (b0 - a0 + b - a)
                merged[-1] = (a0, b, weight * lag0 + (1 - weight) * lag)
                continue
        merged.append((a, b, lag))
    return merged


def _find_sets(
    times: np.ndarray,
    energy: np.ndarray,
    pose: np.ndarray,
    period: np.ndarray,
    strength: np.ndarray,
    options: AnalysisOptions,
) -> list[_Set]:
    """Active sets on a uniform sample grid: moving, periodic stretches with enough reps."""
    rate = options.sample_fps
    n = times.size
    moving = _box_smooth(energy, round(rate)) > options.moving_fraction
    active = moving & (strength >= options.periodicity_threshold) & (period > 0)
    active = _close_gaps(active, round(1.0 * rate))
    runs = _merge_runs(_runs(active), period, strength, options.periodicity_threshold)
    runs = [(a, b, lag) for a, b, lag in runs if b - a >= max(round(1.5 * rate), 1.5 * lag)]
    candidates = []
    for i, (a, b, lag) in enumerate(runs):
        # The similarity windows make a run start late and end early by up to about a period;
        # two periods of margin recover the edge reps (they must continue the rhythm to count).
        lower = runs[i - 1][1] if i else 0
        upper = runs[i + 1][0] if i + 1 < len(runs) else n
        margin = slice(max(lower, a - int(2 * lag)), min(upper, b + int(2 * lag)))
        candidates.append((slice(a, b), margin, lag))
    # Rest pose is learnt from samples outside every candidate and its margin, near the set.
    resting = np.ones(n, dtype=bool)
    for _, margin, _ in candidates:
        resting[margin] = False
    reach = round(8 * rate)
    sets: list[_Set] = []
    for core, margin, lag in candidates:
        signal, detrended, raw = _rep_signal(pose, core, margin, lag)
        near = np.zeros(n, dtype=bool)
        near[max(0, margin.start - reach) : margin.start] = True
        near[margin.stop : margin.stop + reach] = True
        # Which way up is the rep signal? A set starts and ends in its start pose. Counted the
        # right way up, its edge reps pass through that pose on their outer side and are kept;
        # counted upside down, the "peaks" are start poses and the outermost ones, with rest
        # beyond them, are dropped. So the right way up usually finds more reps; on a tie, rest
        # nearby (the start pose, mostly) is the lower side.
        local = slice(core.start - margin.start, core.stop - margin.start)
        poses = [pose[margin], detrended]
        counts = {
            sign: _count_cycles(sign * signal, local, lag, poses, sign * raw, margin.start)
            for sign in (1, -1)
        }
        if len(counts[1]) == len(counts[-1]):
            sign = 1 if _rest_is_low(raw, core, raw[near & resting]) else -1
        else:
            sign = max(counts, key=lambda k: len(counts[k]))
        peaks = [p + margin.start for p in counts[sign]]
        if len(peaks) < options.min_reps:
            continue
        intervals = np.diff(peaks)
        if intervals.std() > 0.35 * intervals.mean():
            continue  # not a rhythm: irregular motion that happened to look periodic somewhere
        first_gap, last_gap = intervals[0], intervals[-1]
        start = max(0.0, times[peaks[0]] - first_gap / (2 * rate))
        end = min(times[-1] + 1.0 / rate, times[peaks[-1]] + last_gap / (2 * rate))
        sets.append(_Set(float(start), float(end), [float(times[p]) for p in peaks]))
    return _without_overlap(sets)


def _without_overlap(sets: list[_Set]) -> list[_Set]:
    out: list[_Set] = []
    for s in sorted(sets, key=lambda s: s.start):
        if out and s.start < out[-1].end:
            boundary = (out[-1].rep_times[-1] + s.rep_times[0]) / 2
            out[-1] = _Set(out[-1].start, boundary, out[-1].rep_times)
            s = _Set(boundary, s.end, s.rep_times)
        out.append(s)
    return out


def _mean_between(times: np.ndarray, values: np.ndarray, start: float, end: float) -> float:
    inside = (times >= start) & (times < end)
    return float(values[inside].mean()) if inside.any() else 0.0


def _workout(
    times: np.ndarray,
    energy: np.ndarray,
    sets: list[_Set],
    duration: float,
    options: AnalysisOptions,
) -> WorkoutSummary:
    smooth = _box_smooth(energy, round(options.sample_fps)) if energy.size else energy
    scale = max(float(np.percentile(smooth, 99)) if smooth.size else 0.0, _ENERGY_FLOOR)
    segments: list[WorkoutSegment] = []
    cursor = 0.0

    def rest(until: float) -> None:
        if until - cursor > 0.05:
            level = _mean_between(times, smooth, cursor, until) / scale
            segments.append(
                WorkoutSegment(
                    round(cursor, 2),
                    round(until, 2),
                    "rest",
                    0,
                    [],
                    None,
                    round(min(1.0, level), 2),
                )
            )

    for s in sets:
        end = min(s.end, duration)
        rest(s.start)
        if end - s.start <= 0.05:
            continue
        reps = len(s.rep_times)
        level = _mean_between(times, smooth, s.start, end) / scale
        tempo = 60.0 * reps / max(end - s.start, 1e-6)
        segments.append(
            WorkoutSegment(
                round(s.start, 2),
                round(end, 2),
                "active",
                reps,
                [round(t, 2) for t in s.rep_times],
                round(tempo, 1),
                round(min(1.0, level), 2),
            )
        )
        cursor = end
    rest(duration)
    active = sum(s.end - s.start for s in segments if s.kind == "active")
    rest_time = sum(s.end - s.start for s in segments if s.kind == "rest")
    return WorkoutSummary(
        sum(s.reps for s in segments), round(active, 2), round(rest_time, 2), segments
    )


# --------------------------------------------------------------------------------------------
# Highlights
# --------------------------------------------------------------------------------------------

_ENERGY_FLOOR = 0.005
"""Fraction of moving pixels that counts as real motion when scaling scores and intensities, so a
still video scores near 0 instead of its noise being stretched to 1."""

_MIN_HIGHLIGHT_SCORE = 0.15
"""Windows weaker than this (relative to the best) are not highlights; the best one always is."""


def _highlight_windows(
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
        score = min(1.0, float(energy.mean()) / _ENERGY_FLOOR)
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
    norm = max(float(window_mean.max()), _ENERGY_FLOOR)
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
    if mean < _ENERGY_FLOOR:
        return "low_motion"
    # A short burst that towers over its window reads as one moment, not sustained effort.
    if float(energy.max()) > 3.0 * mean:
        return "peak_intensity"
    return "high_motion"


def _pick_thumbnail(
    thumbs: dict[int, tuple[float, float, bytes]], start: float, end: float, peak: float
) -> bytes | None:
    inside = [v for v in thumbs.values() if start <= v[1] <= end]
    if not inside:
        inside = list(thumbs.values())
    if not inside:
        return None
    return max(inside, key=lambda v: (v[0], -abs(v[1] - peak)))[2]


# --------------------------------------------------------------------------------------------
# Reel
# --------------------------------------------------------------------------------------------

REEL_NAME = "highlight_reel.mp4"


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def _write_reel(
    path: str | os.PathLike,
    windows: list[tuple[float, float]],
    target: Path,
    options: AnalysisOptions,
    cancel_event: threading.Event | None,
    progress: Callable[[float], None],
) -> None:
    """Cut the windows (in time order) out of the video into an H.264 MP4 browsers can play."""
    import av  # imported here: only reels need it, and it is a heavy import

    try:
        source = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"the video cannot be reopened for the reel: {exc}") from exc
    try:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, options.reel_max_height / max(1, min(width, height)))
        out_w, out_h = _even(width * scale), _even(height * scale)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        rate = Fraction(rate).limit_denominator(1001)
        with av.open(str(target), mode="w", options={"movflags": "+faststart"}) as sink:
            encoder = sink.add_stream("libx264", rate=rate)
            encoder.width, encoder.height, encoder.pix_fmt = out_w, out_h, "yuv420p"
            encoder.options = {"preset": "veryfast", "crf": "23"}
            pts = 0
            total = sum(end - start for start, end in windows) or 1.0
            done = 0.0
            for start, end in sorted(windows):
                seek_to = int(start / stream.time_base) if stream.time_base else 0
                source.seek(max(0, seek_to), stream=stream, backward=True)
                for frame in source.decode(stream):
                    _stop_if_cancelled(cancel_event)
                    t = frame.time
                    if t is None or t < start - 1e-3:
                        continue
                    if t >= end:
                        break
                    image = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                    image.pts = pts
                    image.time_base = Fraction(1) / rate
                    pts += 1
                    for packet in encoder.encode(image):
                        sink.mux(packet)
                    progress(min(1.0, (done + t - start) / total))
                done += end - start
            for packet in encoder.encode():
                sink.mux(packet)
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"writing the highlight reel failed: {exc}") from exc
    finally:
        source.close()


# --------------------------------------------------------------------------------------------
# The public engine
# --------------------------------------------------------------------------------------------


class RailwayVideoGenerator:
    """Analyse workout videos: highlights, sets and reps, and an optional highlight reel."""

    def __init__(self, options: AnalysisOptions | None = None) -> None:
        self.options = options or AnalysisOptions()

    def generate_highlights(
        self,
        video_path: str | os.PathLike,
        progress_callback: ProgressCallback | None = None,
        **kwargs,
    ) -> AnalysisResult:
        """The most intense moments of the video. Same keyword arguments as `analyze`."""
        return self.analyze(video_path, "highlights", progress_callback, **kwargs)

    def analyze_workout_with_timestamps(
        self,
        video_path: str | os.PathLike,
        progress_callback: ProgressCallback | None = None,
        **kwargs,
    ) -> AnalysisResult:
        """Sets, rests, reps with their times. Same keyword arguments as `analyze`."""
        return self.analyze(video_path, "workout", progress_callback, **kwargs)

    def analyze(
        self,
        video_path: str | os.PathLike,
        analysis_type: str = "highlights",
        progress_callback: ProgressCallback | None = None,
        *,
        cancel_event: threading.Event | None = None,
        output_dir: str | os.PathLike | None = None,
        options: AnalysisOptions | None = None,
    ) -> AnalysisResult:
        """Analyse a video in one decoding pass (plus a second, partial one for a reel).

        Args:
            video_path: the video file.
            analysis_type: "highlights", "workout" or "full" (both from the same pass).
            progress_callback: called with (percent, message) per segment; percent never goes
                down and ends at exactly 100.
            cancel_event: checked every frame; once set the analysis raises AnalysisCancelled.
            output_dir: where thumbnails and the reel are written; without it none are.
            options: overrides the generator's options for this call.

        Returns:
            The analysis result; artifact references are file names inside `output_dir`.

        Raises:
            ValueError: unknown analysis_type.
            InvalidVideo: the file cannot be opened or its first frame decoded.
            VideoDecodeError: decoding failed part-way.
            AnalysisCancelled: `cancel_event` was set.
        """
        if analysis_type not in ANALYSIS_TYPES:
            raise ValueError(
                f"analysis_type must be one of {', '.join(ANALYSIS_TYPES)}, got {analysis_type!r}"
            )
        options = options or self.options
        began = time.perf_counter()
        want_highlights = analysis_type in ("highlights", "full")
        want_workout = analysis_type in ("workout", "full")
        out_dir = Path(output_dir) if output_dir is not None else None
        want_reel = options.reel and want_highlights and out_dir is not None

        capture = _open_capture(video_path)
        try:
            frame, fps, count = _first_frame(capture)
            progress = _Progress(
                progress_callback,
                options.segment_seconds,
                count / fps if count > 0 else 60.0,
                85 if want_reel else 95,
            )
            scan = _scan_video(
                options,
                progress,
                cancel_event,
                want_highlights and out_dir is not None,
                capture,
                frame,
                fps,
            )
        finally:
            capture.release()

        duration = scan.frames / scan.fps
        _check_not_cut_short(count / fps if count > 0 else 0.0, max(scan.reached, duration))
        info = VideoInfo(
            round(duration, 2), round(scan.fps, 3), scan.width, scan.height, scan.frames
        )
        logger.info(
            "decoded %s frames (container said %s), %s samples", scan.frames, count, len(scan.times)
        )
        times = np.asarray(scan.times, dtype=np.float64)
        energy = np.asarray(scan.energy, dtype=np.float64)
        pose = np.stack(scan.pose) if scan.pose else np.zeros((0, options.projection_dims))
        grid, energy_u = _resample(times, energy, options.sample_fps)
        cut_u = np.zeros(grid.size, dtype=bool)
        cut_u[
            np.clip(
                np.searchsorted(grid, times[np.asarray(scan.cut, dtype=bool)]), 0, grid.size - 1
            )
        ] = True
        progress.report(progress.ceiling, "Finding sets and highlights")

        # Sets are found once: the workout reports them, the highlights prefer them.
        _, pose_u = _resample(times, pose, options.sample_fps)
        _stop_if_cancelled(cancel_event)
        period, strength = _periodicity(pose_u, options)
        _stop_if_cancelled(cancel_event)
        sets = _find_sets(grid, energy_u, pose_u, period, strength, options)
        _stop_if_cancelled(cancel_event)
        in_set = np.zeros(grid.size, dtype=bool)
        for s in sets:
            in_set[(grid >= s.start) & (grid < s.end)] = True
        workout = _workout(grid, energy_u, sets, duration, options) if want_workout else None

        highlights = None
        artifacts: list[str] = []
        reel_name = None
        if want_highlights:
            windows = _highlight_windows(grid, energy_u, in_set, cut_u, duration, options)
            highlights = []
            for rank, (start, end, score, reason, peak) in enumerate(windows, 1):
                name = None
                if out_dir is not None:
                    jpeg = _pick_thumbnail(scan.thumbs, start, end, peak)
                    if jpeg is not None:
                        name = f"highlight_{rank}.jpg"
                        (out_dir / name).write_bytes(jpeg)
                        artifacts.append(name)
                highlights.append(Highlight(start, end, score, reason, peak, name))
            if want_reel and highlights:
                assert out_dir is not None
                ceiling = progress.ceiling

                def reel_progress(fraction: float) -> None:
                    _stop_if_cancelled(cancel_event)
                    progress.report(
                        ceiling + int((99 - ceiling) * fraction), "Writing highlight reel"
                    )

                _write_reel(
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
