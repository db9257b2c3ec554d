"""Dev check: `analysis.pose` against mediapipe 0.10.21's own BlazePose on the same frames.

Not part of the project (mediapipe pins numpy<2 and installs a second OpenCV), so mediapipe runs
in another Python environment, given by path, fed the very frames this environment decodes (two
OpenCV builds decode H.264 to slightly different pixels):

    python -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.21
    python -m bench.pose_vs_mediapipe --mediapipe-python /tmp/mpvenv/bin/python [--model lite]

MediaPipe's legacy `mp.solutions.pose` runs in tracking mode without landmark smoothing. Ours
runs twice: with the identity guard switched off (the graph alone, which should agree to a
pixel or two once tracking has settled) and as shipped. For `--model lite`, mediapipe needs the
lite model in its package (it would download it): copy `models/pose_landmark_lite.tflite` there.
"""

from __future__ import annotations

import argparse
import subprocess
import tempfile
from pathlib import Path

import cv2
import numpy as np

from analysis import models
from analysis.pose import FollowSettings, PoseEstimator

# Runs in the mediapipe environment: raw BGR frames on stdin, landmarks (pixels) to an .npz.
_MEDIAPIPE_SIDE = """
import sys, numpy as np, mediapipe as mp
w, h, complexity, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
pose = mp.solutions.pose.Pose(static_image_mode=False, model_complexity=complexity,
                              smooth_landmarks=False, enable_segmentation=False)
found = {}
i = 0
while True:
    data = sys.stdin.buffer.read(w * h * 3)
    if len(data) < w * h * 3:
        break
    rgb = np.frombuffer(data, np.uint8).reshape(h, w, 3)[:, :, ::-1].copy()
    result = pose.process(rgb)
    if result.pose_landmarks:
        found[f"f{i}"] = np.array([[p.x * w, p.y * h] for p in result.pose_landmarks.landmark])
    i += 1
np.savez(out, **found)
"""

GROUPS = {
    "face (0-10)": range(0, 11),
    "arms (11-22)": range(11, 23),
    "hips, knees (23-26)": range(23, 27),
    "ankles, feet (27-32)": range(27, 33),
}
UNGUARDED = FollowSettings(
    max_shift=1e9,
    max_scale_change=1e9,
    max_colour_change=2.0,
    refuse_shift=1e9,
    refuse_scale_change=1e9,
    refuse_colour=2.0,
    max_probes=1,
)


def compare(mp: dict[int, np.ndarray], ours: dict[int, np.ndarray], title: str) -> None:
    common = sorted(set(mp) & set(ours))
    distance = {i: np.hypot(*(mp[i] - ours[i]).T) for i in common}
    same = [i for i in common if np.median(distance[i]) <= 50]  # the same body followed
    print(f"\n{title}: poses in {len(mp)} (mediapipe) / {len(ours)} (ours) frames,", end=" ")
    print(f"the same body in {len(same)}")
    print("| frames | n | " + " | ".join(f"{g} mean / p95" for g in GROUPS) + " |")
    print("|---|---|" + "---|" * len(GROUPS))
    for label, frames in (
        ("all, same body", same),
        ("20-150 (settled)", [i for i in same if 20 <= i <= 150]),
    ):
        d = np.array([distance[i] for i in frames])
        cells = " | ".join(
            f"{d[:, list(r)].mean():.1f} / {np.percentile(d[:, list(r)], 95):.1f} px"
            for r in GROUPS.values()
        )
        print(f"| {label} | {len(frames)} | {cells} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mediapipe-python", required=True, type=Path)
    parser.add_argument("--model", choices=("full", "lite"), default="full")
    args = parser.parse_args()
    clip = models.footage_dir() / "demo.mp4"
    capture = cv2.VideoCapture(str(clip))
    w, h = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)), int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
    estimators = {
        "graph only": PoseEstimator(model=args.model, follow=UNGUARDED),
        "as shipped": PoseEstimator(model=args.model),
    }
    ours: dict[str, dict[int, np.ndarray]] = {name: {} for name in estimators}
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch) / "mediapipe.npz"
        complexity = "1" if args.model == "full" else "0"
        command = [str(args.mediapipe_python), "-c", _MEDIAPIPE_SIDE, str(w), str(h), complexity]
        child = subprocess.Popen([*command, str(out)], stdin=subprocess.PIPE)
        assert child.stdin is not None
        try:
            i = 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                child.stdin.write(frame.tobytes())
                for name, estimator in estimators.items():
                    observation = estimator.process(frame, i / 30)
                    if observation is not None:
                        ours[name][i] = observation.landmarks[:, :2]
                i += 1
        finally:
            capture.release()
            child.stdin.close()
        if child.wait() != 0:
            raise SystemExit("mediapipe's side failed (see above)")
        with np.load(out) as found:
            mp = {int(key[1:]): found[key] for key in found.files}
    for name, landmarks in ours.items():
        compare(mp, landmarks, f"{args.model}, {name}")


if __name__ == "__main__":
    main()
