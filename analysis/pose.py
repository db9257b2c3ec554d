"""Human pose: BlazePose (MediaPipe's person detector and landmark model) on LiteRT, in process.

This module owns the pose stage's per-frame work: finding the athlete, following them from frame
to frame, and turning the landmark model's tensors into 33 body landmarks in frame pixels. It is
MediaPipe's BlazePose CPU graph (``mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt``,
``mediapipe/modules/pose_landmark/pose_landmark_cpu.pbtxt`` and the subgraphs they name)
re-implemented around the two ``.tflite`` models, with the graph's own parameters:

- **detector** (`detect`): the whole frame letterboxed into 224×224 (zero border, RGB in
  [-1, 1]); 2254 SSD anchors (strides 8, 16, 32, 32, 32; fixed anchor size); boxes and 4
  keypoints decoded from the anchors (``reverse_output_order``: x first, scale 224); sigmoid
  score (logits clipped at ±100) at least ``min_detection_confidence``; weighted non-maximum
  suppression (IoU > 0.3).
- **detection → ROI**: centred on keypoint 0 (the hips' centre), rotated so that keypoint 0 → 1
  (towards the full-body circle) points up, a square of side 2·|kp1 − kp0|, scaled by 1.25.
- **landmarks**: the ROI cut out by one affine warp (rotation included, replicated border) into
  256×256 RGB in [0, 1]; 39 landmarks × (x, y, z, visibility, presence) with sigmoid on the last
  two, x and y refined on the 64×64 heatmap (7×7 window, weighted mean where its peak ≥ 0.5);
  the pose presence score gated at ``min_tracking_confidence``; projected back to frame pixels
  (z scaled like x); world landmarks (metres, hip-centred) rotated by the ROI's angle. The first
  33 are the body; landmarks 33 and 34 are the alignment points of the next frame's ROI.
- **tracking**: the next call crops the ROI made the same way from those two auxiliary landmarks,
  after the one-euro filter the graph always applies to them (min_cutoff 0.01, beta 10): the
  crop keeps still while the body does. The detector runs only when nothing is followed or the
  presence score is not above ``min_tracking_confidence``.

Checked against mediapipe 0.10.21's own ``mp.solutions.pose`` (full model, tracking, no
smoothing) on the same decoded frames of a real clip: landmarks agree to about a pixel once
tracking has settled; detections agree to under 1.5 px on their keypoints.

Deliberate differences from MediaPipe's graph, for an engine that samples frames: when tracking
is lost, the detector runs on the same frame (MediaPipe answers "no pose" and detects on the
next one); the output landmarks are not smoothed (the engine filters its own signals); and the
choice of person below replaces "the detector's best score".

**Following the athlete, not a passer-by.** The estimator keeps an identity of the person it
follows (`FollowSettings`): where their torso (hips' centre to shoulders' centre) was and when,
its length in pixels, and a colour histogram of its middle, as last sampled and as running
averages. Distances are in torso lengths, which change little whatever the exercise, and
every call knows its time (`process`'s ``t``), so "how far can they have gone" is in seconds.

1. With no identity (the start, or after `reset`), it follows the most prominent person: the
   largest body, discounted by its distance from the frame's centre.
2. With an identity, every person the detector finds (up to ``max_probes``) goes through the
   landmark model, and the one most consistent with the identity is followed (distance, change
   of torso length, change of colours). A person is refused, even when alone in view, if they
   are further than a body could have moved since the followed one was last seen, or their
   torso is more than twice or less than half as long, or its colours are utterly different:
   the athlete may be hidden or out of view while someone passes, and following the stranger
   would feed the engine someone else's movements. After ``identity_patience`` seconds with
   everyone refused, the identity is taken as stale and dropped.
3. While tracking, each result is compared with the last sample: a torso that moves further,
   grows or shrinks more, or changes colour more than one body does between two samples means
   the crop slid onto someone crossing in front or behind. The detector then runs, and the
   tracked result and everyone found are judged as in rule 2.

Colour is a weak cue on real footage (the demo's man changes more from shade into sun than he
differs from the woman walking past), so position, size and time carry most of the decision.
Choosing by periodic motion needs a history the estimator does not keep: the engine can use
`detect` and `follow` for that.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from analysis import models

logger = logging.getLogger(__name__)

LANDMARK_NAMES: tuple[str, ...] = (
    "nose",
    "left_eye_inner",
    "left_eye",
    "left_eye_outer",
    "right_eye_inner",
    "right_eye",
    "right_eye_outer",
    "left_ear",
    "right_ear",
    "mouth_left",
    "mouth_right",
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_pinky",
    "right_pinky",
    "left_index",
    "right_index",
    "left_thumb",
    "right_thumb",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
    "left_heel",
    "right_heel",
    "left_foot_index",
    "right_foot_index",
)
_BODY = len(LANDMARK_NAMES)  # 33
_TORSO = [23, 24, 11, 12]  # left and right hip, left and right shoulder
LANDMARK_MODELS = {"lite": "pose_landmark_lite.tflite", "full": "pose_landmark_full.tflite"}
DETECTOR_MODEL = "pose_detection.tflite"

# pose_detection_cpu.pbtxt
_DET_SIZE = 224
_DET_STRIDES = (8, 16, 32, 32, 32)
_DET_SCORE_CLIP = 100.0
_NMS_IOU = 0.3
# pose_detection_to_roi.pbtxt, pose_landmarks_to_roi.pbtxt
_ROI_SCALE = 1.25
_ROI_TARGET_ANGLE = math.pi / 2
# pose_landmark_by_roi_cpu.pbtxt, tensors_to_pose_landmarks_and_segmentation.pbtxt
_LM_SIZE = 256
_LM_COUNT = 39
_HEATMAP_KERNEL = 7
_HEATMAP_MIN_CONFIDENCE = 0.5
_HEATMAP_MARGIN = 128  # window cells this far off the heatmap are looked up as "outside"

DEFAULT_INTERVAL = 0.1
"""Seconds between two `PoseEstimator.process` calls that give no time: the engine samples 10 a
second by default."""

# Frames OpenCV cannot warp (remap's limit is SHRT_MAX per side), or too small to hold a person.
_MIN_SIDE = 16
_MAX_SIDE = 32766


class PoseUnavailable(RuntimeError):
    """The pose runtime or a model file is missing or not the pinned one; the message says how
    to fix it."""


@dataclass(frozen=True)
class Roi:
    """A rotated square of the frame, in pixels: what the landmark model looks at."""

    cx: float
    cy: float
    size: float
    """Side of the square."""
    angle: float
    """Radians; positive turns the square clockwise on screen (image y points down)."""


@dataclass(frozen=True, eq=False)
class PoseCandidate:
    """A person found by the detector, in pixels of the frame given to `PoseEstimator.detect`."""

    score: float
    """The detector's confidence, 0..1."""
    box: tuple[float, float, float, float]
    """The detector's box (x0, y0, x1, y1); BlazePose's detector boxes the head."""
    keypoints: np.ndarray
    """(4, 2): hips' centre, a point on the circle around the whole body, shoulders' centre, a
    point on the circle around the upper body."""
    roi: Roi
    """Where the landmark model would look for this person."""

    @property
    def body_size(self) -> float:
        """Diameter of the circle around the whole body, pixels."""
        return self.roi.size / _ROI_SCALE


