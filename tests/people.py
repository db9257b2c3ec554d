"""Workout videos of people (not stick figures) with exact ground truth, for pose-estimation tests.

This module owns the generator the pose stage is proven on: a 3D body with BlazePose's 33
landmarks, posed by joint angles; exercises as functions of the rep phase; rests, walking and
other people; a pinhole camera (yaw, distance, roll, zoom, hand-held drift and shake); an OpenCV
renderer that draws filled, clothed people in a furnished room; an H.264 (PyAV) or MPEG-4
(OpenCV) writer; and the ground truth of every clip (sets, reps, rep times and durations, range
of motion per rep, the athlete's joints in pixels with a visibility code per joint and frame).

Conventions. World and body coordinates are metres, right-handed, y up. A body at yaw 0 faces +z
and its left side is +x. Joint angles are degrees. The athlete stands at the world origin (its
feet on y = 0); the camera turns around it (`Camera.yaw`: 0 front, 90 its left side).

`SCENARIOS` names the clips the pose tests use; `make_scenario(name, folder)` writes one and
returns its `ClipTruth`; `long_workout(path)` writes a longer mixed workout at 720p for the engine
benchmark. Everything is deterministic by seed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import cv2
import numpy as np

from analysis.pose import LANDMARK_NAMES
from tests.synthetic import _smooth_noise, in_processes

logger = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------
# Landmarks and body model
# ------------------------------------------------------------------------------------------------

LANDMARKS: tuple[str, ...] = LANDMARK_NAMES
"""BlazePose's landmarks, in its order; left and right are the person's own (one list with the
estimator's, so the truth is indexed as its output is)."""

LM = {name: i for i, name in enumerate(LANDMARKS)}

MAJOR_JOINTS: tuple[str, ...] = (
    "left_shoulder",
    "right_shoulder",
    "left_elbow",
    "right_elbow",
    "left_wrist",
    "right_wrist",
    "left_hip",
    "right_hip",
    "left_knee",
    "right_knee",
    "left_ankle",
    "right_ankle",
)
MAJOR = np.array([LM[name] for name in MAJOR_JOINTS])

VISIBLE, SELF_OCCLUDED, HIDDEN, OUT_OF_FRAME = 0, 1, 2, 3
"""Visibility codes per joint and frame: drawn in view; behind the athlete's own body (approximate:
covered by a nearer part of the body it does not belong to); hidden by another person; outside the
image."""

# Points beyond the 33 landmarks that the drawing needs; all are computed by the same kinematics.
_PELVIS, _NECK, _HEAD, _HEAD_TOP = 33, 34, 35, 36
_KNUCKLES = {"l": 37, "r": 38}
_HAIR_TOP, _HAIR_END = 39, 40
_TORSO_RINGS = ((0.50, 0.215, 0.085), (0.42, 0.195, 0.11), (0.26, 0.16, 0.10), (0.09, 0.165, 0.10))
"""(height above the pelvis centre, half width, half depth) of the shirt's cross-sections."""
_PELVIS_RINGS = ((0.10, 0.165, 0.10), (0.0, 0.17, 0.105), (-0.09, 0.125, 0.085))
_RING_POINTS = 10
_SHOE = np.array(
    [
        (0.04, 0.03, -0.04),
        (-0.04, 0.03, -0.04),
        (0.045, -0.075, -0.075),
        (-0.045, -0.075, -0.075),
        (0.05, -0.08, 0.16),
        (-0.045, -0.08, 0.16),
        (0.03, -0.05, 0.2),
        (-0.02, -0.05, 0.2),
        (0.04, -0.02, 0.05),
        (-0.04, -0.02, 0.05),
    ]
)
"""Shoe outline around the ankle, in the foot frame (x toward the outside is flipped per side)."""
_HEAD_RADII = np.array([0.092, 0.118, 0.105])

_I_TORSO = 41
_I_PELVIS_RING = _I_TORSO + len(_TORSO_RINGS) * _RING_POINTS
_I_SHOE = _I_PELVIS_RING + len(_PELVIS_RINGS) * _RING_POINTS
N_POINTS = _I_SHOE + 2 * len(_SHOE)

_MODEL_HEIGHT = 1.72
ANKLE_HEIGHT = 0.08
_SHIN, _THIGH, _HIP_HALF, _TORSO = 0.42, 0.43, 0.09, 0.50
_SHOULDER_HALF, _SHOULDER_DROP, _UPPER_ARM, _FOREARM = 0.18, 0.035, 0.29, 0.25


@dataclass(frozen=True)
class Body:
    """A person's size: stature in metres and a width factor (1 = average build)."""

    height: float = 1.75
    width: float = 1.0

    @property
    def k(self) -> float:
        return self.height / _MODEL_HEIGHT


# ------------------------------------------------------------------------------------------------
# Pose parameters and forward kinematics
# ------------------------------------------------------------------------------------------------

PARAMS: tuple[str, ...] = (
    "x",
    "y",
    "z",
    "yaw",
    "pitch",
    "roll",
    "t_flex",
    "t_bend",
    "t_twist",
    "n_flex",
    "n_yaw",
    *(
        f"{name}_{side}"
        for side in ("l", "r")
        for name in (
            "sh_flex",
            "sh_abd",
            "sh_rot",
            "el",
            "wr",
            "hip_flex",
            "hip_abd",
            "knee",
            "foot_pitch",
            "foot_yaw",
        )
    ),
)
"""One row per frame: root (pelvis centre) position in metres, then angles in degrees. Root yaw,
pitch (forward lean of the whole body) and roll; torso flexion, side bend and twist over the
pelvis; neck flexion (down) and yaw (to the left); per side shoulder flexion (forward), abduction
(outward), rotation (turns the plane the elbow bends in), elbow flexion, wrist flexion; hip
flexion, hip abduction, knee flexion; the foot's pitch (toes down) and yaw (toes out), which are
absolute (a planted foot stays flat whatever the leg does)."""

PX = {name: i for i, name in enumerate(PARAMS)}

NEUTRAL = {
    "t_flex": 2.0,
    "sh_flex": 4.0,
    "sh_abd": 9.0,
    "el": 14.0,
    "hip_flex": 2.0,
    "hip_abd": 3.0,
    "knee": 3.0,
}
"""Relaxed standing: arms hang a little away from the body, knees soft, toes ahead (every
exercise keeps the feet's yaw, so planted feet never twist at the start of a set)."""


def _rows(n: int) -> np.ndarray:
    """`n` frames of the relaxed standing pose (root at the origin, not yet planted)."""
    rows = np.zeros((n, len(PARAMS)))
    for name, value in NEUTRAL.items():
        for key in (name, f"{name}_l", f"{name}_r"):
            if key in PX:
                rows[:, PX[key]] = value
    return rows


def _set(rows: np.ndarray, name: str, value: np.ndarray | float) -> None:
    """Set a parameter on both sides (`sh_flex`) or one (`sh_flex_l`, `t_flex`)."""
    keys = [name] if name in PX else [f"{name}_l", f"{name}_r"]
    for key in keys:
        rows[:, PX[key]] = value


def _rot(axis: int, degrees: np.ndarray) -> np.ndarray:
    """Rotation matrices (n, 3, 3) about x (0), y (1) or z (2)."""
    a = np.radians(degrees)
    c, s = np.cos(a), np.sin(a)
    out = np.zeros((a.size, 3, 3))
    i, j = [(1, 2), (2, 0), (0, 1)][axis]
    out[:, axis, axis] = 1.0
    out[:, i, i] = c
    out[:, j, j] = c
    out[:, i, j] = -s
    out[:, j, i] = s
    return out


def _apply(rotation: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Rotate one local vector (3,) by per-frame rotations (n, 3, 3): (n, 3)."""
    return rotation @ local


def _apply_many(rotation: np.ndarray, local: np.ndarray) -> np.ndarray:
    """Rotate local points (m, 3) by per-frame rotations (n, 3, 3): (n, m, 3)."""
    return np.einsum("nij,mj->nmi", rotation, local)


@dataclass(frozen=True)
class Skeleton:
    """Posed bodies over frames: every point in world metres, and the head's frame."""

    points: np.ndarray
    """(n, N_POINTS, 3): the 33 landmarks, then the drawing's extra points."""
    head: np.ndarray
    """(n, 3, 3): the head's rotation (columns: its left, up, forward)."""


def pose(rows: np.ndarray, body: Body) -> Skeleton:
    """Forward kinematics: joint angles to 3D points.

    Args:
        rows: (n, len(PARAMS)) parameters, one row per frame.
        body: the person's size.

    Returns:
        The skeleton of every frame.
    """
    n = rows.shape[0]
    k, w = body.k, body.k * body.width

    def col(name: str) -> np.ndarray:
        return rows[:, PX[name]]

    root = rows[:, 0:3]
    r_root = _rot(1, col("yaw")) @ _rot(0, col("pitch")) @ _rot(2, col("roll"))
    r_torso = r_root @ _rot(0, col("t_flex")) @ _rot(2, col("t_bend")) @ _rot(1, col("t_twist"))
    r_neck = r_torso @ _rot(0, col("n_flex"))
    r_head = r_neck @ _rot(1, col("n_yaw"))
    pts = np.full((n, N_POINTS, 3), np.nan)
    pts[:, _PELVIS] = root
    neck = root + _apply(r_torso, np.array([0.0, _TORSO * k, 0.0]))
    pts[:, _NECK] = neck
    head = neck + _apply(r_neck, np.array([0.0, 0.17 * k, 0.015 * k]))
    pts[:, _HEAD] = head
    face = {
        "nose": (0.0, -0.01, 0.112),
        "left_eye_inner": (0.017, 0.03, 0.097),
        "left_eye": (0.034, 0.031, 0.092),
        "left_eye_outer": (0.05, 0.03, 0.085),
        "left_ear": (0.088, 0.0, -0.005),
        "mouth_left": (0.024, -0.048, 0.092),
    }
    for name, (x, y, z) in face.items():
        pts[:, LM[name]] = head + _apply(r_head, np.array([x, y, z]) * k)
        if "left" in name:
            other = name.replace("left", "right")
            pts[:, LM[other]] = head + _apply(r_head, np.array([-x, y, z]) * k)
    pts[:, _HEAD_TOP] = head + _apply(r_head, np.array([0.0, _HEAD_RADII[1] * k, 0.0]))
    pts[:, _HAIR_TOP] = head + _apply(r_head, np.array([0.0, 0.01, -0.06]) * k)
    pts[:, _HAIR_END] = root + _apply(r_torso, np.array([0.0, 0.36, -0.1]) * k)
    torso_rings = _rings(_TORSO_RINGS, w, k)
    pts[:, _I_TORSO:_I_PELVIS_RING] = root[:, None] + _apply_many(r_torso, torso_rings)
    pelvis_rings = _rings(_PELVIS_RINGS, w, k)
    pts[:, _I_PELVIS_RING:_I_SHOE] = root[:, None] + _apply_many(r_root, pelvis_rings)
    for side, s in (("l", 1.0), ("r", -1.0)):
        left = side == "l"
        pre = "left_" if left else "right_"
        # The joint sits a little under the shoulder's top, which the shirt's top ring draws.
        shoulder = root + _apply(
            r_torso, np.array([s * _SHOULDER_HALF * w, (_TORSO - _SHOULDER_DROP) * k, 0.0])
        )
        r_upper = r_torso @ _rot(0, -col(f"sh_flex_{side}")) @ _rot(2, s * col(f"sh_abd_{side}"))
        elbow = shoulder + _apply(r_upper, np.array([0.0, -_UPPER_ARM * k, 0.0]))
        r_fore = r_upper @ _rot(1, s * col(f"sh_rot_{side}")) @ _rot(0, -col(f"el_{side}"))
        wrist = elbow + _apply(r_fore, np.array([0.0, -_FOREARM * k, 0.0]))
        r_hand = r_fore @ _rot(0, col(f"wr_{side}"))
        pts[:, LM[pre + "shoulder"]] = shoulder
        pts[:, LM[pre + "elbow"]] = elbow
        pts[:, LM[pre + "wrist"]] = wrist
        pts[:, LM[pre + "index"]] = wrist + _apply(r_hand, np.array([0.0, -0.085, 0.022]) * k)
        pts[:, LM[pre + "pinky"]] = wrist + _apply(r_hand, np.array([0.0, -0.075, -0.022]) * k)
        pts[:, LM[pre + "thumb"]] = wrist + _apply(r_hand, np.array([s * 0.01, -0.045, 0.04]) * k)
        pts[:, _KNUCKLES[side]] = wrist + _apply(r_hand, np.array([0.0, -0.075, 0.0]) * k)
        hip = root + _apply(r_root, np.array([s * _HIP_HALF * w, 0.0, 0.0]))
        r_thigh = r_root @ _rot(0, -col(f"hip_flex_{side}")) @ _rot(2, s * col(f"hip_abd_{side}"))
        knee = hip + _apply(r_thigh, np.array([0.0, -_THIGH * k, 0.0]))
        r_shin = r_thigh @ _rot(0, col(f"knee_{side}"))
        ankle = knee + _apply(r_shin, np.array([0.0, -_SHIN * k, 0.0]))
        r_foot = _rot(1, col("yaw") + s * col(f"foot_yaw_{side}")) @ _rot(
            0, col(f"foot_pitch_{side}")
        )
        pts[:, LM[pre + "hip"]] = hip
        pts[:, LM[pre + "knee"]] = knee
        pts[:, LM[pre + "ankle"]] = ankle
        pts[:, LM[pre + "heel"]] = ankle + _apply(r_foot, np.array([0.0, -0.05, -0.06]) * k)
        pts[:, LM[pre + "foot_index"]] = ankle + _apply(r_foot, np.array([0.0, -0.06, 0.17]) * k)
        shoe = _SHOE * np.array([s, 1.0, 1.0]) * k
        start = _I_SHOE + (0 if left else len(_SHOE))
        pts[:, start : start + len(_SHOE)] = ankle[:, None] + _apply_many(r_foot, shoe)
    return Skeleton(pts, r_head)


def _rings(rings, width: float, k: float) -> np.ndarray:
    """Points on elliptic cross-sections (height, half width, half depth) of the trunk."""
    a = np.linspace(0, 2 * np.pi, _RING_POINTS, endpoint=False)
    return np.concatenate(
        [
            np.stack([w * width * np.cos(a), np.full_like(a, h * k), d * k * np.sin(a)], axis=1)
            for h, w, d in rings
        ]
    )


def joint_angle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Angle at `b` between `a` and `c` in degrees, per frame (works in 2D and 3D)."""
    u, v = a - b, c - b
    cos = np.sum(u * v, axis=-1) / (np.linalg.norm(u, axis=-1) * np.linalg.norm(v, axis=-1) + 1e-12)
    return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))


def knee_flexion(p: np.ndarray, side: str) -> np.ndarray:
    """Knee flexion (0 = straight) from landmarks (n, 33, 2 or 3)."""
    return 180.0 - joint_angle(
        p[:, LM[f"{side}_hip"]], p[:, LM[f"{side}_knee"]], p[:, LM[f"{side}_ankle"]]
    )


def elbow_flexion(p: np.ndarray, side: str) -> np.ndarray:
    """Elbow flexion (0 = straight) from landmarks."""
    return 180.0 - joint_angle(
        p[:, LM[f"{side}_shoulder"]], p[:, LM[f"{side}_elbow"]], p[:, LM[f"{side}_wrist"]]
    )


def shoulder_abduction(p: np.ndarray, side: str) -> np.ndarray:
    """Angle between the trunk (shoulder to hip) and the upper arm, from landmarks."""
    return joint_angle(
        p[:, LM[f"{side}_hip"]], p[:, LM[f"{side}_shoulder"]], p[:, LM[f"{side}_elbow"]]
    )


def _plant(rows: np.ndarray, body: Body, x: float = 0.0, z: float = 0.0) -> np.ndarray:
    """Move the root so that the feet stand on the floor, centred on (x, z)."""
    pts = pose(rows, body).points
    ankles = pts[:, [LM["left_ankle"], LM["right_ankle"]]]
    rows[:, PX["x"]] += x - ankles[:, :, 0].mean(axis=1)
    rows[:, PX["z"]] += z - ankles[:, :, 2].mean(axis=1)
    rows[:, PX["y"]] += ANKLE_HEIGHT * body.k - ankles[:, :, 1].min(axis=1)
    return rows


_CONTACTS = (
    (LM["left_ankle"], ANKLE_HEIGHT),
    (LM["right_ankle"], ANKLE_HEIGHT),
    (LM["left_foot_index"], 0.02),
    (LM["right_foot_index"], 0.02),
    (LM["left_heel"], 0.03),
    (LM["right_heel"], 0.03),
    (LM["left_knee"], 0.06),
    (LM["right_knee"], 0.06),
    (LM["left_wrist"], 0.04),
    (LM["right_wrist"], 0.04),
)


def _ground(rows: np.ndarray, body: Body) -> np.ndarray:
    """Move the root up or down so that the lowest contact point (feet, knees, hands) touches the
    floor: poses blended between postures neither float nor sink."""
    pts = pose(rows, body).points
    lowest = np.min(np.stack([pts[:, i, 1] - h * body.k for i, h in _CONTACTS], axis=1), axis=1)
    rows[:, PX["y"]] -= lowest
    return rows


def _ik_2d(
    start: np.ndarray, end: np.ndarray, first: float, second: float, bend: float
) -> np.ndarray:
    """Middle joint of a two-bone chain in the (z, y) plane, per frame.

    `start`, `end`: (n, 2) points (z, y); `bend` +1 puts the joint on the +z side of the chain
    (a knee forward), -1 on the -z side (an elbow toward the feet in a push-up)."""
    v = end - start
    d = np.clip(np.linalg.norm(v, axis=1), abs(first - second) + 1e-6, first + second - 1e-6)
    unit = v / np.linalg.norm(v, axis=1, keepdims=True)
    a = (first**2 - second**2 + d**2) / (2 * d)
    h = np.sqrt(np.maximum(first**2 - a**2, 0.0))
    normal = np.stack([unit[:, 1], -unit[:, 0]], axis=1)
    normal *= np.sign(normal[:, :1] + 1e-12) * bend
    return start + a[:, None] * unit + h[:, None] * normal


def _forward_angle(v: np.ndarray) -> np.ndarray:
    """Angle in degrees of a (z, y) segment from straight down, positive toward +z."""
    return np.degrees(np.arctan2(v[:, 0], -v[:, 1]))


def _chain_distance(flexion: np.ndarray, first: float, second: float) -> np.ndarray:
    """Distance between the ends of a two-bone chain bent by `flexion` degrees."""
    return np.sqrt(first**2 + second**2 + 2 * first * second * np.cos(np.radians(flexion)))


# ------------------------------------------------------------------------------------------------
# Exercises: one rep as a function of its phase (0 to 1)
# ------------------------------------------------------------------------------------------------


def _ease(x: np.ndarray) -> np.ndarray:
    """0 to 1 with zero speed at both ends (smoothstep)."""
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def _shape(phase: np.ndarray, start: float, down: float, hold: float, end: float = 1.0):
    """A rep's profile: 0 until `start`, eases to 1 over `down`, holds for `hold`, eases back to
    0 by `end` (fractions of the rep). Not a sine: the two halves have their own lengths."""
    up = end - start - down - hold
    rising = _ease((phase - start) / down)
    falling = 1.0 - _ease((phase - start - down - hold) / up)
    return (
        np.where(phase < start + down + hold, rising, falling) * (phase >= start) * (phase <= end)
    )


_SQUAT = (0.0, 0.48, 0.08)
"""(start, down, hold) of a rep's profile, as fractions of the rep: the turning point is in the
middle of the hold."""


def _squat(phase: np.ndarray, depth: float, rep: int, body: Body) -> np.ndarray:
    s = _shape(phase, *_SQUAT)
    rows = _rows(phase.size)
    base = NEUTRAL["knee"]
    knee = base + depth * s
    shin = 0.36 * depth * s  # the shin leans forward as the knees travel over the toes
    thigh = knee - shin
    _set(rows, "knee", knee)
    _set(rows, "hip_flex", thigh)
    # Feet a little wider than the hips, kept still: the abduction follows the leg's reach.
    reach = _THIGH + _SHIN * np.cos(np.radians(knee))
    _set(rows, "hip_abd", np.degrees(np.arcsin(np.clip(0.07 / reach, -1, 1))))
    _set(rows, "t_flex", NEUTRAL["t_flex"] + 0.45 * depth * s)
    _set(rows, "n_flex", -0.35 * depth * s)
    _set(rows, "sh_flex", NEUTRAL["sh_flex"] + 78.0 * s)  # arms forward for balance
    _set(rows, "el", NEUTRAL["el"] - 8.0 * s)
    return _plant(rows, body)


_JACK = (0.0, 0.42, 0.1)  # a short stop with the hands up


def _jumping_jack(phase: np.ndarray, depth: float, rep: int, body: Body) -> np.ndarray:
    s = _shape(phase, *_JACK)
    rows = _rows(phase.size)
    # Arms and trunk in the frontal plane, so the abduction angle is exactly the one asked for.
    _set(rows, "sh_abd", NEUTRAL["sh_abd"] + depth * s)
    _set(rows, "sh_flex", 0.0)
    _set(rows, "t_flex", 0.0)
    _set(rows, "el", NEUTRAL["el"] + 6.0 * np.sin(np.pi * s))
    reach = (_THIGH + _SHIN) * np.cos(np.radians(8.0))
    spread = 0.03 + 0.30 * s * min(1.0, depth / 140.0)  # ankle outside the hip joint, metres
    _set(rows, "hip_abd", np.degrees(np.arcsin(spread / reach)))
    hop = np.sin(2 * np.pi * phase) ** 2  # two little jumps per rep: out and back in
    _set(rows, "knee", 4.0 + 14.0 * (1.0 - hop) * np.sin(np.pi * s))
    _set(rows, "hip_flex", 3.0 + 7.0 * (1.0 - hop) * np.sin(np.pi * s))
    _set(rows, "foot_pitch", 12.0 * hop)
    _plant(rows, body)
    rows[:, PX["y"]] += 0.06 * body.k * hop
    return rows


_CURL = (0.0, 0.36, 0.08)  # up faster than down


def _bicep_curl(phase: np.ndarray, depth: float, rep: int, body: Body) -> np.ndarray:
    s = _shape(phase, *_CURL)
    rows = _rows(phase.size)
    _set(rows, "el", NEUTRAL["el"] + depth * s)
    _set(rows, "sh_flex", NEUTRAL["sh_flex"] + 5.0 * s)  # the elbows drift forward a little
    _set(rows, "sh_abd", 12.0)
    _set(rows, "wr", -15.0 * s)
    _set(rows, "n_flex", 6.0 * s)
    return _plant(rows, body)


_PUSH_UP = (0.0, 0.5, 0.05)
_PLANK_ELBOW = 6.0
_WRIST_HEIGHT = 0.04


def _plank_table(body: Body) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shoulder positions (z, y) of a straight plank on its toes, per body angle from the floor."""
    angles = np.linspace(0.0, 40.0, 401)
    rows = _rows(angles.size)
    _set(rows, "pitch", 90.0 - angles)
    _set(rows, "hip_flex", 0.0)
    _set(rows, "hip_abd", 1.0)
    _set(rows, "knee", 0.0)
    _set(rows, "t_flex", 0.0)
    _set(rows, "foot_pitch", 90.0 - angles)
    _set(rows, "foot_yaw", 0.0)
    pts = pose(rows, body).points
    toe = pts[:, LM["left_foot_index"], 1:][:, ::-1]  # (z, y)
    shoulder = pts[:, LM["left_shoulder"], 1:][:, ::-1]
    shoulder = shoulder - toe + np.array([0.0, 0.02 * body.k])
    root = rows[:, [PX["z"], PX["y"]]] - toe + np.array([0.0, 0.02 * body.k])
    return angles, shoulder, root


def _push_up(phase: np.ndarray, depth: float, rep: int, body: Body) -> np.ndarray:
    """A straight-body push-up on the toes, hands planted under the shoulders, side on."""
    s = _shape(phase, *_PUSH_UP)
    k = body.k
    angles, shoulder, root = _plank_table(body)
    arm, fore = _UPPER_ARM * k, _FOREARM * k
    # Hands where a nearly straight arm reaches the floor right under the shoulder at the top.
    top_reach = _chain_distance(np.array([_PLANK_ELBOW]), arm, fore)[0]
    top = int(np.argmin(np.abs(shoulder[:, 1] - _WRIST_HEIGHT * k - top_reach)))
    wrist = np.array([shoulder[top, 0], shoulder[top, 1] - top_reach])
    elbow_flex = _PLANK_ELBOW + depth * s
    reach = _chain_distance(elbow_flex, arm, fore)
    distance = np.linalg.norm(shoulder - wrist, axis=1)  # grows with the body angle
    body_angle = np.interp(reach, distance[: top + 1], angles[: top + 1])
    shoulders = np.stack([np.interp(body_angle, angles, shoulder[:, i]) for i in (0, 1)], axis=1)
    elbows = _ik_2d(shoulders, np.broadcast_to(wrist, shoulders.shape), arm, fore, bend=-1.0)
    upper = _forward_angle(elbows - shoulders)
    lower = _forward_angle(wrist - elbows)
    rows = _rows(phase.size)
    pitch = 90.0 - body_angle
    _set(rows, "pitch", pitch)
    _set(rows, "t_flex", 0.0)
    _set(rows, "hip_flex", 0.0)
    _set(rows, "hip_abd", 1.0)
    _set(rows, "knee", 0.0)
    _set(rows, "foot_pitch", pitch)
    _set(rows, "foot_yaw", 0.0)
    _set(rows, "n_flex", -25.0)
    # Upper arm and forearm in the body's sagittal plane: flexion relative to the pitched torso.
    _set(rows, "sh_abd", 0.0)
    _set(rows, "sh_flex", pitch + upper)
    _set(rows, "el", lower - upper)
    _set(rows, "wr", lower - 90.0)  # the hand lies flat, fingers forward
    rows[:, PX["z"]] = np.interp(body_angle, angles, root[:, 0])
    rows[:, PX["y"]] = np.interp(body_angle, angles, root[:, 1])
    # Centre the plank over the origin so the camera frames the whole body.
    rows[:, PX["z"]] -= wrist[0] / 2
    return rows


_LUNGE_STEP = 0.72
_LUNGE = (0.22, 0.24, 0.08)  # lowering starts once the front foot has landed


def _lunge(phase: np.ndarray, depth: float, rep: int, body: Body) -> np.ndarray:
    """A forward lunge: step out, lower, rise, step back. Legs alternate (left first); a rep is one
    step out and back, and its dominant joint is the front knee."""
    k = body.k
    front, back = ("l", "r") if rep % 2 == 0 else ("r", "l")
    # Stand a moment, step out, lower, hold, rise, step back, stand: the still moments at both
    # ends let every frame rate catch the rep's straight-legged start.
    out, home = (0.06, _LUNGE[0]), (0.76, 0.94)
    step = _ease((phase - out[0]) / (out[1] - out[0])) * (
        1.0 - _ease((phase - home[0]) / (home[1] - home[0]))
    )
    s = _shape(phase, *_LUNGE, end=home[0])
    swing = (
        np.sin(np.pi * np.clip((phase - out[0]) / (out[1] - out[0]), 0, 1)) ** 2
        + np.sin(np.pi * np.clip((phase - home[0]) / (home[1] - home[0]), 0, 1)) ** 2
    )
    lift = 0.04 * k * swing
    length = _LUNGE_STEP * k
    thigh, shin = _THIGH * k, _SHIN * k
    ankle_y = ANKLE_HEIGHT * k
    pelvis_z = length * step * (0.45 + 0.05 * s)
    front_ankle = np.stack([length * step, ankle_y + lift], axis=1)
    # The front knee's flexion drives the pelvis height: soft on landing, deepest at the bottom,
    # never as deep while swinging, so the rep's range is exactly `depth`.
    base, landing = NEUTRAL["knee"], NEUTRAL["knee"] + 5.0
    flexion = base + (landing - base) * step + 15.0 * swing + (base + depth - landing) * s
    # The back foot keeps its toes on the floor; its heel rises as the back knee goes down.
    heel_raise = 25.0 * step + 35.0 * s
    toe_y, toe_z = 0.02 * k, 0.17 * k
    a = np.radians(heel_raise)
    foot_y = -0.06 * k * np.cos(a) - 0.17 * k * np.sin(a)
    foot_z = -0.06 * k * np.sin(a) + 0.17 * k * np.cos(a)
    back_ankle = np.stack([toe_z - foot_z, toe_y - foot_y], axis=1)
    # No higher than the back leg reaches, nearly straight, with its toes on the floor.
    reach = _chain_distance(flexion, thigh, shin)
    longest = _chain_distance(np.array([base]), thigh, shin)[0]
    pelvis_y = np.minimum(
        front_ankle[:, 1]
        + np.sqrt(np.maximum(reach**2 - (front_ankle[:, 0] - pelvis_z) ** 2, 0.0)),
        back_ankle[:, 1]
        + np.sqrt(np.maximum(longest**2 - (back_ankle[:, 0] - pelvis_z) ** 2, 0.0)),
    )
    hip = np.stack([pelvis_z, pelvis_y], axis=1)
    knee_front = _ik_2d(hip, front_ankle, thigh, shin, bend=1.0)
    knee_back = _ik_2d(hip, back_ankle, thigh, shin, bend=1.0)
    rows = _rows(phase.size)
    for side, knee, ankle in ((front, knee_front, front_ankle), (back, knee_back, back_ankle)):
        upper = _forward_angle(knee - hip)
        lower = _forward_angle(ankle - knee)
        rows[:, PX[f"hip_flex_{side}"]] = upper
        rows[:, PX[f"knee_{side}"]] = upper - lower
        rows[:, PX[f"hip_abd_{side}"]] = 0.0
    rows[:, PX[f"foot_pitch_{back}"]] = heel_raise
    rows[:, PX[f"foot_pitch_{front}"]] = -8.0 * lift / (0.09 * k)
    rows[:, PX["z"]] = pelvis_z
    rows[:, PX["y"]] = pelvis_y
    _set(rows, "t_flex", 3.0 + 6.0 * s)
    # The arm opposite the front leg swings forward a little.
    rows[:, PX[f"sh_flex_{back}"]] = NEUTRAL["sh_flex"] + 18.0 * step
    rows[:, PX[f"sh_flex_{front}"]] = NEUTRAL["sh_flex"] - 10.0 * step
    return rows


@dataclass(frozen=True)
class Exercise:
    """How an exercise moves and how its truth is measured."""

    name: str
    joint: str
    """The dominant joint angle the range of motion is measured on."""
    depth: float
    """Default range of motion of the dominant joint, degrees."""
    shape: tuple[float, float, float]
    """(start, down, hold) of the rep's profile."""
    posture: str
    """"standing" or "plank": what the rests around a set start from."""
    rows: Callable[[np.ndarray, float, int, Body], np.ndarray]
    angle: Callable[[np.ndarray, str], np.ndarray]
    """The dominant joint angle of one side from landmarks (n, 33, 2 or 3)."""
    alternates: bool = False
    """The dominant side changes every rep (lunges: the front leg)."""

    @property
    def turn(self) -> float:
        """Phase of a rep's turning point, the middle of the hold (what `rep_times` report)."""
        start, down, hold = self.shape
        return start + down + hold / 2


EXERCISES: dict[str, Exercise] = {
    e.name: e
    for e in (
        Exercise("squat", "knee_flexion", 95.0, _SQUAT, "standing", _squat, knee_flexion),
        Exercise(
            "jumping_jack",
            "shoulder_abduction",
            145.0,
            _JACK,
            "standing",
            _jumping_jack,
            shoulder_abduction,
        ),
        Exercise(
            "bicep_curl", "elbow_flexion", 115.0, _CURL, "standing", _bicep_curl, elbow_flexion
        ),
        Exercise("push_up", "elbow_flexion", 85.0, _PUSH_UP, "plank", _push_up, elbow_flexion),
        Exercise(
            "lunge", "knee_flexion", 85.0, _LUNGE, "standing", _lunge, knee_flexion, alternates=True
        ),
    )
}
"""The five exercises, named as the API names them."""


# ------------------------------------------------------------------------------------------------
# Camera: a pinhole looking at the athlete, then a 2D hand-held motion of the whole image
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Camera:
    """Where the camera stands and how it moves. Sizes are fractions of the frame height."""

    yaw: float = 0.0
    """Degrees around the athlete: 0 films its front, 45 three-quarter, 90 its left side."""
    height: float = 0.7
    """The standing athlete's height in the frame (2.0 = only the upper body fits)."""
    at: tuple[float, float] = (0.5, 0.55)
    """Where the point the camera aims at appears, as fractions of width and height."""
    aim: float = 0.9
    """Height in metres of the point on the athlete the camera aims at."""
    elevation: float = 1.1
    """Height of the camera above the floor, metres."""
    fov: float = 64.0
    """Field of view across the longer side of the frame, degrees (a phone's main camera)."""
    roll: float = 0.0
    """Constant roll of the image, degrees."""
    roll_wobble: float = 0.0
    """Slow random roll on top, degrees (standard deviation)."""
    zoom: float = 1.0
    """Scale of the image at the end of the clip relative to its start (a slow zoom)."""
    drift: float = 0.0
    """Slow hand-held drift (standard deviation over seconds)."""
    shake: float = 0.0
    """Fast shake (standard deviation over a few frames)."""


@dataclass(frozen=True)
class _View:
    """The camera resolved for one clip: intrinsics, pose and per-frame image motion."""

    focal: float
    centre: np.ndarray
    position: np.ndarray
    axes: np.ndarray
    """(3, 3) rows: the camera's right, down and forward directions in the world."""
    motion: np.ndarray
    """(n, 2, 3) affine from scene pixels (the still camera's image) to frame pixels."""
    scale: np.ndarray
    """(n,) the zoom part of `motion`."""

    def project(self, points: np.ndarray, moved: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """World points (n, m, 3) to frame pixels (n, m, 2) and their depth in metres (n, m).

        With `moved` False, to the still camera's image (what the room is drawn in)."""
        local = (points - self.position) @ self.axes.T
        depth = np.maximum(local[..., 2], 0.05)
        scene = self.centre + self.focal * local[..., :2] / depth[..., None]
        if not moved:
            return scene, depth
        frame = np.einsum("nij,nmj->nmi", self.motion[:, :, :2], scene) + self.motion[:, None, :, 2]
        return frame, depth


def _view(camera: Camera, body: Body, size: tuple[int, int], fps: float, n: int, rng) -> _View:
    width, height = size
    focal = max(width, height) / 2 / math.tan(math.radians(camera.fov) / 2)
    distance = focal * body.height / (camera.height * height)
    yaw = math.radians(camera.yaw)
    target = np.array([0.0, camera.aim, 0.0])
    position = target + np.array([distance * math.sin(yaw), 0.0, distance * math.cos(yaw)])
    position[1] = camera.elevation
    forward = target - position
    forward /= np.linalg.norm(forward)
    right = np.cross(forward, np.array([0.0, 1.0, 0.0]))
    right /= np.linalg.norm(right)
    down = np.cross(forward, right)
    centre = np.array([camera.at[0] * width, camera.at[1] * height])
    t = np.arange(n) / fps
    duration = max(t[-1], 1e-6) if n else 1.0
    scale = 1.0 + (camera.zoom - 1.0) * _ease(t / duration)
    roll = np.full(n, camera.roll)
    moving = n > 1  # one frame (the still camera) has no motion to draw
    if camera.roll_wobble and moving:
        roll += camera.roll_wobble * _smooth_noise(rng, n, 1.5 * fps)
    shift = np.zeros((n, 2))
    if camera.drift and moving:
        shift += (
            camera.drift * height * np.stack([_smooth_noise(rng, n, 1.8 * fps) for _ in "xy"], 1)
        )
    if camera.shake and moving:
        shift += (
            camera.shake * height * np.stack([_smooth_noise(rng, n, 0.04 * fps) for _ in "xy"], 1)
        )
    a = np.radians(roll)
    rotation = np.stack([np.cos(a), -np.sin(a), np.sin(a), np.cos(a)], axis=1).reshape(n, 2, 2)
    linear = rotation * scale[:, None, None]
    middle = np.array([width / 2, height / 2])
    offset = middle + shift - linear @ middle
    motion = np.concatenate([linear, offset[:, :, None]], axis=2)
    return _View(focal, centre, position, np.stack([right, down, forward]), motion, scale)


# ------------------------------------------------------------------------------------------------
# Appearance and the room
# ------------------------------------------------------------------------------------------------

SKINS = ((188, 208, 242), (150, 182, 228), (112, 152, 205), (78, 116, 168), (52, 78, 122))
"""Skin tones, BGR, light to dark."""
_HAIRS = ((28, 28, 32), (25, 45, 80), (45, 80, 135), (90, 150, 200), (130, 130, 135))
_SHIRTS = (
    (40, 40, 210),
    (205, 95, 30),
    (50, 175, 45),
    (30, 205, 235),
    (165, 45, 150),
    (20, 135, 250),
    (235, 235, 235),
    (200, 190, 40),
)
_TROUSERS = ((38, 38, 42), (95, 55, 30), (115, 115, 118), (55, 50, 145), (150, 100, 55))
_SHOES = ((245, 245, 245), (30, 30, 30), (50, 50, 210), (210, 130, 40))
_WALLS = (
    (205, 220, 230),
    (215, 215, 212),
    (228, 208, 172),
    (172, 200, 178),
    (96, 96, 102),
    (150, 180, 205),
    (200, 200, 150),
)
_FLOORS = ((62, 98, 148), (105, 108, 112), (130, 95, 60), (40, 60, 90), (150, 160, 170))


def _lab(colour: Sequence[int]) -> np.ndarray:
    """CIELAB of a BGR colour on OpenCV's 8-bit scale (L x 2.55, a and b as they are)."""
    rgb = np.array(colour[::-1], float) / 255.0
    linear = np.where(rgb <= 0.04045, rgb / 12.92, ((rgb + 0.055) / 1.055) ** 2.4)
    xyz = (
        np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]])
        @ linear
        / np.array([0.95047, 1.0, 1.08883])
    )
    f = np.where(xyz > (6 / 29) ** 3, np.cbrt(xyz), xyz / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([(116 * f[1] - 16) * 2.55, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def _apart(colour: Sequence[int], others: Sequence[Sequence[int]], distance: float) -> bool:
    """Whether `colour` differs from every one of `others` by `distance` in CIELAB (0-255 scale)."""
    lab = _lab(colour)
    return all(np.linalg.norm(lab - _lab(o)) >= distance for o in others)


def _pick(rng: np.random.Generator, palette, avoid, distance: float):
    choices = [c for c in palette if _apart(c, avoid, distance)] or list(palette)
    return tuple(int(v) for v in choices[int(rng.integers(len(choices)))])


@dataclass(frozen=True)
class Look:
    """What a person wears and looks like (BGR colours)."""

    skin: tuple[int, int, int]
    hair: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    shorts: bool = False
    long_sleeves: bool = False
    long_hair: bool = False


def _look(rng: np.random.Generator, wall, floor, skin=None) -> Look:
    """A random outfit whose colours stand out from the wall, the floor and the skin."""
    skin = skin or SKINS[int(rng.integers(len(SKINS)))]
    shirt = _pick(rng, _SHIRTS, [wall, floor, skin], 60)
    trousers = _pick(rng, _TROUSERS, [wall, floor, shirt], 45)
    shoes = _pick(rng, _SHOES, [floor, trousers], 50)
    hair = _pick(rng, _HAIRS, [skin, wall], 40)
    return Look(
        skin,
        hair,
        shirt,
        trousers,
        shoes,
        shorts=bool(rng.random() < 0.35),
        long_sleeves=bool(rng.random() < 0.2),
        long_hair=bool(rng.random() < 0.35),
    )


@dataclass(frozen=True)
class Scene:
    """The room and the light."""

    light: float = 1.0
    """Overall brightness (0.45 = a dim room)."""
    vignette: float = 0.25
    """Darkening toward the corners (0 none, 0.6 strong)."""
    noise: float = 3.0
    """Sensor noise, standard deviation in grey levels."""
    flicker: float = 0.0
    """Light flicker, relative amplitude (0.08 = ±8 %)."""
    tv: bool = False
    """A TV on the wall showing changing content with hard cuts."""
    other: str | None = None
    """Another person: "walker_behind", "passer_in_front" or "exerciser"."""


def _room(
    rng: np.random.Generator,
    size: tuple[int, int],
    horizon: float,
    metre: float,
    wall,
    floor,
    keep_out: tuple[float, float],
    avoid: Sequence[Sequence[int]],
    tv: bool,
):
    """A furnished room as a BGR canvas of `size` (w, h): the wall's foot at row `horizon`,
    `metre` pixels per metre on the wall. Furniture stays out of the columns `keep_out` (the wall
    right behind the athlete is bare, as where people make room to exercise) and its colours stand
    out from `avoid` (the athlete's skin and clothes).

    Returns the canvas and the TV's screen rectangle (x, y, w, h), or None without a TV."""
    width, height = size
    top = int(np.clip(horizon, height * 0.1, height - 2))
    canvas = np.empty((height, width, 3), np.uint8)
    shade = np.linspace(1.08, 0.92, top)[:, None, None]
    canvas[:top] = np.clip(np.array(wall) * shade, 0, 255).astype(np.uint8)
    depth = np.linspace(0.85, 1.1, height - top)[:, None, None]
    canvas[top:] = np.clip(np.array(floor) * depth, 0, 255).astype(np.uint8)
    grain = rng.normal(0, 4, (height // 4 + 1, width // 4 + 1, 1))
    texture = cv2.resize(grain, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    canvas = np.clip(canvas + texture, 0, 255).astype(np.uint8)
    # Floor boards converging toward the middle of the wall.
    line = tuple(int(c * 0.82) for c in floor)
    for x in np.linspace(-width, 2 * width, 24):
        cv2.line(canvas, (int(width / 2 + (x - width / 2) * 0.1), top), (int(x), height), line, 1)
    cv2.rectangle(canvas, (0, top - max(2, int(0.08 * metre))), (width, top), (235, 235, 235), -1)
    m = metre

    def box(x: float, y: float, w: float, h: float, colour, edge=None) -> None:
        p, q = (int(x), int(top - y - h)), (int(x + w), int(top - y))
        cv2.rectangle(canvas, p, q, tuple(int(c) for c in colour), -1)
        if edge is not None:
            cv2.rectangle(canvas, p, q, tuple(int(c) for c in edge), max(1, int(m / 40)))

    def wood():
        return _pick(
            rng,
            ((50, 80, 120), (40, 60, 90), (200, 210, 220), (30, 30, 30), (120, 150, 180)),
            [wall, *avoid],
            35,
        )

    items = ["window", "door", "shelf", "sofa", "plant", "picture", "shelf", "plant", "picture"]
    order = [items[int(i)] for i in rng.permutation(len(items))] * 2
    widths = {
        "window": 1.3,
        "door": 0.95,
        "shelf": 0.85,
        "sofa": 2.1,
        "plant": 0.5,
        "picture": 0.7,
        "tv": 1.2,
    }
    taken = [keep_out]
    placed: list[tuple[str, float]] = []
    if tv:
        # The TV stands right beside the athlete, where it distracts most.
        w = widths["tv"] * m
        gap = float(rng.uniform(0.15, 0.4)) * m
        right = keep_out[1] + gap + w < width * 0.8 and (
            rng.random() < 0.5 or keep_out[0] - gap - w < width * 0.2
        )
        x = keep_out[1] + gap if right else keep_out[0] - gap - w
        placed.append(("tv", x))
        taken.append((x - 0.15 * m, x + w + 0.15 * m))
    x = float(rng.uniform(0.0, 0.6)) * m
    for kind in order:
        w = widths[kind] * m
        for a, b in sorted(taken):
            if x < b and x + w > a:
                x = b + float(rng.uniform(0.1, 0.4)) * m
        if x + w > width:
            break
        placed.append((kind, x))
        x += w + float(rng.uniform(0.15, 0.9)) * m
    tv_rect = None
    for kind, x in placed:
        w = widths[kind] * m
        if kind == "window":
            box(x, 0.9 * m, w, 1.4 * m, (250, 248, 240), (170, 170, 170))
            cv2.line(
                canvas,
                (int(x + w / 2), int(top - 2.3 * m)),
                (int(x + w / 2), int(top - 0.9 * m)),
                (170, 170, 170),
                max(1, int(m / 40)),
            )
        elif kind == "door":
            box(x, 0.0, w, 2.05 * m, tuple(int(c * 0.72) for c in wall), (80, 80, 80))
            cv2.circle(
                canvas,
                (int(x + 0.8 * w), int(top - 1.0 * m)),
                max(1, int(m / 25)),
                (60, 180, 200),
                -1,
            )
        elif kind == "shelf":
            colour = wood()
            box(x, 0.0, w, 1.8 * m, colour, tuple(int(c * 0.7) for c in colour))
            for row in range(4):
                bx = x + 0.05 * m
                while bx < x + w - 0.12 * m:
                    bw = float(rng.uniform(0.04, 0.1)) * m
                    box(bx, 0.1 * m + row * 0.43 * m, bw, 0.3 * m, rng.integers(40, 230, 3))
                    bx += bw + 0.01 * m
        elif kind == "sofa":
            colour = _pick(
                rng,
                ((120, 70, 60), (70, 90, 70), (60, 60, 150), (140, 140, 140), (90, 60, 110)),
                [wall, floor, *avoid],
                35,
            )
            box(x, 0.45 * m, w, 0.45 * m, colour)
            box(x, 0.0, w, 0.45 * m, tuple(int(c * 0.82) for c in colour))
        elif kind == "plant":
            box(x + 0.12 * m, 0.0, 0.26 * m, 0.32 * m, (40, 80, 160))
            for _ in range(9):
                cx = int(x + 0.25 * m + rng.normal(0, 0.13) * m)
                cy = int(top - 0.6 * m + rng.normal(0, 0.17) * m)
                axes = (max(1, int(0.1 * m)), max(1, int(0.045 * m)))
                cv2.ellipse(
                    canvas,
                    (cx, cy),
                    axes,
                    float(rng.uniform(0, 180)),
                    0,
                    360,
                    (40, int(rng.integers(110, 170)), 40),
                    -1,
                )
        elif kind == "picture":
            box(x, 1.35 * m, w, 0.5 * m, rng.integers(60, 220, 3), (30, 30, 30))
        elif kind == "tv":
            box(x - 0.1 * m, 0.0, w + 0.2 * m, 0.5 * m, wood())
            box(x - 0.03 * m, 0.97 * m, w + 0.06 * m, 0.71 * m, (20, 20, 20))
            tv_rect = (int(x), int(top - 1.65 * m), int(w), int(0.65 * m))
    return canvas, tv_rect


def _tv_frames(rng: np.random.Generator, rect, n: int, fps: float) -> tuple[np.ndarray, list]:
    """Cut times (frame indices) and the pictures the TV shows between them."""
    cuts = [0]
    while cuts[-1] < n:
        cuts.append(cuts[-1] + int(rng.uniform(0.8, 3.5) * fps))
    pictures = []
    _, _, w, h = rect
    for _ in cuts:
        small = rng.integers(0, 255, (3, 4, 3)).astype(np.uint8)
        picture = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
        for _ in range(3):
            centre = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            radius = max(2, int(rng.integers(h // 8 + 1, h // 3 + 2)))
            cv2.circle(picture, centre, radius, tuple(int(c) for c in rng.integers(0, 255, 3)), -1)
        pictures.append(picture)
    return np.array(cuts), pictures


# ------------------------------------------------------------------------------------------------
# Renderer: filled, clothed people drawn far to near with OpenCV
# ------------------------------------------------------------------------------------------------

_SHIFT = 4
_ONE = 1 << _SHIFT
_PARTS = (
    "shirt",
    "pelvis",
    "neck",
    "head",
    *(
        f"{p}_{s}"
        for s in "lr"
        for p in ("upper_arm", "sleeve", "forearm", "hand", "thigh", "shin", "shoe")
    ),
)
_LABEL = {name: i + 1 for i, name in enumerate(_PARTS)}
"""Label of each of the athlete's parts in the visibility buffer; other people are 100 + k."""


def _own_parts() -> dict[int, set[int]]:
    """The athlete's parts each landmark belongs to: covered by one of them, it is still seen."""
    own: dict[int, set[int]] = {}
    for name, index in LM.items():
        side = "l" if name.startswith("left") else "r"
        joint = name.split("_", 1)[-1]
        parts: tuple[str, ...]
        if index <= LM["mouth_right"]:
            parts = ("head",)
        elif joint == "shoulder":
            parts = ("shirt", "neck", f"upper_arm_{side}", f"sleeve_{side}")
        elif joint == "elbow":
            parts = (f"upper_arm_{side}", f"sleeve_{side}", f"forearm_{side}")
        elif joint == "wrist":
            parts = (f"forearm_{side}", f"hand_{side}", f"sleeve_{side}")
        elif joint in ("pinky", "index", "thumb"):
            parts = (f"hand_{side}",)
        elif joint == "hip":
            parts = ("pelvis", "shirt", f"thigh_{side}")
        elif joint == "knee":
            parts = (f"thigh_{side}", f"shin_{side}")
        elif joint == "ankle":
            parts = (f"shin_{side}", f"shoe_{side}")
        else:
            parts = (f"shoe_{side}",)
        own[index] = {_LABEL[p] for p in parts}
    return own


_OWN = _own_parts()


@dataclass
class _Person:
    """A person in a clip: pose rows, size, look, and its label in the visibility buffer."""

    rows: np.ndarray
    body: Body
    look: Look
    label: int


@dataclass(frozen=True)
class _Part:
    """One body part over all frames, in the forms OpenCV takes without conversion."""

    kind: str
    """"capsule" (a tapered limb), "hull" (the convex outline of its points) or "head"."""
    label: int
    key: np.ndarray
    """(n,) depth in metres the painter's order sorts on."""
    colour: list[tuple[int, int, int]]
    geometry: dict


@dataclass
class _Drawn:
    """Everything the frame loop needs for one person, precomputed for all frames."""

    person: _Person
    pixels: np.ndarray
    depth: np.ndarray
    parts: list[_Part]
    order: list[list[int]]
    """Per frame, the parts far to near."""


def _part(kind: str, label: int, key: np.ndarray, colour: np.ndarray, geometry: dict) -> _Part:
    colours = [tuple(row) for row in np.round(colour).astype(int).tolist()]
    if kind == "capsule":
        geometry = {
            "quad": geometry["quad"],
            "a": [tuple(p) for p in geometry["a"].tolist()],
            "b": [tuple(p) for p in geometry["b"].tolist()],
            "ra": geometry["ra"].tolist(),
            "rb": geometry["rb"].tolist(),
        }
    return _Part(kind, label, key, colours, geometry)


def _fixed(values: np.ndarray) -> np.ndarray:
    """Pixel coordinates as OpenCV's fixed-point integers (`_SHIFT` fractional bits)."""
    return np.ascontiguousarray(np.round(values * _ONE), dtype=np.int32)


def _side_shade(depth: np.ndarray, near: int, far: int, k: float) -> np.ndarray:
    """1 on the side nearer the camera, down to 0.78 on the far side seen edge-on."""
    return 1.0 - 0.22 * np.clip((depth[:, near] - depth[:, far]) / (0.25 * k), 0.0, 1.0)


def _prepare(person: _Person, view: _View, light: np.ndarray) -> _Drawn:
    """Project a person and lay out its parts, for every frame at once."""
    skeleton = pose(person.rows, person.body)
    points = skeleton.points
    pixels, depth = view.project(points)
    k = person.body.k
    wide = person.body.width
    ppm = view.focal * view.scale[:, None] / depth  # pixels per metre at each point
    look = person.look
    parts: list = []

    def colour(base, shade=None) -> np.ndarray:
        c = np.array(base, float)[None, :] * light[:, None]
        if shade is not None:
            c = c * shade[:, None]
        return np.clip(c, 0, 255)

    def capsule(name, a, b, ra, rb, base, shade, at: float = 1.0, bias: float = 0.0) -> None:
        pa, pb = pixels[:, a], pixels[:, b]
        if at != 1.0:
            pb = pa + (pb - pa) * at
        za = depth[:, a]
        zb = za + (depth[:, b] - za) * at
        radius_a = ra * k * ppm[:, a]
        radius_b = rb * k * (ppm[:, a] + (ppm[:, b] - ppm[:, a]) * at)
        d = pb - pa
        length = np.linalg.norm(d, axis=1, keepdims=True)
        normal = np.stack([-d[:, 1], d[:, 0]], axis=1) / np.maximum(length, 1e-6)
        quad = np.stack(
            [
                pa + normal * radius_a[:, None],
                pb + normal * radius_b[:, None],
                pb - normal * radius_b[:, None],
                pa - normal * radius_a[:, None],
            ],
            axis=1,
        )
        geometry = {
            "quad": _fixed(quad),
            "a": _fixed(pa),
            "b": _fixed(pb),
            "ra": _fixed(radius_a),
            "rb": _fixed(radius_b),
        }
        key = (za + zb) / 2 + bias * k
        parts.append(_part("capsule", _LABEL[name], key, colour(base, shade), geometry))

    def hull(name, start, count, base, bias, extra=()) -> None:
        idx = list(range(start, start + count)) + list(extra)
        geometry = {"points": _fixed(pixels[:, idx])}
        key = depth[:, start : start + count].mean(axis=1) + bias * k
        parts.append(_part("hull", _LABEL[name], key, colour(base), geometry))

    torso_count = len(_TORSO_RINGS) * _RING_POINTS
    hull("shirt", _I_TORSO, torso_count, look.shirt, 0.05)
    hull("pelvis", _I_PELVIS_RING, len(_PELVIS_RINGS) * _RING_POINTS, look.trousers, 0.07)
    capsule("neck", _NECK, _HEAD, 0.05, 0.047, look.skin, None, at=0.55, bias=0.02)
    for side, s in (("l", "left"), ("r", "right")):
        other = "right" if s == "left" else "left"
        arm_shade = _side_shade(depth, LM[f"{s}_shoulder"], LM[f"{other}_shoulder"], k)
        leg_shade = _side_shade(depth, LM[f"{s}_hip"], LM[f"{other}_hip"], k)
        shoulder, elbow, wrist = LM[f"{s}_shoulder"], LM[f"{s}_elbow"], LM[f"{s}_wrist"]
        hip, knee, ankle = LM[f"{s}_hip"], LM[f"{s}_knee"], LM[f"{s}_ankle"]
        # Sleeves are round: a shade darker than the shirt's front, so that an arm in front of
        # the chest still shows its outline, as real shading does.
        sleeve = tuple(int(c * 0.8) for c in look.shirt)
        arm = sleeve if look.long_sleeves else look.skin
        capsule(f"upper_arm_{side}", shoulder, elbow, 0.05 * wide, 0.042, arm, arm_shade)
        capsule(
            f"sleeve_{side}",
            shoulder,
            elbow,
            0.058 * wide,
            0.053,
            sleeve,
            arm_shade,
            at=0.5,
            bias=-0.005,
        )
        capsule(f"forearm_{side}", elbow, wrist, 0.042, 0.031, arm, arm_shade)
        capsule(
            f"hand_{side}", wrist, _KNUCKLES[side], 0.034, 0.03, look.skin, arm_shade, bias=-0.01
        )
        leg_colour = look.skin if look.shorts else look.trousers
        capsule(f"thigh_{side}", hip, knee, 0.085 * wide, 0.062, look.trousers, leg_shade)
        capsule(f"shin_{side}", knee, ankle, 0.058, 0.042, leg_colour, leg_shade)
        start = _I_SHOE + (0 if side == "l" else len(_SHOE))
        geometry = {"points": _fixed(pixels[:, start : start + len(_SHOE)])}
        key = depth[:, start : start + len(_SHOE)].mean(axis=1)
        shoe = colour(look.shoes, leg_shade)
        parts.append(_part("hull", _LABEL[f"shoe_{side}"], key, shoe, geometry))
    if look.long_hair:
        capsule("head", _HAIR_TOP, _HAIR_END, 0.08, 0.065, look.hair, None, bias=0.04)
    head = _head_geometry(skeleton, pixels, depth, ppm, view, look, colour, k)
    key = depth[:, _HEAD] - 0.02 * k
    parts.append(_part("head", _LABEL["head"], key, colour(look.skin), head))
    order = np.argsort(-np.stack([p.key for p in parts], axis=1), axis=1, kind="stable")
    return _Drawn(person, pixels, depth, parts, order.tolist())


def _head_geometry(skeleton, pixels, depth, ppm, view, look, colour, k) -> dict[str, np.ndarray]:
    """The head as two ellipses (hair behind, face in front) plus ears, eyes, brows, mouth, nose."""
    head = skeleton.points[:, _HEAD]
    r_head = skeleton.head
    to_camera = view.position - head
    to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
    facing = np.einsum("ni,ni->n", r_head[:, :, 2], to_camera)

    def point(local) -> tuple[np.ndarray, np.ndarray]:
        world = head + r_head @ (np.array(local) * k)
        return view.project(world[:, None])

    hair_centre, hair_depth = point((0.0, 0.018, -0.022))
    face_centre, face_depth = point((0.0, -0.012, 0.012))
    radius = 0.1 * k * ppm[:, _HEAD]
    up = pixels[:, _HEAD_TOP] - pixels[:, _HEAD]
    up_length = np.linalg.norm(up, axis=1)
    tall = np.maximum(up_length, 0.105 * k * ppm[:, _HEAD])
    angle = np.degrees(np.arctan2(up[:, 0], -up[:, 1]))
    out: dict[str, np.ndarray] = {
        "hair": _fixed(hair_centre[:, 0]),
        "face": _fixed(face_centre[:, 0]),
        "hair_first": hair_depth[:, 0] > face_depth[:, 0],
        "axes": _fixed(np.stack([radius, tall], axis=1)),
        "angle": angle,
        "radius": radius,
        "skin": colour(look.skin),
        "hair_colour": colour(look.hair),
        "ear_colour": colour(look.skin, np.full(len(head), 0.9)),
        "dark": colour((25, 25, 30)),
        "white": colour((235, 240, 240)),
        "lips": colour((70, 70, 150)),
        "nose_colour": colour(look.skin, np.full(len(head), 0.82)),
        "facing": facing,
    }
    for side, s in (("l", 1.0), ("r", -1.0)):
        name = "left" if side == "l" else "right"
        normal = r_head @ np.array([s * 0.9, 0.0, 0.3])
        out[f"ear_facing_{side}"] = np.einsum("ni,ni->n", normal, to_camera)
        out[f"ear_{side}"] = _fixed(pixels[:, LM[f"{name}_ear"]])
        eye_normal = r_head @ np.array([s * 0.45, 0.05, 0.9])
        out[f"eye_facing_{side}"] = np.einsum("ni,ni->n", eye_normal, to_camera)
        out[f"eye_{side}"] = _fixed(pixels[:, LM[f"{name}_eye"]])
        brow, _ = point((s * 0.035, 0.052, 0.088))
        out[f"brow_{side}"] = _fixed(brow[:, 0])
    out["mouth"] = _fixed((pixels[:, LM["mouth_left"]] + pixels[:, LM["mouth_right"]]) / 2)
    out["mouth_half"] = (
        np.linalg.norm(pixels[:, LM["mouth_left"]] - pixels[:, LM["mouth_right"]], axis=1) / 2
    )
    out["nose"] = _fixed(pixels[:, LM["nose"]])
    bridge, _ = point((0.0, 0.03, 0.095))
    out["bridge"] = _fixed(bridge[:, 0])
    base, _ = point((0.0, -0.025, 0.09))
    out["nose_base"] = _fixed(base[:, 0])
    out["unit"] = 0.01 * k * ppm[:, _HEAD]  # pixels per centimetre at the head
    return out


def _c(colour_row: np.ndarray) -> tuple[int, int, int]:
    return (int(colour_row[0]), int(colour_row[1]), int(colour_row[2]))


def _pt(row: np.ndarray) -> tuple[int, int]:
    return (int(row[0]), int(row[1]))


def _ellipse(image: np.ndarray, centre, axes, angle: float, colour, line=cv2.LINE_AA, shift=_SHIFT):
    """A filled ellipse in fixed-point coordinates."""
    cv2.ellipse(image, centre, axes, angle, 0, 360, colour, -1, line, shift)


def _draw_head(image: np.ndarray, g: dict[str, np.ndarray], i: int, labels, label: int) -> None:
    """Ears, hair and face in depth order, then the features the face turns to the camera."""
    axes = (int(g["axes"][i, 0]), int(g["axes"][i, 1]))
    angle = float(g["angle"][i])
    unit = float(g["unit"][i])
    ear_axes = (max(1, int(1.5 * unit * _ONE)), max(1, int(2.6 * unit * _ONE)))
    ears_in_front = [g[f"ear_facing_{side}"][i] > 0.45 for side in "lr"]
    for side, in_front in zip("lr", ears_in_front, strict=True):
        if not in_front:  # peeks out from behind the head
            _ellipse(image, _pt(g[f"ear_{side}"][i]), ear_axes, angle, _c(g["ear_colour"][i]))
    hair = (_pt(g["hair"][i]), (int(axes[0] * 1.05), int(axes[1] * 1.04)), _c(g["hair_colour"][i]))
    face = (_pt(g["face"][i]), (int(axes[0] * 0.95), int(axes[1] * 0.95)), _c(g["skin"][i]))
    for centre, size, colour in (hair, face) if g["hair_first"][i] else (face, hair):
        _ellipse(image, centre, size, angle, colour)
    if labels is not None:
        _ellipse(labels, _pt(g["face"][i]), axes, angle, label, cv2.LINE_8, _SHIFT + 1)
    for side, in_front in zip("lr", ears_in_front, strict=True):
        if in_front:
            _ellipse(image, _pt(g[f"ear_{side}"][i]), ear_axes, angle, _c(g["ear_colour"][i]))
    facing = float(g["facing"][i])
    if facing < 0.05:
        return
    aa = cv2.LINE_AA
    dark = _c(g["dark"][i])
    for side in "lr":
        if g[f"eye_facing_{side}"][i] < 0.1:
            continue
        eye = _pt(g[f"eye_{side}"][i])
        if unit >= 0.6:
            white = (max(1, int(1.5 * unit * _ONE)), max(1, int(0.8 * unit * _ONE)))
            _ellipse(image, eye, white, angle, _c(g["white"][i]))
            cv2.circle(image, eye, max(1, int(0.65 * unit * _ONE)), dark, -1, aa, _SHIFT)
            brow = g[f"brow_{side}"][i]
            half = np.array([int(1.6 * unit * _ONE), 0])
            thick = max(1, int(0.6 * unit))
            cv2.line(
                image,
                _pt(brow - half),
                _pt(brow + half),
                _c(g["hair_colour"][i]),
                thick,
                aa,
                _SHIFT,
            )
        else:
            cv2.circle(image, eye, max(_ONE // 2, int(0.9 * unit * _ONE)), dark, -1, aa, _SHIFT)
    half_mouth = float(g["mouth_half"][i])
    mouth_axes = (max(_ONE // 2, int(half_mouth * _ONE)), max(_ONE // 3, int(0.5 * unit * _ONE)))
    _ellipse(image, _pt(g["mouth"][i]), mouth_axes, angle, _c(g["lips"][i]))
    if facing < 0.6:
        # In profile the nose sticks out of the face's outline.
        triangle = np.array([g["bridge"][i], g["nose"][i], g["nose_base"][i]], np.int32)
        cv2.fillConvexPoly(image, triangle, _c(g["skin"][i]), aa, _SHIFT)
    elif unit >= 0.6:
        thick = max(1, int(0.5 * unit))
        cv2.line(
            image,
            _pt(g["bridge"][i]),
            _pt(g["nose"][i]),
            _c(g["nose_colour"][i]),
            thick,
            aa,
            _SHIFT,
        )


def _draw_person(
    image: np.ndarray, labels: np.ndarray | None, drawn: _Drawn, i: int, single_label: int | None
) -> None:
    """Draw one person in frame `i`, far parts first; also fill the visibility labels."""
    aa, plain = cv2.LINE_AA, cv2.LINE_8
    for p in drawn.order[i]:
        part = drawn.parts[p]
        g = part.geometry
        value = single_label if single_label is not None else part.label
        if part.kind == "head":
            _draw_head(image, g, i, labels, value)
            continue
        bgr = part.colour[i]
        if part.kind == "capsule":
            quad, a, b, ra, rb = g["quad"][i], g["a"][i], g["b"][i], g["ra"][i], g["rb"][i]
            cv2.circle(image, a, ra, bgr, -1, aa, _SHIFT)
            cv2.circle(image, b, rb, bgr, -1, aa, _SHIFT)
            cv2.fillConvexPoly(image, quad, bgr, aa, _SHIFT)
            if labels is not None:
                cv2.circle(labels, a, ra, value, -1, plain, _SHIFT + 1)
                cv2.circle(labels, b, rb, value, -1, plain, _SHIFT + 1)
                cv2.fillConvexPoly(labels, quad, value, plain, _SHIFT + 1)
        else:
            outline = cv2.convexHull(g["points"][i])
            cv2.fillConvexPoly(image, outline, bgr, aa, _SHIFT)
            if labels is not None:
                cv2.fillConvexPoly(labels, outline, value, plain, _SHIFT + 1)


# ------------------------------------------------------------------------------------------------
# Rests, walking and transitions
# ------------------------------------------------------------------------------------------------

REST_KINDS = ("still", "shift", "shake", "fidget", "walk_out")
"""What the athlete does between sets: stands still (breathing), shifts its weight from foot to
foot, shakes its arms out, fidgets (looks around, wipes its face, twists), or walks out of the
frame and comes back."""

_WALK_SPEED = 1.15
_GAIT_CYCLE = 1.1


def _envelope(t: np.ndarray, duration: float, fade: float = 0.8) -> np.ndarray:
    """1 inside a rest, easing to 0 over `fade` seconds at both ends."""
    return _ease(t / fade) * _ease((duration - t) / fade)


def _gait(rows: np.ndarray, t: np.ndarray, amount: np.ndarray) -> None:
    """Add walking legs and arm swing to `rows` (`amount` 0 = standing, 1 = full stride)."""
    phi = 2 * np.pi * t / _GAIT_CYCLE
    for side, sign in (("l", 1.0), ("r", -1.0)):
        swing = np.sin(phi) * sign
        bend = np.maximum(0.0, np.cos(phi + (0.0 if sign > 0 else np.pi) + 0.3)) ** 2
        rows[:, PX[f"hip_flex_{side}"]] += amount * (22.0 * swing + 4.0)
        rows[:, PX[f"knee_{side}"]] += amount * (6.0 + 48.0 * bend)
        rows[:, PX[f"foot_pitch_{side}"]] += amount * (-12.0 * swing + 8.0 * bend)
        rows[:, PX[f"sh_flex_{side}"]] += amount * (-18.0 * swing)
        rows[:, PX[f"el_{side}"]] += amount * 10.0
    rows[:, PX["t_flex"]] += amount * 3.0


def _walk_path(
    t: np.ndarray, start: np.ndarray, end: np.ndarray, t0: float, duration: float
) -> tuple[np.ndarray, np.ndarray]:
    """Positions (m, 2) in (x, z) walking from `start` to `end` between `t0` and `t0 + duration`,
    easing in and out over the first and last half second; and the stride amount (m,)."""
    u = np.clip((t - t0) / duration, 0.0, 1.0)
    ramp = min(0.5 / duration, 0.5)
    # Constant speed in the middle, eased over the ramps at both ends.
    profile = np.where(
        u < ramp,
        u**2 / (2 * ramp),
        np.where(u > 1 - ramp, 1 - ramp - (1 - u) ** 2 / (2 * ramp) + ramp / 2, u - ramp / 2),
    ) / (1 - ramp)
    position = start + (end - start) * profile[:, None]
    amount = np.clip(np.minimum((t - t0) / 0.4, (t0 + duration - t) / 0.4), 0.0, 1.0)
    return position, amount


def _yaw_towards(direction: np.ndarray) -> float:
    """Body yaw (degrees) that faces the (x, z) direction."""
    return math.degrees(math.atan2(direction[0], direction[1]))


@dataclass(frozen=True)
class _Exit:
    """Where the athlete walks to leave the frame: a unit (x, z) direction and a distance."""

    direction: np.ndarray
    distance: float


def _rest_rows(
    kind: str,
    t: np.ndarray,
    duration: float,
    rng: np.random.Generator,
    body: Body,
    fps: float,
    exit: _Exit,
) -> np.ndarray:
    """Rows of a standing rest of `duration` seconds at times `t` (relative to its start)."""
    m = t.size
    rows = _rows(m)
    env = _envelope(t, duration)
    breathing = np.sin(2 * np.pi * t / 3.6 + rng.uniform(0, 6))
    _set(rows, "t_flex", NEUTRAL["t_flex"] + 0.8 * breathing * env)
    _set(rows, "n_yaw", 10.0 * np.tanh(_smooth_noise(rng, m, 1.2 * fps)) * env)
    if kind == "shift":
        weight = np.clip(1.3 * _smooth_noise(rng, m, 0.9 * fps), -1, 1) * env
        rows[:, PX["knee_l"]] += 14.0 * np.maximum(0, -weight)
        rows[:, PX["knee_r"]] += 14.0 * np.maximum(0, weight)
        rows[:, PX["hip_flex_l"]] += 6.0 * np.maximum(0, -weight)
        rows[:, PX["hip_flex_r"]] += 6.0 * np.maximum(0, weight)
        rows[:, PX["t_bend"]] += 3.0 * weight
        # The pelvis moves over the loaded foot: both legs lean the same way.
        rows[:, PX["hip_abd_l"]] -= 3.0 * weight
        rows[:, PX["hip_abd_r"]] += 3.0 * weight
    elif kind == "shake":
        burst = np.clip(1.5 * _smooth_noise(rng, m, 0.5 * fps) + 0.5, 0, 1) * env
        for side in "lr":
            rows[:, PX[f"sh_abd_{side}"]] += burst * (
                10.0 + 5.0 * _smooth_noise(rng, m, 0.05 * fps)
            )
            rows[:, PX[f"el_{side}"]] += burst * 20.0 * np.abs(_smooth_noise(rng, m, 0.06 * fps))
            rows[:, PX[f"sh_flex_{side}"]] += burst * 8.0 * _smooth_noise(rng, m, 0.07 * fps)
        rows[:, PX["t_twist"]] += 6.0 * burst * _smooth_noise(rng, m, 0.15 * fps)
    elif kind == "fidget":
        # Looks around (never over the shoulder), nods, twists.
        _set(rows, "n_yaw", 40.0 * np.tanh(_smooth_noise(rng, m, 0.8 * fps)) * env)
        rows[:, PX["n_flex"]] += 12.0 * np.tanh(_smooth_noise(rng, m, 0.9 * fps)) * env
        rows[:, PX["t_twist"]] += 15.0 * np.tanh(_smooth_noise(rng, m, 1.0 * fps)) * env
        # Wipe the face once with the right hand, somewhere in the middle of the rest.
        wipe = _ease((t - duration * 0.35) / 0.6) * _ease((duration * 0.35 + 1.8 - t) / 0.6)
        rows[:, PX["sh_flex_r"]] += 95.0 * wipe * env
        rows[:, PX["sh_abd_r"]] += 15.0 * wipe * env
        rows[:, PX["el_r"]] += 115.0 * wipe * env
        rows[:, PX["sh_abd_l"]] += 6.0 * np.abs(_smooth_noise(rng, m, 0.7 * fps)) * env
        rows[:, PX["el_l"]] += 20.0 * np.abs(_smooth_noise(rng, m, 0.6 * fps)) * env
    elif kind == "walk_out":
        return _walk_out_rows(t, duration, body, exit)
    elif kind != "still":
        raise ValueError(f"unknown rest {kind!r}; expected one of {REST_KINDS}")
    return _plant(rows, body)


_TURN = 0.6


def _walk_out_time(exit: _Exit) -> float:
    return exit.distance / _WALK_SPEED + 0.5


def _walk_out_length(exit: _Exit, outside: float) -> float:
    """Length of a walk-out rest: turn, walk out, `outside` seconds away, walk back, turn."""
    return 2 * (_TURN + _walk_out_time(exit)) + outside + 0.6


def _walk_out_rows(t: np.ndarray, duration: float, body: Body, exit: _Exit) -> np.ndarray:
    m = t.size
    walk = _walk_out_time(exit)
    out_at = _TURN
    back_at = duration - 0.6 - _TURN - walk
    here = np.zeros(2)
    away = exit.direction * exit.distance
    going, amount_out = _walk_path(t, here, away, out_at, walk)
    coming, amount_back = _walk_path(t, away, here, back_at, walk)
    position = np.where((t < back_at)[:, None], going, coming)
    amount = np.maximum(amount_out, amount_back)
    yaw_out = _yaw_towards(exit.direction)
    yaw_back = _yaw_towards(-exit.direction)
    # Face the exit, walk; turn round out of view; walk back; turn to the camera again.
    turn_out = _ease(t / _TURN)
    turn_round = _ease((t - (back_at - _TURN)) / _TURN)
    turn_home = _ease((t - (back_at + walk)) / _TURN)
    yaw = yaw_out * turn_out
    yaw = yaw + (yaw_back - yaw_out) * turn_round
    yaw = yaw + (0.0 - yaw_back) * turn_home
    rows = _rows(m)
    _gait(rows, t, amount)
    rows[:, PX["yaw"]] = yaw
    _plant(rows, body)
    rows[:, PX["x"]] += position[:, 0]
    rows[:, PX["z"]] += position[:, 1]
    return rows


def _crouch(body: Body) -> np.ndarray:
    """Squatting down with the hands toward the floor: the way from standing to a plank."""
    rows = _rows(1)
    _set(rows, "knee", 120.0)
    _set(rows, "hip_flex", 95.0)
    _set(rows, "t_flex", 45.0)
    _set(rows, "sh_flex", 40.0)
    _set(rows, "el", 10.0)
    return _ground(rows, body)


def _transition(rows: np.ndarray, frames: np.ndarray, keys: list[np.ndarray], body: Body) -> None:
    """Blend `rows[frames]` through the key poses (eased), then stand the result on the floor."""
    m = frames.size
    u = np.linspace(0.0, 1.0, m) * (len(keys) - 1)
    out = np.empty((m, rows.shape[1]))
    for j in range(len(keys) - 1):
        inside = (u >= j) & (u <= j + 1)
        w = _ease(u[inside] - j)[:, None]
        out[inside] = keys[j] * (1 - w) + keys[j + 1] * w
    rows[frames] = _ground(out, body)


# ------------------------------------------------------------------------------------------------
# Clip specification and ground truth
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SetPlan:
    """One set to perform."""

    exercise: str
    reps: int
    period: float
    """Seconds per rep before the tempo jitter."""
    depth: float | None = None
    """Range of motion of the dominant joint in degrees (None: the exercise's default)."""
    pause_after: int | None = None
    """A hold after this many reps (the set goes on after it)."""
    pause: float = 4.0


@dataclass(frozen=True)
class ClipSpec:
    """Everything that decides a clip; one spec always gives the same clip."""

    sets: tuple[SetPlan, ...]
    seed: int = 0
    size: tuple[int, int] = (480, 270)
    fps: int = 30
    rests: tuple[str, ...] = ("still", "shift", "fidget", "shake")
    """Kinds of the rests in turn: the lead-in, the rests between sets, the tail."""
    rest_seconds: tuple[float, float] = (7.0, 9.0)
    """Range of a rest's length between sets. Real rests last 30 s or more; these are shorter to
    keep clips small, but clearly longer than a pause inside a set (`SetPlan.pause`, 4 s):
    an analysis can tell the two apart only by their length and by whether the athlete holds
    still."""
    lead_in: tuple[float, float] = (2.0, 3.0)
    back_to_back: bool = False
    """No rest between sets (the sets must share a posture)."""
    camera: Camera = field(default_factory=Camera)
    scene: Scene = field(default_factory=Scene)
    body: Body = field(default_factory=Body)
    codec: str = "h264"
    """"h264" (PyAV, libx264, yuv420p) or "mp4v" (OpenCV)."""
    crf: int = 23
    preset: str = "ultrafast"
    """libx264 preset: "ultrafast" writes fastest, "veryfast" compresses like a real upload."""
    tempo_jitter: float = 0.08
    """Rep-to-rep variation of the period (0.08 = ±8 %)."""
    depth_jitter: float = 0.05


@dataclass(frozen=True)
class TrueSet:
    """A set as it really is in the clip: from the start of its first rep to the end of its last."""

    exercise: str
    start: float
    end: float
    reps: int
    rep_times: tuple[float, ...]
    """Time of each rep's turning point: bottom of a squat, lunge or push-up, arms up in a jack,
    forearm up in a curl."""
    rep_durations: tuple[float, ...]
    rom: tuple[float, ...]
    """Range of motion per rep: max - min of the dominant joint's 3D angle over the rep's frames
    (mean of both sides; the front leg for lunges)."""
    rom_2d: tuple[float, ...]
    """The same angle measured on the image (the side nearer the camera; the front leg)."""
    target_rom: tuple[float, ...]
    """The range of motion the generator asked for (depth with its rep-to-rep variation)."""
    joint: str
    pauses: tuple[tuple[float, float], ...] = ()
    """Holds inside the set (start, end)."""


def _tuples(value):
    """JSON lists back to the tuples the frozen dataclasses hold."""
    return tuple(_tuples(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True, eq=False)
class ClipTruth:
    """What a generated clip really contains. Arrays are per frame (frame i is at i / fps)."""

    path: Path
    duration: float
    fps: float
    size: tuple[int, int]
    sets: tuple[TrueSet, ...]
    rests: tuple[tuple[float, float], ...]
    joints: np.ndarray
    """(n, 33, 2) float32: the athlete's landmarks in frame pixels."""
    visibility: np.ndarray
    """(n, 33) uint8: VISIBLE, SELF_OCCLUDED, HIDDEN (by another person) or OUT_OF_FRAME."""
    joints_3d: np.ndarray
    """(n, 33, 3) float32: the landmarks in world metres (y up, athlete at the origin)."""
    body_height: np.ndarray
    """(n,) float32: the athlete's standing height in pixels at its distance (zoom included)."""
    present: np.ndarray
    """(n,) bool: the athlete is in view by design (at least 6 of its 12 major joints in the frame
    and not hidden by someone else)."""
    look: Look | None = None
    """What the athlete looks like and wears."""
    scenario: str = ""

    @property
    def frames(self) -> int:
        return int(self.joints.shape[0])

    def save(self, path: Path | None = None) -> Path:
        """Write the truth beside the video (`clip.npz` for `clip.mp4`); returns its path."""
        target = path or self.path.with_suffix(".npz")
        meta = {
            "path": str(self.path),
            "duration": self.duration,
            "fps": self.fps,
            "size": list(self.size),
            "sets": [dataclasses.asdict(s) for s in self.sets],
            "rests": [list(r) for r in self.rests],
            "scenario": self.scenario,
            "look": dataclasses.asdict(self.look) if self.look else None,
        }
        np.savez_compressed(
            target,
            meta=np.array(json.dumps(meta)),
            joints=self.joints,
            visibility=self.visibility,
            joints_3d=self.joints_3d,
            body_height=self.body_height,
            present=self.present,
        )
        return target

    @classmethod
    def load(cls, path: Path) -> ClipTruth:
        """Read a truth written by `save`."""
        with np.load(path) as data:
            meta = json.loads(str(data["meta"]))
            sets = tuple(TrueSet(**{k: _tuples(v) for k, v in s.items()}) for s in meta["sets"])
            return cls(
                Path(meta["path"]),
                meta["duration"],
                meta["fps"],
                tuple(meta["size"]),
                sets,
                tuple(tuple(r) for r in meta["rests"]),
                data["joints"],
                data["visibility"],
                data["joints_3d"],
                data["body_height"],
                data["present"],
                Look(**{k: _tuples(v) for k, v in meta["look"].items()})
                if meta.get("look")
                else None,
                meta["scenario"],
            )


# ------------------------------------------------------------------------------------------------
# The athlete's timeline: rests and sets, frame by frame
# ------------------------------------------------------------------------------------------------

_GET_DOWN = 2.4
"""Seconds it takes to get from standing into a plank (or back up), inside the rest."""


@dataclass
class _Piece:
    kind: str
    """"rest" or "set"."""
    start: float
    end: float
    rest: str = ""
    plan: SetPlan | None = None
    starts: np.ndarray | None = None
    periods: np.ndarray | None = None
    depths: np.ndarray | None = None
    pause: tuple[float, float] | None = None


def _plan(spec: ClipSpec, rng: np.random.Generator, exit: _Exit) -> list[_Piece]:
    """Lay out the rests and sets in time (nothing is posed yet)."""
    pieces: list[_Piece] = []
    kinds = iter(spec.rests * (len(spec.sets) + 1))
    t = 0.0

    def rest(length: tuple[float, float], before: str | None, after: str | None) -> None:
        nonlocal t
        kind = next(kinds)
        if kind == "walk_out":
            seconds = _walk_out_length(exit, float(rng.uniform(1.5, 2.5)))
        else:
            seconds = float(rng.uniform(*length))
        seconds += _GET_DOWN * ((before == "plank") + (after == "plank"))
        pieces.append(_Piece("rest", t, t + seconds, rest=kind))
        t += seconds

    previous: str | None = None
    for i, plan in enumerate(spec.sets):
        if plan.exercise not in EXERCISES:
            raise ValueError(
                f"unknown exercise {plan.exercise!r}; expected one of {sorted(EXERCISES)}"
            )
        exercise = EXERCISES[plan.exercise]
        if i == 0:
            rest(spec.lead_in, None, exercise.posture)
        elif not spec.back_to_back:
            rest(spec.rest_seconds, previous, exercise.posture)
        elif previous != exercise.posture:
            raise ValueError("back-to-back sets must share a posture (standing or plank)")
        periods = plan.period * (
            1.0 + rng.uniform(-spec.tempo_jitter, spec.tempo_jitter, plan.reps)
        )
        depth = exercise.depth if plan.depth is None else plan.depth
        depths = depth * (1.0 + rng.uniform(-spec.depth_jitter, spec.depth_jitter, plan.reps))
        starts = np.empty(plan.reps)
        start = t
        pause = None
        for j in range(plan.reps):
            if plan.pause_after is not None and j == plan.pause_after:
                pause = (t, t + plan.pause)
                t += plan.pause
            starts[j] = t
            t += float(periods[j])
        pieces.append(
            _Piece(
                "set",
                start,
                t,
                plan=plan,
                starts=starts,
                periods=periods,
                depths=depths,
                pause=pause,
            )
        )
        previous = exercise.posture
    rest(spec.lead_in, previous, None)
    return pieces


def _pose_timeline(
    pieces: list[_Piece], spec: ClipSpec, rng: np.random.Generator, body: Body, exit: _Exit
) -> np.ndarray:
    """Rows for every frame of the planned pieces."""
    fps = spec.fps
    n = int(round(pieces[-1].end * fps))
    t = np.arange(n) / fps
    rows = np.zeros((n, len(PARAMS)))
    for piece in pieces:
        inside = np.flatnonzero((t >= piece.start) & (t < piece.end))
        if piece.kind == "rest":
            rows[inside] = _rest_rows(
                piece.rest, t[inside] - piece.start, piece.end - piece.start, rng, body, fps, exit
            )
            continue
        assert piece.plan is not None and piece.starts is not None and piece.periods is not None
        assert piece.depths is not None
        exercise = EXERCISES[piece.plan.exercise]
        rows[inside] = exercise.rows(np.zeros(inside.size), float(piece.depths[0]), 0, body)
        for j, (start, period) in enumerate(zip(piece.starts, piece.periods, strict=True)):
            frames = np.flatnonzero((t >= start) & (t < start + period))
            rows[frames] = exercise.rows(
                (t[frames] - start) / period, float(piece.depths[j]), j, body
            )
    # Getting down into a plank and back up happens inside the rests next to push-up sets.
    for i, piece in enumerate(pieces):
        if piece.kind != "rest":
            continue
        crouch = _crouch(body)[0]
        before = pieces[i - 1] if i > 0 else None
        after = pieces[i + 1] if i + 1 < len(pieces) else None
        if (
            before is not None
            and before.plan
            and EXERCISES[before.plan.exercise].posture == "plank"
        ):
            frames = np.flatnonzero((t >= piece.start) & (t < piece.start + _GET_DOWN))
            last = max(frames[0] - 1, 0)
            end = min(frames[-1] + 1, n - 1)
            _transition(rows, frames, [rows[last], crouch, rows[end]], body)
        if after is not None and after.plan and EXERCISES[after.plan.exercise].posture == "plank":
            frames = np.flatnonzero((t >= piece.end - _GET_DOWN) & (t < piece.end))
            first = max(frames[0] - 1, 0)
            _transition(rows, frames, [rows[first], crouch, rows[min(frames[-1] + 1, n - 1)]], body)
    return rows


def _place(rows: np.ndarray, x: float, z: float, yaw: float) -> np.ndarray:
    """Move a person's rows from its own frame to the world: turned by `yaw`, then put at (x, z)."""
    out = rows.copy()
    a = math.radians(yaw)
    px, pz = rows[:, PX["x"]], rows[:, PX["z"]]
    out[:, PX["x"]] = x + px * math.cos(a) + pz * math.sin(a)
    out[:, PX["z"]] = z - px * math.sin(a) + pz * math.cos(a)
    out[:, PX["yaw"]] += yaw
    return out


# ------------------------------------------------------------------------------------------------
# Writing a clip
# ------------------------------------------------------------------------------------------------


class _Writer:
    """H.264 through PyAV (libx264, yuv420p) or MPEG-4 Part 2 through OpenCV."""

    def __init__(
        self, path: Path, size: tuple[int, int], fps: float, codec: str, crf: int, preset: str
    ) -> None:
        width, height = size
        if width % 2 or height % 2:
            raise ValueError(f"frame size must be even, got {size}")
        self.codec = codec
        if codec == "h264":
            import av

            self.container = av.open(str(path), "w")
            self.stream = self.container.add_stream(
                "libx264",
                rate=Fraction(fps).limit_denominator(1001),
                options={"crf": str(crf), "preset": preset},
            )
            self.stream.width, self.stream.height = width, height
            self.stream.pix_fmt = "yuv420p"
            self.av = av
        elif codec == "mp4v":
            self.writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), fps, size)
            if not self.writer.isOpened():
                raise RuntimeError(f"OpenCV cannot write {path} with mp4v")
        else:
            raise ValueError(f"unknown codec {codec!r}; expected 'h264' or 'mp4v'")

    def write(self, frame: np.ndarray) -> None:
        if self.codec == "h264":
            image = self.av.VideoFrame.from_ndarray(frame, format="bgr24")
            for packet in self.stream.encode(image):
                self.container.mux(packet)
        else:
            self.writer.write(frame)

    def close(self) -> None:
        if self.codec == "h264":
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
        else:
            self.writer.release()


def _exit(view: _View, size: tuple[int, int], camera: Camera, body: Body) -> _Exit:
    """Which way the athlete leaves the frame (toward the nearer side edge) and how far it walks."""
    right = view.axes[0][[0, 2]]
    right = right / np.linalg.norm(right)
    toward_right = camera.at[0] >= 0.5
    direction = right if toward_right else -right
    distance_to_camera = float(np.linalg.norm(view.position - np.array([0.0, camera.aim, 0.0])))
    metres_per_pixel = distance_to_camera / view.focal
    to_edge = (1.0 - camera.at[0] if toward_right else camera.at[0]) * size[0]
    margin = 1.25 * (to_edge * metres_per_pixel) + 0.3 * body.height + 0.5
    return _Exit(direction, float(margin))


def _vignette(size: tuple[int, int], strength: float) -> np.ndarray:
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    r = np.hypot((x - width / 2) / (width / 2), (y - height / 2) / (height / 2)) / math.sqrt(2)
    return (1.0 - strength * r**2).astype(np.float32)


def _others(
    spec: ClipSpec,
    rng: np.random.Generator,
    view: _View,
    pieces: list[_Piece],
    n: int,
    wall,
    floor,
    avoid,
) -> list[_Person]:
    """The other person of the scene, if any, as rows in world coordinates."""
    kind = spec.scene.other
    if kind is None:
        return []
    fps = spec.fps
    t = np.arange(n) / fps
    right = view.axes[0][[0, 2]] / np.linalg.norm(view.axes[0][[0, 2]])
    ahead = view.axes[2][[0, 2]] / np.linalg.norm(view.axes[2][[0, 2]])  # from camera to athlete
    distance = float(np.linalg.norm(view.position[[0, 2]]))
    body = Body(height=float(rng.uniform(1.6, 1.72)), width=float(rng.uniform(0.9, 1.05)))
    look = _look(rng, wall, floor, skin=None)
    if _apart(look.shirt, [avoid], 40) is False:
        look = dataclasses.replace(look, shirt=_pick(rng, _SHIRTS, [wall, floor, avoid], 50))
    sets = [p for p in pieces if p.kind == "set"]
    if kind in ("walker_behind", "passer_in_front"):
        if kind == "walker_behind":
            offset = ahead * 2.3
            speed = 1.1
        else:
            offset = -ahead * min(1.2, 0.45 * distance)
            speed = 1.3
        depth = distance + float(offset @ ahead)
        half = depth * spec.size[0] / 2 / view.focal + 1.0
        rows = _rows(n)
        walk = 2 * half / speed
        position = np.broadcast_to(offset - right * half, (n, 2)).copy()
        amount = np.zeros(n)
        yaw = np.full(n, _yaw_towards(right))
        # Cross the frame in the middle of each set, one way then back, waiting out of view.
        for j, piece in enumerate(sets):
            sign = 1.0 if j % 2 == 0 else -1.0
            t0 = (piece.start + piece.end) / 2 - walk / 2
            crossing, stride = _walk_path(
                t, offset - sign * right * half, offset + sign * right * half, t0, walk
            )
            position[t >= t0] = crossing[t >= t0]
            amount += stride
            yaw[t >= t0 - 0.3] = _yaw_towards(sign * right)
        _gait(rows, t, amount)
        rows[:, PX["yaw"]] = yaw
        _plant(rows, body)
        rows[:, PX["x"]] += position[:, 0]
        rows[:, PX["z"]] += position[:, 1]
        return [_Person(rows, body, look, 100)]
    if kind == "exerciser":
        athlete_exercise = sets[0].plan.exercise if sets and sets[0].plan else "squat"
        exercise = "jumping_jack" if athlete_exercise != "jumping_jack" else "squat"
        period = 0.75 if exercise == "jumping_jack" else 1.7
        reps = max(1, int(8 / period))
        other = ClipSpec(
            sets=tuple(
                SetPlan(exercise, reps, period)
                for _ in range(int(n / fps / (reps * period + 4)) + 1)
            ),
            fps=fps,
            rests=("still",),
            rest_seconds=(2.5, 4.0),
            lead_in=(0.5, 1.5),
        )
        never = _Exit(np.array([1.0, 0.0]), 1.0)
        other_pieces = _plan(other, rng, never)
        local = _pose_timeline(other_pieces, other, rng, body, never)
        if local.shape[0] < n:
            local = np.vstack([local, np.repeat(local[-1:], n - local.shape[0], axis=0)])
        side = -1.0 if spec.camera.at[0] >= 0.5 else 1.0
        half_width = distance * spec.size[0] / 2 / view.focal
        spot = ahead * 1.8 + right * side * 0.55 * (
            half_width + 1.8 * spec.size[0] / 2 / view.focal
        )
        facing = _yaw_towards(-ahead)
        return [_Person(_place(local[:n], float(spot[0]), float(spot[1]), facing), body, look, 100)]
    raise ValueError(f"unknown other person {kind!r}")


class _Backdrop:
    """The room behind the people, with a margin so that drift, roll and zoom never show its
    edge, lit by the scene's light, and its TV."""

    def __init__(
        self, spec: ClipSpec, view: _View, rng: np.random.Generator, look: Look, wall, floor, n: int
    ):
        width, height = spec.size
        self.size = spec.size
        self.margin = margin = int(0.22 * max(width, height))
        # The wall stands 4.5 m behind the athlete: its foot is the floor line of the picture.
        ahead = np.array([view.axes[2][0], 0.0, view.axes[2][2]])
        ahead /= np.linalg.norm(ahead)
        wall_foot, wall_depth = view.project((4.5 * ahead)[None, None], moved=False)
        athlete_x = spec.camera.at[0] * width + margin
        half = (
            0.45
            * spec.camera.height
            * height
            * (1.0 + abs(math.sin(math.radians(spec.camera.yaw))))
        )
        canvas, self.tv_rect = _room(
            rng,
            (width + 2 * margin, height + 2 * margin),
            float(wall_foot[0, 0, 1]) + margin,
            view.focal / float(wall_depth[0, 0]),
            wall,
            floor,
            (athlete_x - half, athlete_x + half),
            [look.skin, look.shirt, look.trousers],
            spec.scene.tv,
        )
        self.light = spec.scene.light * _vignette(
            (width + 2 * margin, height + 2 * margin), spec.scene.vignette
        )
        self.canvas = np.clip(canvas * self.light[..., None], 0, 255).astype(np.uint8)
        self.cuts = np.zeros(1, int)
        self.pictures: list[np.ndarray] = []
        if self.tv_rect is not None:
            self.cuts, pictures = _tv_frames(rng, self.tv_rect, n, spec.fps)
            x, y, w, h = self.tv_rect
            lit = self.light[y : y + h, x : x + w, None]
            self.pictures = [np.clip(p * lit, 0, 255).astype(np.uint8) for p in pictures]
        self.motion = view.motion
        self.still = bool(
            np.allclose(view.motion, view.motion[:1])
            and np.allclose(view.motion[0, :, :2], np.eye(2))
        )
        self.to_canvas = np.array([[1.0, 0.0, -margin], [0.0, 1.0, -margin], [0.0, 0.0, 1.0]])

    def light_at(self, pixels: np.ndarray) -> np.ndarray:
        """The light at frame pixels (n, 2), as the still camera sees the room."""
        top = self.light.shape[1] - 1, self.light.shape[0] - 1
        x = np.clip(np.round(pixels[:, 0] + self.margin), 0, top[0]).astype(int)
        y = np.clip(np.round(pixels[:, 1] + self.margin), 0, top[1]).astype(int)
        return self.light[y, x]

    def frame(self, i: int) -> np.ndarray:
        """The room as frame `i` shows it (a fresh array to draw on)."""
        if self.pictures:
            x, y, w, h = self.tv_rect
            cut = int(np.searchsorted(self.cuts, i, side="right") - 1)
            self.canvas[y : y + h, x : x + w] = self.pictures[cut]
        width, height = self.size
        if self.still:
            ox = int(round(self.margin - self.motion[i, 0, 2]))
            oy = int(round(self.margin - self.motion[i, 1, 2]))
            return self.canvas[oy : oy + height, ox : ox + width].copy()
        matrix = (np.vstack([self.motion[i], [0, 0, 1]]) @ self.to_canvas)[:2]
        return cv2.warpAffine(
            self.canvas, matrix, self.size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
        )


class _Sensor:
    """What the camera adds to every frame: light flicker and sensor noise."""

    def __init__(
        self, scene: Scene, size: tuple[int, int], fps: float, n: int, rng: np.random.Generator
    ):
        width, height = size
        wave = 0.6 * np.sin(2 * np.pi * 0.9 * np.arange(n) / fps) + 0.6 * rng.uniform(-1, 1, n)
        self.gain = 1.0 + scene.flicker * np.clip(wave, -1, 1) if scene.flicker else None
        # A few noise images reused in turn: drawing fresh noise per frame costs more than the
        # rest of the frame, and the codec cannot tell.
        self.noise = []
        if scene.noise:
            for _ in range(6):
                noise = rng.normal(0.0, scene.noise, size=(height, width, 3))
                self.noise.append(
                    (
                        np.clip(noise, 0, 255).astype(np.uint8),
                        np.clip(-noise, 0, 255).astype(np.uint8),
                    )
                )

    def apply(self, frame: np.ndarray, i: int) -> np.ndarray:
        if self.gain is not None:
            frame = cv2.convertScaleAbs(frame, alpha=float(self.gain[i]))
        if self.noise:
            plus, minus = self.noise[i % len(self.noise)]
            frame = cv2.subtract(cv2.add(frame, plus), minus)
        return frame


class _Visibility:
    """Reads the visibility of the athlete's landmarks off the frame's label buffer."""

    def __init__(self, lead: _Drawn, size: tuple[int, int], k: float):
        n = lead.depth.shape[0]
        self.size = size
        self.own = np.zeros((33, 256), bool)
        for j, labels in _OWN.items():
            self.own[j, list(labels)] = True
        self.trunk_labels = np.zeros(256, bool)
        self.trunk_labels[[_LABEL["shirt"], _LABEL["pelvis"]]] = True
        # A shoulder or hip on the far side of the trunk is behind it, though the trunk is its own.
        trunk = np.array([LM[f"{s}_{j}"] for s in ("left", "right") for j in ("shoulder", "hip")])
        middle = lead.depth[:, _I_TORSO:_I_PELVIS_RING].mean(axis=1)
        self.behind_trunk = np.zeros((n, 33), bool)
        self.behind_trunk[:, trunk] = lead.depth[:, trunk] > middle[:, None] + 0.07 * k
        self.codes = np.full((n, 33), OUT_OF_FRAME, np.uint8)

    def read(self, i: int, xy: np.ndarray, labels: np.ndarray) -> None:
        """Record frame `i`'s codes from the landmarks' pixels (33, 2) and the half-size labels."""
        width, height = self.size
        inside = (xy[:, 0] >= 0) & (xy[:, 0] < width) & (xy[:, 1] >= 0) & (xy[:, 1] < height)
        lx = np.clip((xy[:, 0] / 2).astype(int), 0, labels.shape[1] - 1)
        ly = np.clip((xy[:, 1] / 2).astype(int), 0, labels.shape[0] - 1)
        found = labels[ly, lx]
        own = self.own[np.arange(33), found] & ~(self.behind_trunk[i] & self.trunk_labels[found])
        code = np.where(found >= 100, HIDDEN, np.where(own, VISIBLE, SELF_OCCLUDED))
        code = np.where(found == 0, VISIBLE, code)
        self.codes[i] = np.where(inside, code, OUT_OF_FRAME)


def write_clip(path: Path, spec: ClipSpec, scenario: str = "") -> ClipTruth:
    """Write a clip of a person working out as `spec` says, and return its ground truth.

    Args:
        path: the video file to write (`.mp4`).
        spec: what happens and how it is filmed.
        scenario: a name kept in the truth.

    Returns:
        The truth: sets, rests, and the athlete's joints per frame.

    Raises:
        ValueError: for an unknown exercise, rest, other person or codec, an odd frame size, or
            back-to-back sets of different postures.
    """
    plan_rng, view_rng, scene_rng, people_rng, motion_rng = (
        np.random.default_rng(s) for s in np.random.SeedSequence(spec.seed).spawn(5)
    )
    width, height = spec.size
    fps = spec.fps
    body = spec.body
    still = _view(spec.camera, body, spec.size, fps, 1, np.random.default_rng(0))
    exit = _exit(still, spec.size, spec.camera, body)
    pieces = _plan(spec, plan_rng, exit)
    rows = _pose_timeline(pieces, spec, motion_rng, body, exit)
    n = rows.shape[0]
    view = _view(spec.camera, body, spec.size, fps, n, view_rng)

    wall = _WALLS[int(scene_rng.integers(len(_WALLS)))]
    floor = _FLOORS[int(scene_rng.integers(len(_FLOORS)))]
    look = _look(scene_rng, wall, floor)
    while not _apart(look.skin, [wall], 35):
        wall = _WALLS[int(scene_rng.integers(len(_WALLS)))]
        look = _look(scene_rng, wall, floor, skin=look.skin)
    backdrop = _Backdrop(spec, view, scene_rng, look, wall, floor, n)
    people = [_Person(rows, body, look, 0)]
    people += _others(spec, people_rng, view, pieces, n, wall, floor, look.shirt)
    drawn = []
    for person in people:
        # People in a dark corner are dark too: the light at their pelvis scales their colours.
        pelvis, _ = view.project(pose(person.rows, person.body).points[:, _PELVIS : _PELVIS + 1])
        drawn.append(_prepare(person, view, backdrop.light_at(pelvis[:, 0])))
    lead = drawn[0]
    sensor = _Sensor(spec.scene, spec.size, fps, n, scene_rng)
    visibility = _Visibility(lead, spec.size, body.k)

    writer = _Writer(path, spec.size, fps, spec.codec, spec.crf, spec.preset)
    labels = np.zeros((height // 2, width // 2), np.uint8)
    try:
        for i in range(n):
            frame = backdrop.frame(i)
            labels[:] = 0
            in_front = False
            for d in sorted(drawn, key=lambda d: -float(d.depth[i, _PELVIS])):
                if d.depth[i, _PELVIS] < 0.3:  # behind the camera
                    continue
                if d is lead:
                    _draw_person(frame, labels, d, i, None)
                    in_front = True
                else:
                    # Only someone in front of the athlete can hide its joints.
                    _draw_person(frame, labels if in_front else None, d, i, d.person.label)
            visibility.read(i, lead.pixels[i, :33], labels)
            writer.write(sensor.apply(frame, i))
    finally:
        writer.close()

    joints = lead.pixels[:, :33].astype(np.float32)
    joints_3d = pose(rows, body).points[:, :33].astype(np.float32)
    body_height = body.height * view.focal * view.scale / lead.depth[:, _PELVIS]
    codes = visibility.codes
    present = (codes[:, MAJOR] <= SELF_OCCLUDED).sum(axis=1) >= 6
    sets = tuple(
        _true_set(p, spec, joints_3d, joints, lead.depth) for p in pieces if p.kind == "set"
    )
    rests = tuple((round(p.start, 3), round(p.end, 3)) for p in pieces if p.kind == "rest")
    return ClipTruth(
        path,
        round(n / fps, 3),
        float(fps),
        spec.size,
        sets,
        rests,
        joints,
        codes,
        joints_3d,
        body_height.astype(np.float32),
        present,
        look,
        scenario,
    )


def _true_set(piece: _Piece, spec: ClipSpec, joints_3d, joints, depth) -> TrueSet:
    assert piece.plan is not None and piece.starts is not None and piece.periods is not None
    assert piece.depths is not None
    exercise = EXERCISES[piece.plan.exercise]
    fps = spec.fps
    n = joints.shape[0]
    t = np.arange(n) / fps
    in_set = (t >= piece.start) & (t < piece.end)
    left = LM["left_shoulder"] if exercise.name != "lunge" else LM["left_hip"]
    near = "left" if depth[in_set, left].mean() <= depth[in_set, left + 1].mean() else "right"
    rom, rom_2d = [], []
    for j, (start, period) in enumerate(zip(piece.starts, piece.periods, strict=True)):
        frames = (t >= start) & (t < start + period)
        if exercise.alternates:
            sides = ["left" if j % 2 == 0 else "right"]
            side_2d = sides[0]
        else:
            sides = ["left", "right"]
            side_2d = near
        angle = np.mean([exercise.angle(joints_3d[frames], s) for s in sides], axis=0)
        rom.append(round(float(angle.max() - angle.min()), 2))
        angle_2d = exercise.angle(joints[frames], side_2d)
        rom_2d.append(round(float(angle_2d.max() - angle_2d.min()), 2))
    return TrueSet(
        exercise=exercise.name,
        start=round(piece.start, 3),
        end=round(piece.end, 3),
        reps=piece.plan.reps,
        rep_times=tuple(
            round(float(s + exercise.turn * p), 3)
            for s, p in zip(piece.starts, piece.periods, strict=True)
        ),
        rep_durations=tuple(round(float(p), 3) for p in piece.periods),
        rom=tuple(rom),
        rom_2d=tuple(rom_2d),
        target_rom=tuple(round(float(d), 2) for d in piece.depths),
        joint=exercise.joint,
        pauses=(tuple((round(a, 3), round(b, 3)) for a, b in [piece.pause]) if piece.pause else ()),
    )


# ------------------------------------------------------------------------------------------------
# Scoring a pose estimator against the truth
# ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoseScore:
    """How well a pose estimator followed the athlete through a clip."""

    frames: int
    """Frames where the athlete is in view by design (`ClipTruth.present`)."""
    found: float
    """Share of those frames where enough of the athlete's seen major joints were found near
    where the generator put them."""
    median_error: float
    """Median over those frames of the median major-joint error, in body heights (NaN if the
    estimator found nobody in any of them)."""
    missed: tuple[int, ...]
    """The frames (indices) that were not found."""


def score_pose(
    truth: ClipTruth, estimate: np.ndarray, tolerance: float = 0.1, share: float = 0.9
) -> PoseScore:
    """Compare an estimator's landmarks with the truth, frame by frame.

    A frame counts as found when at least `share` of the athlete's major joints that are in the
    frame and not hidden by someone else (self-occluded ones included: estimators place those
    too) lie within `tolerance` body heights of the truth. Joints near another person do not
    count, so following a passer-by fails.

    Args:
        truth: the clip's truth.
        estimate: (frames, 33, 2) landmarks in frame pixels, BlazePose's order; NaN where the
            estimator found nobody.
        tolerance: distance in body heights (`ClipTruth.body_height`).
        share: fraction of the seen major joints that must be within `tolerance`.

    Returns:
        The score over the frames where the athlete is in view by design.
    """
    n = min(len(estimate), truth.frames)
    seen = truth.visibility[:n][:, MAJOR] <= SELF_OCCLUDED
    error = np.linalg.norm(estimate[:n, MAJOR] - truth.joints[:n, MAJOR], axis=2)
    error = error / truth.body_height[:n, None]
    close = np.where(seen, np.nan_to_num(error, nan=np.inf) < tolerance, False)
    ok = close.sum(axis=1) >= share * np.maximum(seen.sum(axis=1), 1)
    frames = np.flatnonzero(truth.present[:n])
    typical = (
        np.array([np.median(error[i][seen[i]]) for i in frames]) if frames.size else np.array([])
    )
    with np.errstate(all="ignore"):
        median = float(np.nanmedian(typical)) if np.isfinite(typical).any() else float("nan")
    return PoseScore(
        frames=int(frames.size),
        found=float(ok[frames].mean()) if frames.size else 0.0,
        median_error=median,
        missed=tuple(int(i) for i in frames[~ok[frames]]),
    )


# ------------------------------------------------------------------------------------------------
# The scenario catalogue
# ------------------------------------------------------------------------------------------------

_FRONT = Camera()
_THREE_QUARTER = Camera(yaw=35.0)
_SIDE_PLANK = Camera(yaw=90.0, height=0.62, aim=0.45, elevation=0.7, at=(0.5, 0.6))


def _spec(*sets: SetPlan, **kwargs) -> ClipSpec:
    return ClipSpec(sets=tuple(sets), **kwargs)


SCENARIOS: dict[str, ClipSpec] = {
    # One per exercise, filmed the way people film it.
    "squats": _spec(
        SetPlan("squat", 7, 1.9), SetPlan("squat", 6, 2.1), seed=11, camera=_THREE_QUARTER
    ),
    "jumping_jacks": _spec(
        SetPlan("jumping_jack", 12, 0.85),
        SetPlan("jumping_jack", 14, 0.8),
        seed=12,
        rests=("still", "shake", "shift"),
    ),
    "curls": _spec(
        SetPlan("bicep_curl", 8, 1.7),
        SetPlan("bicep_curl", 8, 1.8),
        seed=13,
        camera=Camera(yaw=15.0),
    ),
    "push_ups_side": _spec(
        SetPlan("push_up", 8, 1.5),
        SetPlan("push_up", 7, 1.6),
        seed=14,
        camera=_SIDE_PLANK,
        lead_in=(1.2, 1.8),
        rest_seconds=(7.0, 8.0),
    ),
    "lunges": _spec(
        SetPlan("lunge", 7, 2.0), SetPlan("lunge", 6, 2.1), seed=15, camera=Camera(yaw=65.0)
    ),
    # Other people in the room.
    "walker_behind": _spec(
        SetPlan("squat", 8, 2.0),
        SetPlan("bicep_curl", 7, 1.8),
        seed=21,
        camera=Camera(yaw=20.0),
        scene=Scene(other="walker_behind"),
    ),
    "passer_in_front": _spec(
        SetPlan("jumping_jack", 12, 0.9),
        SetPlan("squat", 8, 2.0),
        seed=22,
        scene=Scene(other="passer_in_front"),
    ),
    "second_exerciser": _spec(
        SetPlan("squat", 7, 2.0),
        SetPlan("squat", 6, 2.2),
        seed=23,
        camera=Camera(at=(0.4, 0.55)),
        scene=Scene(other="exerciser"),
    ),
    "tv_with_cuts": _spec(
        SetPlan("bicep_curl", 10, 1.6),
        SetPlan("jumping_jack", 12, 0.9),
        seed=24,
        scene=Scene(tv=True),
    ),
    # Hard filming.
    "small_dark_at_edge": _spec(
        SetPlan("squat", 8, 2.0),
        SetPlan("jumping_jack", 12, 0.9),
        seed=31,
        camera=Camera(height=0.3, at=(0.14, 0.66)),
        scene=Scene(light=0.45, vignette=0.55, noise=5.0),
    ),
    "handheld_drift": _spec(
        SetPlan("squat", 8, 2.0),
        SetPlan("jumping_jack", 12, 0.9),
        seed=32,
        camera=Camera(yaw=30.0, at=(0.5, 0.5), drift=0.05, shake=0.004),
    ),
    "shake_zoom_roll": _spec(
        SetPlan("jumping_jack", 12, 0.9),
        SetPlan("bicep_curl", 8, 1.8),
        seed=33,
        camera=Camera(
            height=0.6, at=(0.5, 0.48), shake=0.012, zoom=1.3, roll=6.0, roll_wobble=2.0, drift=0.02
        ),
    ),
    "upper_body_curls": _spec(
        SetPlan("bicep_curl", 9, 1.7),
        SetPlan("bicep_curl", 7, 2.0),
        seed=34,
        camera=Camera(height=2.0, aim=1.22, elevation=1.3, at=(0.5, 0.55)),
    ),
    "compressed_240p_15fps": _spec(
        SetPlan("squat", 8, 2.0),
        SetPlan("jumping_jack", 12, 0.9),
        seed=35,
        size=(426, 240),
        fps=15,
        crf=35,
        preset="veryfast",
        camera=Camera(yaw=20.0),
        scene=Scene(noise=4.0, flicker=0.05),
    ),
    # Timing.
    "back_to_back": _spec(
        SetPlan("squat", 8, 2.0),
        SetPlan("jumping_jack", 14, 0.85),
        seed=41,
        back_to_back=True,
        camera=Camera(yaw=10.0),
    ),
    "pause_in_set": _spec(
        SetPlan("squat", 12, 2.0, pause_after=6, pause=4.0), seed=42, camera=_THREE_QUARTER
    ),
    "walks_out_during_rest": _spec(
        SetPlan("bicep_curl", 6, 1.8),
        SetPlan("squat", 6, 2.0),
        seed=43,
        rests=("still", "walk_out", "still"),
    ),
    "portrait_24fps": _spec(
        SetPlan("jumping_jack", 12, 0.9),
        SetPlan("squat", 8, 2.0),
        seed=44,
        size=(270, 480),
        fps=24,
        camera=Camera(height=0.55, at=(0.5, 0.52)),
    ),
    "fps60": _spec(
        SetPlan("bicep_curl", 8, 1.6),
        SetPlan("jumping_jack", 10, 0.9),
        seed=45,
        fps=60,
        rest_seconds=(3.5, 4.5),
    ),
    "tempo_fast": _spec(
        SetPlan("jumping_jack", 15, 0.5, depth=120.0),
        SetPlan("jumping_jack", 15, 0.5, depth=120.0),
        seed=46,
        rests=("still", "shake", "still"),
    ),
    "tempo_slow": _spec(
        SetPlan("squat", 6, 6.0), seed=47, camera=_THREE_QUARTER, lead_in=(1.5, 2.0)
    ),
}
"""Named clips the pose tests use, 15-40 s each at small sizes. Each says what it stresses."""


def make_scenario(name: str, folder: Path, save: bool = True) -> ClipTruth:
    """Write scenario `name` as `folder/<name>.mp4` (and its truth as `.npz` when `save`).

    Raises:
        KeyError: for an unknown scenario name.
    """
    truth = write_clip(folder / f"{name}.mp4", SCENARIOS[name], name)
    if save:
        truth.save()
    return truth


def make_catalogue(
    folder: Path, names: Sequence[str] | None = None, workers: int = 1
) -> dict[str, ClipTruth]:
    """Write several scenarios (all by default), in `workers` processes; returns their truths."""
    chosen = list(names or SCENARIOS)
    if workers <= 1:
        return {name: make_scenario(name, folder) for name in chosen}
    truths = in_processes(make_scenario, chosen, [folder] * len(chosen), workers=workers)
    return dict(zip(chosen, truths, strict=True))


def long_workout(
    path: Path, seed: int = 7, size: tuple[int, int] = (1280, 720), fps: int = 30
) -> ClipTruth:
    """A longer mixed workout (about three minutes, every exercise, every kind of rest) at 720p,
    filmed three-quarter with a little hand-held drift: the engine benchmark's clip."""
    spec = ClipSpec(
        sets=(
            SetPlan("squat", 12, 2.0),
            SetPlan("jumping_jack", 20, 0.85),
            SetPlan("bicep_curl", 12, 1.8),
            SetPlan("lunge", 10, 2.2),
            SetPlan("squat", 10, 2.4, pause_after=5),
            SetPlan("jumping_jack", 15, 0.7),
            SetPlan("bicep_curl", 10, 2.0),
        ),
        seed=seed,
        size=size,
        fps=fps,
        rests=("still", "shift", "walk_out", "shake", "fidget", "still", "shift", "still"),
        rest_seconds=(6.0, 10.0),
        camera=Camera(yaw=25.0, drift=0.02, shake=0.002),
        scene=Scene(tv=True, other="walker_behind"),
        preset="veryfast",
    )
    return write_clip(path, spec, "long_workout")
