"""Synthetic video clips written with OpenCV, for tests and benchmarks.

Everything here writes real files that the service decodes exactly as it would a user's upload;
nothing is mocked.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def make_video(
    path: Path,
    seconds: float = 2.0,
    fps: float = 30.0,
    size: tuple[int, int] = (320, 240),
    motion: str = "periodic",
    period: float = 1.0,
    fourcc: str = "mp4v",
) -> Path:
    """Write a small clip of a bright block on a textured background.

    Args:
        path: file to write (its suffix picks the container; `.mp4` or `.avi`).
        seconds: length of the clip.
        fps: frame rate.
        size: (width, height) in pixels.
        motion: "periodic" (the block bobs up and down with `period` seconds), "still" (nothing
            moves) or "random" (the block jumps around).
        period: seconds per up-and-down cycle for "periodic".
        fourcc: OpenCV codec tag.

    Returns:
        `path`, once the file is closed.
    """
    width, height = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (width, height))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with {fourcc}")
    rng = np.random.default_rng(0)
    background = rng.integers(40, 90, size=(height, width, 3), dtype=np.uint8)
    block = max(8, min(width, height) // 5)
    try:
        for i in range(max(1, round(seconds * fps))):
            frame = background.copy()
            t = i / fps
            if motion == "periodic":
                x = width // 2 - block // 2
                y = int((height - block) * (0.5 + 0.4 * np.sin(2 * np.pi * t / period)))
            elif motion == "random":
                x = int(rng.integers(0, width - block))
                y = int(rng.integers(0, height - block))
            else:
                x, y = width // 2 - block // 2, height // 2 - block // 2
            cv2.rectangle(frame, (x, y), (x + block, y + block), (230, 230, 230), -1)
            writer.write(frame)
    finally:
        writer.release()
    return path