@dataclass(frozen=True, eq=False)
class PoseObservation:
    """The followed person's pose in one frame."""

    landmarks: np.ndarray
    """(33, 3) float32: x, y in pixels of the frame given, z in the same scale (depth from the hips,
    smaller is nearer the camera)."""
    world: np.ndarray
    """(33, 3) float32: metres, origin between the hips (BlazePose world landmarks)."""
    visibility: np.ndarray
    """(33,) float32, 0..1: likelihood the landmark is in view and not occluded."""
    presence: np.ndarray
    """(33,) float32, 0..1: likelihood the landmark is inside the frame."""
    score: float
    """The landmark model's pose presence, 0..1."""
    box: tuple[float, float, float, float]
    """x0, y0, x1, y1 of the body's landmarks, pixels (may extend past the frame's edges)."""
    detected: bool
    """This call ran the detector (tracking started or restarted)."""


@dataclass(frozen=True)
class FollowSettings:
    """How the estimator keeps to one person. Distances are in torso lengths (hips' centre to
    shoulders' centre), which change little whatever the exercise, unlike the body's box; times
    are seconds of video (`PoseEstimator.process`'s ``t``)."""

    max_shift: float = 1.0
    """Largest move of the torso's centre between two calls before a tracked result is suspected
    to be someone else (or ``speed`` × the time between them, if larger)."""
    max_scale_change: float = 1.5
    """Largest factor by which the torso's length may change between two tracked calls."""
    max_colour_change: float = 0.45
    """Largest change of the torso's colour histogram (Bhattacharyya distance, 0..1) between two
    tracked calls. Measured on real footage: one person changes ≤ 0.4 from frame to frame, but
    up to 0.7 when walking from shade into sun, so colour is a weak cue for identity."""
    refuse_shift: float = 2.0
    """A person further than this from where the followed one was last seen, plus ``speed`` ×
    the time since then, is refused, even alone in view."""
    speed: float = 3.0
    """How fast a person may move, torso lengths per second (walking is about 2.8)."""
    refuse_scale_change: float = 2.0
    """A person whose torso is more than this factor longer or shorter than the followed one's
    (running average) is refused, even alone in view."""
    refuse_colour: float = 0.8
    """A person whose torso colours differ more than this from the followed one's is refused,
    even alone in view (a false detection in foliage scores about 1)."""
    identity_patience: float = 10.0
    """Seconds with everyone in view refused before the identity is dropped as stale."""
    memory: float = 0.2
    """Weight of the newest observation in the identity's running torso length and colours, so
    one odd frame (a body half hidden, a blur) does not redefine the person."""
    max_probes: int = 3
    """Detector candidates (best first) given to the landmark model when choosing: each costs
    one landmark inference, and a landmark result is what identity is judged on."""


