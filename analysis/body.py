"""Body signals: what the workout analysis reads off the athlete's pose.

From each pose estimate (BlazePose's 33 landmarks, see `analysis.pose`) it computes joint angles
in degrees and a few body-normalised measures. Angles do not change with the camera's shake,
drift, zoom or roll, nor with where the athlete stands or how far away: they are what sets, reps,
the exercise and the range of motion are judged on.

- Flexion of the knees, hips and elbows: 0 for a straight joint, growing as it bends (a deep
  squat is about 110 at the knee, a curl about 140 at the elbow), from the 3D world landmarks so
  that the view does not foreshorten them.
- Shoulder elevation: the angle between the torso and the upper arm (0 arm down, 180 overhead).
- Leg spread: the angle between the two thighs (jumping jacks open it).
- Trunk: the angle of the torso from upright in the picture (0 standing, 90 lying: push-ups).

`BodyTrack` keeps these per pose sample in arrays that grow by doubling, with each angle's
reliability (the least visibility of the landmarks it uses).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# BlazePose landmark indices (see analysis.pose.LANDMARK_NAMES).
NOSE = 0
L_SHOULDER, R_SHOULDER = 11, 12
L_ELBOW, R_ELBOW = 13, 14
L_WRIST, R_WRIST = 15, 16
L_HIP, R_HIP = 23, 24
L_KNEE, R_KNEE = 25, 26
L_ANKLE, R_ANKLE = 27, 28

ANGLES = (
    "left_knee",
    "right_knee",
    "left_hip",
    "right_hip",
    "left_elbow",
    "right_elbow",
    "left_shoulder",
    "right_shoulder",
    "legs",
    "trunk",
)
"""The angles of a body sample, in this order."""

ANGLE_INDEX = {name: i for i, name in enumerate(ANGLES)}

JOINT_SIDES = {
    "knee": (ANGLE_INDEX["left_knee"], ANGLE_INDEX["right_knee"]),
    "hip": (ANGLE_INDEX["left_hip"], ANGLE_INDEX["right_hip"]),
    "elbow": (ANGLE_INDEX["left_elbow"], ANGLE_INDEX["right_elbow"]),
    "shoulder": (ANGLE_INDEX["left_shoulder"], ANGLE_INDEX["right_shoulder"]),
}
"""The left and right angle columns of each joint a set's reps can be counted on."""

# (a, b, c): the angle at b between b->a and b->c; flexion is 180 minus it.
_FLEXIONS = (
    (L_HIP, L_KNEE, L_ANKLE),
    (R_HIP, R_KNEE, R_ANKLE),
    (L_SHOULDER, L_HIP, L_KNEE),
    (R_SHOULDER, R_HIP, R_KNEE),
    (L_SHOULDER, L_ELBOW, L_WRIST),
    (R_SHOULDER, R_ELBOW, R_WRIST),
)
_FLEX_A = np.array([f[0] for f in _FLEXIONS])
_FLEX_B = np.array([f[1] for f in _FLEXIONS])
_FLEX_C = np.array([f[2] for f in _FLEXIONS])
# Landmarks each angle depends on, for its reliability.
_ANGLE_LANDMARKS = (
    *_FLEXIONS,
    (L_HIP, L_SHOULDER, L_ELBOW),
    (R_HIP, R_SHOULDER, R_ELBOW),
    (L_KNEE, L_HIP, R_HIP, R_KNEE),
    (L_SHOULDER, R_SHOULDER, L_HIP, R_HIP),
)
MAJOR_LANDMARKS = (
    L_SHOULDER,
    R_SHOULDER,
    L_ELBOW,
    R_ELBOW,
    L_WRIST,
    R_WRIST,
    L_HIP,
    R_HIP,
    L_KNEE,
    R_KNEE,
    L_ANKLE,
    R_ANKLE,
)
"""The landmarks the workout analysis relies on."""


