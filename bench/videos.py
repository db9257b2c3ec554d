"""The benchmark's input videos, generated once with OpenCV (mp4v) and cached in `bench/.cache/`.

Long clips come from the articulated-figure workout generator in `tests/synthetic.py` (shaky
camera, sensor noise, flicker: it decodes like real footage); when that generator is not there, the
plain moving-block clip is used instead. A file is written under a temporary name and renamed when
complete, so an interrupted run never leaves a truncated video in the cache.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

logger = logging.getLogger(__name__)

CACHE = Path(__file__).resolve().parent / ".cache"
SIZE_720P = (1280, 720)
FPS = 30.0
_ROOT = str(Path(__file__).resolve().parent.parent)


def _synthetic():  # type: ignore[no-untyped-def]
    if _ROOT not in sys.path:
        sys.path.insert(0, _ROOT)
    from tests import synthetic

    return synthetic


def _publish(tmp: Path, path: Path) -> Path:
    os.replace(tmp, path)
    return path


def workout_video(minutes: float, size: tuple[int, int] = SIZE_720P) -> Path:
    """A workout clip of about `minutes` minutes at `size` (sets of varied exercises and rests).

    Returns:
        The cached file's path (generated on first use; a 10-minute 720p clip takes ~3 min).
    """
    synthetic = _synthetic()
    CACHE.mkdir(parents=True, exist_ok=True)
    if not hasattr(synthetic, "make_workout_video"):
        path = CACHE / f"block_{minutes:g}min_{size[0]}x{size[1]}.mp4"
        if not path.exists():
            tmp = path.with_suffix(".tmp.mp4")
            synthetic.make_video(tmp, seconds=minutes * 60, fps=FPS, size=size, motion="periodic")
            _publish(tmp, path)
        return path
    path = CACHE / f"workout_{minutes:g}min_{size[0]}x{size[1]}.mp4"
    if path.exists():
        return path
    target = minutes * 60.0
    exercises = synthetic.EXERCISES
    sets, estimate, i = [], 5.5, 0
    # One set of 8-12 reps at 1.5-2.7 s each, then ~5.5 s of rest, until the target length.
    while estimate < target - 5.5:
        reps, period = 8 + i % 5, 1.5 + 0.3 * (i % 5)
        sets.append(synthetic.SetSpec(exercises[i % len(exercises)], reps, period))
        estimate += reps * period + 5.5
        i += 1
    spec = synthetic.WorkoutSpec(sets=tuple(sets), seed=7, size=size, fps=FPS)
    logger.info("generating %s (%d sets)", path.name, len(sets))
    tmp = path.with_suffix(".tmp.mp4")
    synthetic.make_workout_video(tmp, spec)
    return _publish(tmp, path)


def upload_video(megabytes: float = 20.0) -> Path:
    """A valid 720p clip of about `megabytes` MB (the upload-latency payload)."""
    synthetic = _synthetic()
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"upload_{megabytes:g}MB.mp4"
    if path.exists():
        return path
    # The textured block clip costs ~0.94 MB per second of 720p in mp4v.
    tmp = path.with_suffix(".tmp.mp4")
    synthetic.make_video(tmp, seconds=megabytes / 0.94, fps=FPS, size=SIZE_720P)
    return _publish(tmp, path)


def main() -> None:
    """Generate every clip a full run needs (`python -m bench.videos`)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for path in (upload_video(), *(workout_video(m) for m in (1, 5, 10))):
        print(f"{path}  {path.stat().st_size / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