@dataclass
class _Identity:
    """The followed person, as last seen."""

    centre: tuple[float, float]  # torso centre, pixels
    length: float  # running torso length, pixels
    colours: np.ndarray  # running normalised torso histogram
    last_length: float  # the last sample's, to judge a jump between two samples
    last_colours: np.ndarray
    seen: float  # time last seen, seconds
    refused_since: float | None = None  # since when everyone in view has been refused


@dataclass(frozen=True, eq=False)
class _Look:
    """A landmark result with what identity checks need of it."""

    observation: PoseObservation
    aux: np.ndarray  # (2, 2) pixels: the alignment points of the next call's ROI
    centre: tuple[float, float]
    length: float
    colours: np.ndarray


class _Scratch:
    """Per-estimator scratch images, allocated once per shape and reused across calls."""

    def __init__(self) -> None:
        self._images: dict[tuple[int, ...], np.ndarray] = {}

    def image(self, *shape: int) -> np.ndarray:
        image = self._images.get(shape)
        if image is None:
            image = self._images[shape] = np.empty(shape, np.uint8)
        return image


class _AuxFilter:
    """The one-euro filter MediaPipe's graph always applies to the two auxiliary landmarks before
    making the next frame's ROI from them (pose_landmark_filtering.pbtxt: min_cutoff 0.01,
    beta 10, derivate_cutoff 1, 30 Hz until two timestamps are known; values scaled by the size
    of the ROI they make). It keeps the crop still while the body is still, and lets it follow at
    once when the body moves."""

    MIN_CUTOFF = 0.01
    BETA = 10.0
    DERIVATE_CUTOFF = 1.0
    FREQUENCY = 30.0

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self._last_time: float | None = None
        self._frequency = self.FREQUENCY
        self._raw: np.ndarray | None = None  # last raw value
        self._value: np.ndarray | None = None  # last filtered value
        self._rate: np.ndarray | None = None  # last filtered rate of change

    def _alpha(self, cutoff: float | np.ndarray) -> float | np.ndarray:
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau * self._frequency)

    def apply(self, t: float, aux: np.ndarray) -> np.ndarray:
        """Filter (2, 2) pixel coordinates seen at time t (seconds)."""
        scale = 2.0 * float(np.hypot(*(aux[1] - aux[0])))  # the ROI's side before its ×1.25
        if scale < 1e-6 or (self._last_time is not None and t <= self._last_time):
            return aux  # as MediaPipe: unfiltered, and the filter's state untouched
        if self._last_time is not None:
            self._frequency = 1.0 / (t - self._last_time)
        self._last_time = t
        if self._raw is None or self._value is None or self._rate is None:
            self._raw, self._value, self._rate = aux.copy(), aux.copy(), np.zeros_like(aux)
            return aux
        rate = (aux - self._raw) / scale * self._frequency
        self._rate = self._rate + self._alpha(self.DERIVATE_CUTOFF) * (rate - self._rate)
        alpha = self._alpha(self.MIN_CUTOFF + self.BETA * np.abs(self._rate))
        self._value = self._value + alpha * (aux - self._value)
        self._raw = aux.copy()
        return self._value


@lru_cache(maxsize=4)
def _without_segmentation(path: str) -> bytes:
    """The landmark model without its segmentation branch, which we never read.

    The model computes a 256×256 person mask beside the landmarks: about a third of the lite
    model's time and a quarter of the full one's on this CPU. Dropping that output and the
    operators only it needs leaves every other output bit for bit the same (tests/test_pose.py
    checks it). Done in memory from the verified file, once per process (~0.3 s).

    Args:
        path: a landmark model already checked by `models.verified_path`.

    Returns:
        The pruned model, a TFLite flatbuffer.
    """
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    data = Path(path).read_bytes()
    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(data, 0))
    graph = model.subgraphs[0]
    mask = [i for i in graph.outputs if list(graph.tensors[i].shape) == [1, _LM_SIZE, _LM_SIZE, 1]]
    if len(mask) != 1:
        raise PoseUnavailable(
            f"{path} is not the BlazePose landmark model we know: run `make models`"
        )
    outputs = [int(i) for i in graph.outputs if i != mask[0]]
    producer = {int(t): k for k, op in enumerate(graph.operators) for t in op.outputs}
    needed: set[int] = set()
    pending = list(outputs)
    while pending:
        k = producer.get(pending.pop())
        if k is not None and k not in needed:
            needed.add(k)
            pending.extend(int(t) for t in graph.operators[k].inputs if t >= 0)
    graph.operators = [op for k, op in enumerate(graph.operators) if k in needed]
    graph.outputs = outputs
    builder = flatbuffers.Builder(len(data) + 4096)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def _ssd_anchors() -> np.ndarray:
    """(2254, 2) anchor centres, as SsdAnchorsCalculator makes them for the pose detector.

    num_layers 5, strides (8, 16, 32, 32, 32), aspect ratio 1 plus the interpolated-scale anchor
    (2 per layer), layers of equal stride merged; fixed_anchor_size, so every anchor is 1 × 1 and
    only the centres matter.
    """
    centres = []
    layer = 0
    while layer < len(_DET_STRIDES):
        stride = _DET_STRIDES[layer]
        last = layer
        while last < len(_DET_STRIDES) and _DET_STRIDES[last] == stride:
            last += 1
        per_cell = 2 * (last - layer)
        side = math.ceil(_DET_SIZE / stride)
        ys, xs = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
        grid = np.stack([(xs + 0.5) / side, (ys + 0.5) / side], axis=-1).reshape(-1, 2)
        centres.append(np.repeat(grid, per_cell, axis=0))
        layer = last
    return np.concatenate(centres).astype(np.float32)


