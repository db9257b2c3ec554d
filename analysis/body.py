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


def angle_reliability(visibility: np.ndarray) -> np.ndarray:
    """Per angle, the least visibility (0..1) of the landmarks it is computed from."""
    return np.array([float(np.min(visibility[list(ids)])) for ids in _ANGLE_LANDMARKS])


def torso_length(image: np.ndarray) -> float:
    """Pixels from the hips' midpoint to the shoulders' midpoint: the body's own ruler."""
    shoulders = (image[L_SHOULDER, :2] + image[R_SHOULDER, :2]) / 2
    hips = (image[L_HIP, :2] + image[R_HIP, :2]) / 2
    return float(np.linalg.norm(shoulders - hips))


def normalised_keypoints(image: np.ndarray) -> np.ndarray:
    """The major landmarks relative to the hips' midpoint, in torso lengths: where the body's
    parts are whatever its distance from the camera and place in the frame. (12, 2)."""
    hips = (image[L_HIP, :2] + image[R_HIP, :2]) / 2
    return (image[list(MAJOR_LANDMARKS), :2] - hips) / max(torso_length(image), 1e-6)


@dataclass(frozen=True)
class BodySample:
    """The body signals of one pose estimate."""

    angles: np.ndarray
    """(len(ANGLES),) degrees."""
    reliability: np.ndarray
    """(len(ANGLES),) 0..1, see `angle_reliability`."""
    keypoints: np.ndarray
    """(12, 2) `normalised_keypoints`."""
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
    landmarks: np.ndarray, world: np.ndarray, visibility: np.ndarray, score: float
) -> BodySample:
    """The body signals of one pose estimate (see `analysis.pose.PoseObservation`)."""
    hips = (landmarks[L_HIP, :2] + landmarks[R_HIP, :2]) / 2
    ys = landmarks[list(MAJOR_LANDMARKS), 1]
    return BodySample(
        joint_angles(world, landmarks),
        angle_reliability(visibility),
        normalised_keypoints(landmarks),
        (float(hips[0]), float(hips[1])),
        float(max(ys.max() - ys.min(), torso_length(landmarks))),
        float(score),
        float(np.linalg.norm(world[L_HIP] - world[R_HIP])),
        float(np.linalg.norm(world[L_SHOULDER] - world[R_SHOULDER])),
    )


def body_change(a: BodySample, b: BodySample) -> float:
    """How far the body moved between two samples, in degrees: the largest change of a reliable
    limb angle (knees, hips, elbows, shoulders), or of the keypoints in torso lengths times 90
    (a limb swinging by half a torso moves about as much as 45 degrees)."""
    both = (a.reliability[:8] > 0.5) & (b.reliability[:8] > 0.5)
    angle = float(np.max(np.abs(a.angles[:8] - b.angles[:8])[both])) if both.any() else 0.0
    keypoints = float(np.max(np.linalg.norm(a.keypoints - b.keypoints, axis=1)))
    return max(angle, 90.0 * keypoints)


_TRACK_ARRAYS = (
    "times",
    "angles",
    "reliability",
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
        self.score = np.zeros(256)
        self.centre = np.zeros((256, 2))
        self.height = np.zeros(256)
        self.pelvis = np.zeros(256)
        self.shoulders = np.zeros(256)

    def append(self, seconds: float, sample: BodySample) -> None:
        if self.count == self.times.size:
            self._grow()
        i = self.count
        self.times[i] = seconds
        self.angles[i] = sample.angles
        self.reliability[i] = sample.reliability
        self.score[i] = sample.score
        self.centre[i] = sample.centre
        self.height[i] = sample.height
        self.pelvis[i] = sample.pelvis
        self.shoulders[i] = sample.shoulders
        self.count += 1

    def _grow(self) -> None:
        for name in _TRACK_ARRAYS:
            array = getattr(self, name)
            setattr(self, name, np.concatenate([array, np.zeros_like(array)]))

    def sorted(self) -> BodyTrack:
        """A copy in time order (samples filled in afterwards arrive late), trimmed to size."""
        order = np.argsort(self.times[: self.count], kind="stable")
        out = BodyTrack()
        out.count = self.count
        for name in _TRACK_ARRAYS:
            setattr(out, name, getattr(self, name)[: self.count][order].copy())
        return out