def _unit(vectors: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(vectors, axis=-1, keepdims=True)
    return vectors / np.maximum(norm, 1e-9)


def _angle_between(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Degrees between vectors (last axis), 0..180."""
    cosine = np.clip(np.sum(_unit(u) * _unit(v), axis=-1), -1.0, 1.0)
    return np.degrees(np.arccos(cosine))


def joint_angles(world: np.ndarray, image: np.ndarray) -> np.ndarray:
    """The ANGLES of one pose.

    Args:
        world: (33, 3) world landmarks (metres; any consistent 3D frame).
        image: (33, 2+) landmarks in the picture (pixels, y down).

    Returns:
        (len(ANGLES),) degrees.
    """
    out = np.empty(len(ANGLES))
    out[:6] = 180.0 - _angle_between(
        world[_FLEX_A] - world[_FLEX_B], world[_FLEX_C] - world[_FLEX_B]
    )
    torso_l = world[L_HIP] - world[L_SHOULDER]
    torso_r = world[R_HIP] - world[R_SHOULDER]
    out[6] = _angle_between(torso_l, world[L_ELBOW] - world[L_SHOULDER])
    out[7] = _angle_between(torso_r, world[R_ELBOW] - world[R_SHOULDER])
    out[8] = _angle_between(world[L_KNEE] - world[L_HIP], world[R_KNEE] - world[R_HIP])
    shoulders = (image[L_SHOULDER, :2] + image[R_SHOULDER, :2]) / 2
    hips = (image[L_HIP, :2] + image[R_HIP, :2]) / 2
    up = np.array([0.0, -1.0])
    out[9] = _angle_between(shoulders - hips, up)
    return out


def angle_reliability(
    visibility: np.ndarray,
    landmarks: np.ndarray | None = None,
    size: tuple[int, int] | None = None,
) -> np.ndarray:
    """Per angle, the least visibility (0..1) of the landmarks it is computed from.

    With the landmarks (pixels) and the picture's `size` (width, height), a wrist the estimator
    places inside the picture counts as visible as its elbow: hanging arms framed from the waist
    up put the wrists near the picture's lower edge, where the estimator, unsure whether they are
    in view, scores them 0.1-0.4 while placing them within 3 % of the body's height.
    """
    seen = visibility
    if landmarks is not None and size is not None:
        seen = visibility.copy()
        w, h = size
        for wrist, elbow in ((L_WRIST, L_ELBOW), (R_WRIST, R_ELBOW)):
            x, y = landmarks[wrist, 0], landmarks[wrist, 1]
            if 0.0 <= x < w and 0.0 <= y < h:
                seen[wrist] = max(seen[wrist], seen[elbow])
    return np.array([float(np.min(seen[list(ids)])) for ids in _ANGLE_LANDMARKS])


def torso_length(image: np.ndarray) -> float:
    """Pixels from the hips' midpoint to the shoulders' midpoint: the body's own ruler."""
    shoulders = (image[L_SHOULDER, :2] + image[R_SHOULDER, :2]) / 2
    hips = (image[L_HIP, :2] + image[R_HIP, :2]) / 2
    return float(np.linalg.norm(shoulders - hips))


@dataclass(frozen=True)
class BodySample:
    """The body signals of one pose estimate."""

    angles: np.ndarray
    """(len(ANGLES),) degrees, from the 3D skeleton alone: quick, for deciding while the video
    plays when to look again. The analysis uses `lifted_angles` of the whole track."""
    reliability: np.ndarray
    """(len(ANGLES),) 0..1, see `angle_reliability`."""
    image: np.ndarray
    """(12, 2) the MAJOR_LANDMARKS in the picture (pixels)."""
    world: np.ndarray
    """(12, 3) the MAJOR_LANDMARKS in the 3D skeleton (metres, hip-centred)."""
    centre: tuple[float, float]
    """The hips' midpoint in the picture (pixels)."""
    height: float
    """The body's height in the picture (pixels, from its landmarks' extent)."""
    score: float
    """The estimator's confidence that this is a person (0..1)."""
    pelvis: float = 0.0
    """Metres between the hip joints (3D world landmarks)."""
    shoulders: float = 0.0
    """Metres between the shoulder joints (3D world landmarks)."""


def body_sample(
    landmarks: np.ndarray,
    world: np.ndarray,
    visibility: np.ndarray,
    score: float,
    size: tuple[int, int] | None = None,
) -> BodySample:
    """The body signals of one pose estimate (see `analysis.pose.PoseObservation`) in a picture
    of `size` (width, height) pixels."""
    hips = (landmarks[L_HIP, :2] + landmarks[R_HIP, :2]) / 2
    major = list(MAJOR_LANDMARKS)
    ys = landmarks[major, 1]
    return BodySample(
        joint_angles(world, landmarks),
        angle_reliability(visibility, landmarks, size),
        landmarks[major, :2].astype(np.float64),
        world[major].astype(np.float64),
        (float(hips[0]), float(hips[1])),
        float(max(ys.max() - ys.min(), torso_length(landmarks))),
        float(score),
        float(np.linalg.norm(world[L_HIP] - world[R_HIP])),
        float(np.linalg.norm(world[L_SHOULDER] - world[R_SHOULDER])),
    )


# -- 3D joint angles from the picture, with the skeleton's help --------------------------------

# Indices into MAJOR_LANDMARKS (the rows of BodySample.image and .world).
_SH_L, _SH_R, _EL_L, _EL_R, _WR_L, _WR_R, _HIP_L, _HIP_R, _KN_L, _KN_R, _AN_L, _AN_R = range(12)
# The skeleton as a tree from the hips, parent before child: depth is added bone by bone.
_TREE = (
    (_HIP_L, _KN_L),
    (_KN_L, _AN_L),
    (_HIP_R, _KN_R),
    (_KN_R, _AN_R),
    (_HIP_L, _SH_L),
    (_HIP_R, _SH_R),
    (_SH_L, _EL_L),
    (_EL_L, _WR_L),
    (_SH_R, _EL_R),
    (_EL_R, _WR_R),
)
_LENGTH_WINDOW = 4.0
"""Seconds each side of a sample over which a bone's true length is read (`_true_lengths`)."""

_IN_PLANE = 0.9
"""Projected length / true length above which a bone is taken to lie in the picture's plane."""

# The hip-to-shoulder "bones" of _TREE.
_TRUNK_BONES = [4, 5]
_TRUNK_IN_PLANE = 0.8

# Bones of the two sides that share a length (a body is symmetric).
_PAIRS = ((0, 2), (1, 3), (4, 5), (6, 8), (7, 9))


def _true_lengths(times: np.ndarray, projected: np.ndarray) -> np.ndarray:
    """Each bone's length in pixels at each sample: the 90th percentile of its projections
    (either side's, a body being symmetric) over the seconds around it. A bone lies in the
    picture's plane at some moment of nearly every movement (an arm hanging down, a thigh
    while standing), and the distance to the camera changes slowly."""
    combined = projected.copy()
    for i, j in _PAIRS:
        combined[:, i] = combined[:, j] = np.fmax(projected[:, i], projected[:, j])
    out = np.empty_like(projected)
    seconds = np.floor(times).astype(int)
    for second in np.unique(seconds):
        here = seconds == second
        around = np.abs(times - (second + 0.5)) <= _LENGTH_WINDOW
        out[here] = np.percentile(combined[around], 90, axis=0)
    return np.maximum(out, 1e-6)


def lifted_angles(track: BodyTrack) -> np.ndarray:
    """The ANGLES of every sample of a track, in 3D, from the picture's landmarks.

    The estimator's 2D landmarks are accurate (a few degrees off the truth on rendered people);
    its 3D skeleton is not (it flattens a curl's 115 degrees to 60). But bones keep their
    length: a bone that looks short in the picture points towards or away from the camera, by
    sqrt(L^2 - l^2) for a length L and a projected length l (weak perspective). L comes from the
    picture itself: the bone's longest projections over the seconds around (`_true_lengths`);
    the sign of the depth, which the picture cannot tell, from the
    skeleton (it agrees with the truth 97-100 % of the time when the depth matters). Where a
    bone keeps nearly its full length it lies in the picture's plane and gets no depth: the
    formula would turn pixel noise into depth there (for the trunk, which is not rigid, below
    80 %). The trunk's angle from upright is a 2D angle.

    Returns:
        (track.count, len(ANGLES)) degrees.
    """
    n = track.count
    image, world = track.image[:n], track.world[:n]
    out = np.zeros((n, len(ANGLES)))
    if n == 0:
        return out
    parent = np.array([a for a, _ in _TREE])
    child = np.array([b for _, b in _TREE])
    projected = np.linalg.norm(image[:, child] - image[:, parent], axis=2)  # (n, bones)
    full = _true_lengths(track.times[:n], projected)
    # Metres to pixels for the skeleton's depths: its bones' lengths against those.
    metres = np.linalg.norm(world[:, child] - world[:, parent], axis=2)
    scale = np.median(full / np.maximum(metres, 1e-3), axis=1)  # (n,)
    skeleton = (world[:, child, 2] - world[:, parent, 2]) * scale[:, None]
    room = full**2 - projected**2
    geometric = np.sqrt(np.maximum(room, 0.0))
    # A bone that keeps nearly its full length lies in the picture's plane: there the formula
    # would turn a few pixels of noise into depth, so it fades in below 90 % of the length.
    # The trunk is no rigid bone: the shoulders rise as the arms go overhead, and a relaxed
    # stance is a tenth shorter than a stretched one, so it counts as leaning only below 80 %.
    in_plane = np.full(len(_TREE), _IN_PLANE)
    in_plane[_TRUNK_BONES] = _TRUNK_IN_PLANE
    weight = np.clip((in_plane - projected / full) / 0.08, 0.0, 1.0)
    depth = np.sign(skeleton) * geometric * weight
    lifted = np.zeros((n, 12, 3))
    lifted[:, :, :2] = image
    hips = (world[:, _HIP_L, 2] + world[:, _HIP_R, 2]) / 2
    lifted[:, _HIP_L, 2] = (world[:, _HIP_L, 2] - hips) * scale
    lifted[:, _HIP_R, 2] = (world[:, _HIP_R, 2] - hips) * scale
    for k, (a, b) in enumerate(_TREE):
        lifted[:, b, 2] = lifted[:, a, 2] + depth[:, k]
    # The same angles as joint_angles, on the lifted points (rows of MAJOR_LANDMARKS).
    flex = (
        (_HIP_L, _KN_L, _AN_L),
        (_HIP_R, _KN_R, _AN_R),
        (_SH_L, _HIP_L, _KN_L),
        (_SH_R, _HIP_R, _KN_R),
        (_SH_L, _EL_L, _WR_L),
        (_SH_R, _EL_R, _WR_R),
    )
    for k, (a, b, c) in enumerate(flex):
        out[:, k] = 180.0 - _angle_between(lifted[:, a] - lifted[:, b], lifted[:, c] - lifted[:, b])
    out[:, 6] = _angle_between(
        lifted[:, _HIP_L] - lifted[:, _SH_L], lifted[:, _EL_L] - lifted[:, _SH_L]
    )
    out[:, 7] = _angle_between(
        lifted[:, _HIP_R] - lifted[:, _SH_R], lifted[:, _EL_R] - lifted[:, _SH_R]
    )
    out[:, 8] = _angle_between(
        lifted[:, _KN_L] - lifted[:, _HIP_L], lifted[:, _KN_R] - lifted[:, _HIP_R]
    )
    shoulders = (image[:, _SH_L] + image[:, _SH_R]) / 2
    hips_2d = (image[:, _HIP_L] + image[:, _HIP_R]) / 2
    out[:, 9] = _angle_between(shoulders - hips_2d, np.array([0.0, -1.0]))
    return out


_TRACK_ARRAYS = (
    "times",
    "angles",
    "reliability",
    "image",
    "world",
    "score",
    "centre",
    "height",
    "pelvis",
    "shoulders",
)


class BodyTrack:
    """Body samples in time order, in arrays that grow by doubling (no per-sample objects)."""

    def __init__(self) -> None:
        self.count = 0
        self.times = np.zeros(256)
        self.angles = np.zeros((256, len(ANGLES)))
        self.reliability = np.zeros((256, len(ANGLES)))
        self.image = np.zeros((256, 12, 2))
        self.world = np.zeros((256, 12, 3))
        self.score = np.zeros(256)
        self.centre = np.zeros((256, 2))
        self.height = np.zeros(256)
        self.pelvis = np.zeros(256)
        self.shoulders = np.zeros(256)

    def append(self, seconds: float, sample: BodySample) -> None:
        if self.count == self.times.size:
            for name in _TRACK_ARRAYS:
                array = getattr(self, name)
                setattr(self, name, np.concatenate([array, np.zeros_like(array)]))
        i = self.count
        self.times[i] = seconds
        self.angles[i] = sample.angles
        self.reliability[i] = sample.reliability
        self.image[i] = sample.image
        self.world[i] = sample.world
        self.score[i] = sample.score
        self.centre[i] = sample.centre
        self.height[i] = sample.height
        self.pelvis[i] = sample.pelvis
        self.shoulders[i] = sample.shoulders
        self.count += 1

    def sorted(self) -> BodyTrack:
        """A copy in time order, trimmed to size."""
        order = np.argsort(self.times[: self.count], kind="stable")
        out = BodyTrack()
        out.count = self.count
        for name in _TRACK_ARRAYS:
            setattr(out, name, getattr(self, name)[: self.count][order].copy())
        return out