_ANCHORS = _ssd_anchors()


def _sigmoid(x: np.ndarray) -> np.ndarray:
    # The tanh form never overflows (heatmap logits reach -1e3).
    return 0.5 + 0.5 * np.tanh(0.5 * x)


def _roi_from_points(x0: float, y0: float, x1: float, y1: float) -> Roi:
    """AlignmentPointsRectsCalculator + RectTransformationCalculator, in pixels."""
    size = 2.0 * math.hypot(x1 - x0, y1 - y0) * _ROI_SCALE
    angle = _ROI_TARGET_ANGLE - math.atan2(-(y1 - y0), x1 - x0)
    angle = angle - 2 * math.pi * math.floor((angle + math.pi) / (2 * math.pi))
    return Roi(x0, y0, size, angle)


def _crop_matrix(roi: Roi, out_size: int) -> np.ndarray:
    """2×3 matrix from output pixel (u, v) to frame pixel, as ImageToTensorCalculator maps a
    rotated rect onto the tensor (cv::boxPoints corners onto the output's corners)."""
    c, s = math.cos(roi.angle), math.sin(roi.angle)
    k = roi.size / out_size
    half = roi.size / 2
    return np.array(
        [
            [c * k, -s * k, roi.cx - c * half + s * half],
            [s * k, c * k, roi.cy - s * half - c * half],
        ],
        np.float64,
    )


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x0, y0, x1, y1) box with many; 0 where they do not intersect."""
    ix = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    iy = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = ix * iy
    union = (
        (box[2] - box[0]) * (box[3] - box[1])
        + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        - inter
    )
    return np.where((inter > 0) & (union > 0), inter / np.where(union > 0, union, 1), 0.0)


def _weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """NonMaxSuppressionCalculator, algorithm WEIGHTED: each kept detection is the score-weighted
    mean of the boxes and keypoints overlapping the best remaining one (IoU > 0.3), and keeps the
    best one's score."""
    order = np.argsort(-scores, kind="stable")
    kept = []
    while order.size:
        best = order[0]
        overlapping = _iou(boxes[best], boxes[order]) > _NMS_IOU
        overlapping[0] = True  # a box without area overlaps nothing, not even itself
        group = order[overlapping]
        weights = scores[group][:, None]
        total = float(weights.sum())
        box = (boxes[group] * weights).sum(axis=0) / total
        points = (keypoints[group] * weights[:, :, None]).sum(axis=0) / total
        kept.append((float(scores[best]), box, points))
        order = order[~overlapping]
    return kept


def _as_image(frame: Any) -> np.ndarray | None:
    """The frame as a contiguous BGR or BGRA uint8 image, or None when it cannot hold a person.

    BGRA is kept as it is: OpenCV warps 4 channels faster than 3, so a caller that decodes to
    BGRA saves time (a grey frame is made BGR).
    """
    if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
        return None
    if frame.ndim == 3 and frame.shape[2] == 1:
        frame = frame[:, :, 0]
    if frame.ndim not in (2, 3) or (frame.ndim == 3 and frame.shape[2] not in (3, 4)):
        return None
    h, w = frame.shape[:2]
    if min(h, w) < _MIN_SIDE or max(h, w) > _MAX_SIDE:
        return None
    frame = np.ascontiguousarray(frame)
    return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR) if frame.ndim == 2 else frame


_BANNER_SILENCED = False


def silence_runtime_banner(models_dir: Path | None = None) -> None:
    """Make the process's first LiteRT interpreter now, with stderr pointed away.

    LiteRT writes "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." straight to stderr
    from C++, once per process, when its first interpreter is made; no setting turns it off
    (TF_CPP_MIN_LOG_LEVEL does not reach it). In production every log line must be a JSON
    object, so a server calls this at start-up, while nothing else writes, and the line never
    appears. Does nothing when the runtime or the models are missing, or the second time.
    """
    global _BANNER_SILENCED
    if _BANNER_SILENCED:
        return
    _BANNER_SILENCED = True
    try:
        from ai_edge_litert.interpreter import Interpreter

        path = models.verified_path(DETECTOR_MODEL, models_dir)
    except (ImportError, models.ModelFileError):
        return
    sys.stderr.flush()
    saved, sink = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(sink, 2)
        Interpreter(model_path=str(path)).allocate_tensors()
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(sink)


class PoseEstimator:
    """BlazePose on one video: follows one person from call to call.

    Not thread-safe: one estimator per analysis (the interpreters and buffers are its own).
    """

    def __init__(
        self,
        models_dir: Path | None = None,
        *,
        model: str = "lite",
        threads: int = 1,
        min_detection_confidence: float = 0.5,
        min_tracking_confidence: float = 0.5,
        follow: FollowSettings | None = None,
    ) -> None:
        """Load and check the models (never downloads them).

        Args:
            models_dir: folder of the ``.tflite`` files; `analysis.models.models_dir()` when None.
            model: landmark model, ``"lite"`` (default: fastest) or ``"full"`` (more accurate).
            threads: CPU threads of each interpreter.
            min_detection_confidence: the detector's minimum score (MediaPipe's default 0.5).
            min_tracking_confidence: pose presence below which tracking is lost and the detector
                runs (MediaPipe's default 0.5).
            follow: how to keep to one person; `FollowSettings()` when None.

        Raises:
            PoseUnavailable: the LiteRT runtime is not installed, or a model file is missing or
                not the pinned one (the message says to run ``make models``).
            ValueError: an unknown model name or a bad number of threads.
        """
        if model not in LANDMARK_MODELS:
            raise ValueError(f"model must be one of {sorted(LANDMARK_MODELS)}, not {model!r}")
        if threads < 1:
            raise ValueError("threads must be at least 1")
        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError as exc:
            raise PoseUnavailable(
                f"the LiteRT runtime is not installed ({exc}): run `make install`"
            ) from None
        try:
            detector_path = models.verified_path(DETECTOR_MODEL, models_dir)
            landmark_path = models.verified_path(LANDMARK_MODELS[model], models_dir)
        except models.ModelFileError as exc:
            raise PoseUnavailable(str(exc)) from None

        self.model = model
        self.min_detection_confidence = min_detection_confidence
        self.min_tracking_confidence = min_tracking_confidence
        self.follow_settings = follow or FollowSettings()
        self._detector = Interpreter(model_path=str(detector_path), num_threads=threads)
        self._landmarker = Interpreter(
            model_content=_without_segmentation(str(landmark_path.resolve())),
            num_threads=threads,
        )
        self._detector.allocate_tensors()
        self._landmarker.allocate_tensors()
        self._det_input = self._detector.tensor(self._detector.get_input_details()[0]["index"])
        self._lm_input = self._landmarker.tensor(self._landmarker.get_input_details()[0]["index"])
        # Outputs are told apart by size, not by their generated names.
        det_out = {
            int(np.prod(d["shape"])): d["index"] for d in self._detector.get_output_details()
        }
        self._det_boxes = det_out[len(_ANCHORS) * 12]
        self._det_scores = det_out[len(_ANCHORS)]
        lm_out = {int(np.prod(d["shape"])): d for d in self._landmarker.get_output_details()}
        self._lm_landmarks = lm_out[_LM_COUNT * 5]["index"]
        self._lm_flag = lm_out[1]["index"]
        self._lm_world = lm_out[_LM_COUNT * 3]["index"]
        heatmap = next(d for d in lm_out.values() if len(d["shape"]) == 4 and d["shape"][3] == 39)
        self._lm_heatmap = self._landmarker.tensor(heatmap["index"])
        self._heatmap_side = int(heatmap["shape"][1])

        self._scratch = _Scratch()
        self._window = np.arange(_HEATMAP_KERNEL) - (_HEATMAP_KERNEL - 1) // 2
        self._channels = np.arange(_LM_COUNT)
        side = self._heatmap_side
        self._window_offsets = (self._window[:, None] * side + self._window[None, :]) * _LM_COUNT
        margin = np.arange(-_HEATMAP_MARGIN, side + _HEATMAP_MARGIN)
        self._in_bounds = ((margin >= 0) & (margin < side)).astype(np.float32)
        self._roi: Roi | None = None
        self._identity: _Identity | None = None
        self._now = 0.0
        self._aux_filter = _AuxFilter()

    # ---------------------------------------------------------------- public

    def process(self, frame_bgr: np.ndarray, t: float | None = None) -> PoseObservation | None:
        """The followed person's pose in this frame.

        Args:
            frame_bgr: an image of any size, BGR uint8; BGRA is accepted (and is faster: OpenCV
                warps 4 channels faster than 3), grey too.
            t: the frame's time in seconds, which scales how far the followed person may have
                moved since last seen; when None, calls are taken to be `DEFAULT_INTERVAL` apart.

        Returns:
            The pose, or None when no person (or only a refused stranger) is in view, or the
            frame cannot hold one (empty, tiny, absurdly large, not uint8).
        """
        self._now = self._now + DEFAULT_INTERVAL if t is None else float(t)
        frame = _as_image(frame_bgr)
        if frame is None:
            return None
        tracked: _Look | None = None
        if self._roi is not None:
            result = self._landmarks(frame, self._roi, detected=False)
            if result is not None:
                tracked = self._look(frame, *result)
                if self._consistent(tracked):
                    return self._accept(tracked, fresh=False)
        # Lost, or jumped onto someone else: look at everyone the detector finds, the tracked
        # result included, and choose again (see the module's docstring).
        self._roi = None
        looks = [] if tracked is None else [tracked]
        for candidate in self._detect(frame)[: self.follow_settings.max_probes]:
            result = self._landmarks(frame, candidate.roi, detected=True)
            if result is not None:
                looks.append(self._look(frame, *result))
        chosen = self._choose(frame, looks)
        if chosen is None:
            self._aux_filter.reset()
            return None
        observation = self._accept(chosen, fresh=chosen is not tracked)
        return (
            observation if observation.detected else dataclasses.replace(observation, detected=True)
        )

    def detect(self, frame_bgr: np.ndarray) -> list[PoseCandidate]:
        """Everyone the detector finds in this frame, best score first. Tracking is not changed.

        Args:
            frame_bgr: as for `process`.

        Returns:
            The candidates (empty when none, or the frame cannot hold a person).
        """
        frame = _as_image(frame_bgr)
        return [] if frame is None else self._detect(frame)

    def follow(self, candidate: PoseCandidate) -> None:
        """Follow this candidate from the next `process` call on, forgetting the previous person.

        Args:
            candidate: one of `detect`'s answers for the frame about to be processed.
        """
        self._identity = None
        self._aux_filter.reset()
        self._roi = candidate.roi

    def reset(self) -> None:
        """Forget the followed person (after a scene cut): the next call detects afresh."""
        self._roi = None
        self._identity = None
        self._aux_filter.reset()

    # ---------------------------------------------------------------- detector

    def _to_tensor(
        self,
        frame: np.ndarray,
        matrix: np.ndarray,
        size: int,
        border: int,
        low: float,
        tensor: Any,
    ) -> None:
        """ImageToTensorCalculator: one warp of the frame (matrix: tensor pixel → frame pixel)
        into a size × size RGB input tensor with values from `low` to 1."""
        channels = frame.shape[2]
        crop = self._scratch.image(size, size, channels)
        cv2.warpAffine(
            frame,
            matrix,
            (size, size),
            dst=crop,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=border,
            borderValue=0,
        )
        rgb = self._scratch.image(size, size, 3)
        cv2.cvtColor(crop, cv2.COLOR_BGR2RGB if channels == 3 else cv2.COLOR_BGRA2RGB, dst=rgb)
        values = tensor()
        np.multiply(rgb, np.float32((1.0 - low) / 255.0), out=values[0], dtype=np.float32)
        if low:
            values += np.float32(low)
        del values  # LiteRT refuses to run while a view of its buffers is alive

    def _detect(self, frame: np.ndarray) -> list[PoseCandidate]:
        h, w = frame.shape[:2]
        side = float(max(w, h))
        # Letterbox: the frame's centre on the tensor's, the long side filling it, zero border.
        k = side / _DET_SIZE
        matrix = np.array([[k, 0, (w - side) / 2], [0, k, (h - side) / 2]], np.float64)
        self._to_tensor(frame, matrix, _DET_SIZE, cv2.BORDER_CONSTANT, -1.0, self._det_input)
        self._detector.invoke()

        logits = self._detector.get_tensor(self._det_scores).reshape(-1)
        scores = _sigmoid(np.clip(logits, -_DET_SCORE_CLIP, _DET_SCORE_CLIP))
        keep = np.flatnonzero(scores >= self.min_detection_confidence)
        if keep.size == 0:
            return []
        raw = self._detector.get_tensor(self._det_boxes)[0, keep] / _DET_SIZE
        anchors = _ANCHORS[keep]
        centres = raw[:, 0:2] + anchors
        sizes = raw[:, 2:4]
        valid = np.all(sizes >= 0, axis=1) & np.all(np.isfinite(raw), axis=1)
        boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)[valid]
        keypoints = (raw[:, 4:12].reshape(-1, 4, 2) + anchors[:, None, :])[valid]
        candidates = []
        for score, box, points in _weighted_nms(scores[keep][valid], boxes, keypoints):
            # Tensor coordinates (0..1 of the letterboxed square) to frame pixels.
            box_px = (box.reshape(2, 2) - 0.5) * side + (w / 2, h / 2)
            points_px = ((points - 0.5) * side + (w / 2, h / 2)).astype(np.float32)
            roi = _roi_from_points(*map(float, points_px[0]), *map(float, points_px[1]))
            if not (math.isfinite(roi.size) and roi.size > 1):
                continue
            (x0, y0), (x1, y1) = box_px.tolist()
            candidates.append(PoseCandidate(score, (x0, y0, x1, y1), points_px, roi))
        return candidates

    # ---------------------------------------------------------------- landmarks

    def _landmarks(
        self, frame: np.ndarray, roi: Roi, *, detected: bool
    ) -> tuple[PoseObservation, np.ndarray] | None:
        """Run the landmark model on the ROI: the pose and the two auxiliary landmarks the next
        call's ROI is made from (pixels), or None below the presence threshold."""
        matrix = _crop_matrix(roi, _LM_SIZE)
        self._to_tensor(frame, matrix, _LM_SIZE, cv2.BORDER_REPLICATE, 0.0, self._lm_input)
        self._landmarker.invoke()

        score = float(self._landmarker.get_tensor(self._lm_flag).reshape(-1)[0])
        if not score > self.min_tracking_confidence:  # ThresholdingCalculator: strictly above
            return None
        raw = self._landmarker.get_tensor(self._lm_landmarks).reshape(_LM_COUNT, 5)
        xy = raw[:, :2] / _LM_SIZE
        self._refine(xy)
        c, s = math.cos(roi.angle), math.sin(roi.angle)
        rotation = np.array([[c, s], [-s, c]], np.float32)  # row vectors: p @ rotation = R p
        points = ((xy - 0.5) * roi.size) @ rotation + (roi.cx, roi.cy)
        if not np.all(np.isfinite(points)):
            return None
        landmarks = np.empty((_BODY, 3), np.float32)
        landmarks[:, :2] = points[:_BODY]
        landmarks[:, 2] = raw[:_BODY, 2] * (roi.size / _LM_SIZE)
        world = self._landmarker.get_tensor(self._lm_world).reshape(_LM_COUNT, 3)[:_BODY].copy()
        world[:, :2] = world[:, :2] @ rotation
        x0, y0 = landmarks[:, :2].min(axis=0)
        x1, y1 = landmarks[:, :2].max(axis=0)
        observation = PoseObservation(
            landmarks=landmarks,
            world=world,
            visibility=_sigmoid(raw[:_BODY, 3]).astype(np.float32),
            presence=_sigmoid(raw[:_BODY, 4]).astype(np.float32),
            score=score,
            box=(float(x0), float(y0), float(x1), float(y1)),
            detected=detected,
        )
        return observation, points[_BODY : _BODY + 2].astype(np.float64)

    def _refine(self, xy: np.ndarray) -> None:
        """RefineLandmarksFromHeatmapCalculator (kernel 7), in place on normalised x, y: where
        the heatmap's sigmoid peaks at ≥ 0.5 in the 7×7 window around a landmark, the landmark
        moves to the window's confidence-weighted mean (a window cut by the edge shrinks)."""
        side = self._heatmap_side
        # C++ int() truncates towards zero; so does astype.
        cols = (xy[:, 0] * side).astype(np.intp)
        rows = (xy[:, 1] * side).astype(np.intp)
        inside = (cols >= 0) & (cols < side) & (rows >= 0) & (rows < side)
        if not inside.any():
            return
        # Flat HWC indices of each landmark's window in its own channel. Cells off the heatmap
        # get wrong (clipped or wrapped) indices and are zeroed by the masks: one take, no copy.
        heatmap = self._lm_heatmap()
        base = (rows * side + cols) * _LM_COUNT + self._channels
        cells = np.take(
            heatmap.reshape(-1), base[:, None, None] + self._window_offsets, mode="clip"
        )  # a copy: the view may go
        del heatmap
        # In-bounds masks from a lookup table indexed by position + margin.
        row_ok = np.take(
            self._in_bounds, rows[:, None] + self._window + _HEATMAP_MARGIN, mode="clip"
        )
        col_ok = np.take(
            self._in_bounds, cols[:, None] + self._window + _HEATMAP_MARGIN, mode="clip"
        )
        confidence = _sigmoid(cells) * (row_ok[:, :, None] * col_ok[:, None, :])
        total = confidence.sum(axis=(1, 2))
        refine = inside & (confidence.max(axis=(1, 2)) >= _HEATMAP_MIN_CONFIDENCE) & (total > 0)
        if not refine.any():
            return
        total[~refine] = 1.0
        win_cols = cols[:, None] + self._window
        win_rows = rows[:, None] + self._window
        xy[refine, 0] = ((confidence.sum(axis=1) * win_cols).sum(axis=1) / side / total)[refine]
        xy[refine, 1] = ((confidence.sum(axis=2) * win_rows).sum(axis=1) / side / total)[refine]

    # ---------------------------------------------------------------- identity

    def _look(self, frame: np.ndarray, observation: PoseObservation, aux: np.ndarray) -> _Look:
        # Plain floats: a handful of numpy calls on 2-vectors cost more than the arithmetic.
        (lhx, lhy), (rhx, rhy), (lsx, lsy), (rsx, rsy) = observation.landmarks[_TORSO, :2].tolist()
        hips = ((lhx + rhx) / 2, (lhy + rhy) / 2)
        shoulders = ((lsx + rsx) / 2, (lsy + rsy) / 2)
        return _Look(
            observation,
            aux,
            centre=((hips[0] + shoulders[0]) / 2, (hips[1] + shoulders[1]) / 2),
            length=max(math.hypot(shoulders[0] - hips[0], shoulders[1] - hips[1]), 1.0),
            colours=self._torso_colours(frame, hips, shoulders),
        )

    def _torso_colours(
        self, frame: np.ndarray, hips: tuple[float, float], shoulders: tuple[float, float]
    ) -> np.ndarray:
        """Normalised 4×4×4 BGR histogram of the torso's middle, sampled by one small warp."""
        ax, ay = shoulders[0] - hips[0], shoulders[1] - hips[1]
        cx, cy = -0.4 * ay, 0.4 * ax  # across the torso's middle 0.4 lengths
        ph, pw = 24, 16
        patch = self._scratch.image(ph, pw, frame.shape[2])
        # Output (u, v) → hips + (0.15 + 0.7 v/ph) axis + (u/pw − 0.5) across
        matrix = np.array(
            [
                [cx / pw, 0.7 * ax / ph, hips[0] + 0.15 * ax - 0.5 * cx],
                [cy / pw, 0.7 * ay / ph, hips[1] + 0.15 * ay - 0.5 * cy],
            ],
            np.float64,
        )
        cv2.warpAffine(
            frame,
            matrix,
            (pw, ph),
            dst=patch,
            flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REPLICATE,
        )
        hist = cv2.calcHist([patch], [0, 1, 2], None, [4, 4, 4], [0, 256, 0, 256, 0, 256])
        return hist.reshape(-1) * np.float32(1.0 / (ph * pw))

    def _compare(self, look: _Look, *, last: bool) -> tuple[float, float, float]:
        """Shift (running torso lengths), growth (factor) and colour change of a look from the
        followed person: as last sampled (``last``), or as their running averages."""
        identity = self._identity
        assert identity is not None
        shift = (
            math.hypot(look.centre[0] - identity.centre[0], look.centre[1] - identity.centre[1])
            / identity.length
        )
        growth = look.length / (identity.last_length if last else identity.length)
        colours = identity.last_colours if last else identity.colours
        overlap = float(np.sqrt(look.colours * colours).sum())
        change = math.sqrt(max(0.0, 1.0 - min(overlap, 1.0)))  # Bhattacharyya distance
        return shift, growth, change

    def _consistent(self, look: _Look) -> bool:
        """Whether a tracked result moved, grew and changed colour as one body does."""
        if self._identity is None:
            return True
        settings = self.follow_settings
        shift, growth, change = self._compare(look, last=True)
        elapsed = self._now - self._identity.seen
        consistent = (
            shift <= max(settings.max_shift, settings.speed * elapsed)
            and 1 / settings.max_scale_change <= growth <= settings.max_scale_change
            and change <= settings.max_colour_change
        )
        if not consistent:
            logger.debug(
                "tracked pose jumped (shift %.2f, growth %.2f, colour %.2f): re-detecting",
                shift,
                growth,
                change,
            )
        return consistent

    def _accept(self, look: _Look, *, fresh: bool) -> PoseObservation:
        """Follow this look: update the identity and make the next call's ROI.

        Args:
            look: the chosen landmark result.
            fresh: it comes from a detection, not from the ROI followed so far.
        """
        identity = self._identity
        if identity is None:
            self._identity = _Identity(
                look.centre, look.length, look.colours, look.length, look.colours, self._now
            )
        else:
            memory = self.follow_settings.memory
            identity.centre = look.centre
            identity.length = (1 - memory) * identity.length + memory * look.length
            identity.colours = (1 - memory) * identity.colours + memory * look.colours
            identity.last_length = look.length
            identity.last_colours = look.colours
            identity.seen = self._now
            identity.refused_since = None
        if fresh:
            self._aux_filter.reset()  # a new ROI lineage, as in MediaPipe's graph after a loss
        aux = self._aux_filter.apply(self._now, look.aux)
        roi = _roi_from_points(*map(float, aux[0]), *map(float, aux[1]))
        self._roi = roi if math.isfinite(roi.size) and roi.size > 1 else None
        return look.observation

    def _choose(self, frame: np.ndarray, looks: list[_Look]) -> _Look | None:
        """The look to follow: the most consistent with the identity, else the most prominent."""
        identity = self._identity
        if identity is None:
            return max(looks, key=lambda look: self._prominence(frame, look), default=None)
        settings = self.follow_settings
        reach = settings.refuse_shift + settings.speed * (self._now - identity.seen)
        best: _Look | None = None
        best_cost = math.inf
        for look in looks:
            shift, growth, change = self._compare(look, last=False)
            if (
                shift > reach
                or not 1 / settings.refuse_scale_change <= growth <= settings.refuse_scale_change
                or change > settings.refuse_colour
            ):
                logger.debug(
                    "refused a person (shift %.2f, growth %.2f, colour %.2f)", shift, growth, change
                )
                continue
            cost = shift / reach + abs(math.log(growth)) + 2.0 * change
            if cost < best_cost:
                best, best_cost = look, cost
        if best is not None or not looks:
            return best
        if identity.refused_since is None:
            identity.refused_since = self._now
        if self._now - identity.refused_since < settings.identity_patience:
            return None
        logger.info("the followed person was not seen for a long while: following someone new")
        self._identity = None
        return max(looks, key=lambda look: self._prominence(frame, look))

    @staticmethod
    def _prominence(frame: np.ndarray, look: _Look) -> float:
        """Body size discounted by its distance from the frame's centre (up to a half)."""
        h, w = frame.shape[:2]
        x0, y0, x1, y1 = look.observation.box
        off_centre = math.hypot((x0 + x1 - w) / 2, (y0 + y1 - h) / 2) / (math.hypot(w, h) / 2)
        return math.hypot(x1 - x0, y1 - y0) * (1.0 - 0.5 * min(1.0, off_centre))
