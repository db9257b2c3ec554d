"""Tests of opening, probing and reading videos (analysis/video.py)."""

from __future__ import annotations

from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from analysis.errors import InvalidVideo, VideoDecodeError
from analysis.video import check_not_cut_short, open_video, probe_video
from tests.synthetic import make_video


@pytest.mark.parametrize(
    ("declared", "reached", "cut_short"),
    [
        (8.0, 4.0, True),
        (3.0, 0.5, True),
        (8.0, 7.9, False),
        (7.87, 8.0, False),
        (60.0, 55.0, False),
        (2.5, 1.0, False),
        (0.0, 3.0, False),
    ],
)
def test_only_a_video_far_short_of_its_declared_length_counts_as_cut_short(
    declared: float, reached: float, cut_short: bool
) -> None:
    if cut_short:
        with pytest.raises(VideoDecodeError, match="truncated or corrupt"):
            check_not_cut_short(declared, reached)
    else:
        check_not_cut_short(declared, reached)


def test_probe_describes_a_real_video(tmp_path: Path) -> None:
    path = make_video(tmp_path / "clip.mp4", seconds=2.0, fps=25.0, size=(320, 240))
    info = probe_video(path)
    assert (info.width, info.height, info.fps) == (320, 240, 25.0)
    assert info.frame_count == 50 and info.duration == 2.0


def test_probe_refuses_bytes_that_are_not_a_video(tmp_path: Path) -> None:
    path = tmp_path / "fake.mp4"
    path.write_bytes(b"this is not a video" * 100)
    with pytest.raises(InvalidVideo):
        probe_video(path)


def _h264(path: Path, seconds: float = 2.0, rotation: int = 0, size=(320, 240)) -> Path:
    """An H.264 clip of a block moving right, with a display rotation (degrees) if given."""
    frames = []
    for i in range(round(seconds * 25)):
        frame = np.full((size[1], size[0], 3), 60, np.uint8)
        frame[: size[1] // 4] = (200, 80, 40)  # a blue band marks the top of the picture
        x = 10 + 8 * i % (size[0] - 40)
        cv2.rectangle(frame, (x, size[1] // 2), (x + 30, size[1] // 2 + 30), (250, 250, 250), -1)
        frames.append(frame)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _all_frames(path: Path, backend: str) -> list[np.ndarray]:
    with open_video(path, backend) as stream:
        frames = [stream.first_frame]
        while stream.grab():
            frames.append(stream.retrieve())
    return frames


@pytest.mark.parametrize("rotation", [0, 90, 180, 270])
def test_both_backends_decode_the_same_upright_frames(tmp_path: Path, rotation: int) -> None:
    path = _h264(tmp_path / "clip.mp4", rotation=rotation)
    pyav, opencv = _all_frames(path, "pyav"), _all_frames(path, "opencv")
    assert len(pyav) == len(opencv) == 50
    assert pyav[0].shape == opencv[0].shape
    # Skipping the deblocking filter changes pixels a little, never the picture.
    difference = np.mean(
        [np.abs(a.astype(int) - b.astype(int)).mean() for a, b in zip(pyav, opencv, strict=True)]
    )
    assert difference < 3.0
    # The band written at the top is shown where the display rotation turns it (counter-
    # clockwise, as players and OpenCV show it): left for 90, bottom for 180, right for 270.
    frame = pyav[0]
    height, width = frame.shape[:2]
    edges = {
        "top": frame[: height // 8],
        "left": frame[:, : width // 8],
        "bottom": frame[-height // 8 :],
        "right": frame[:, -width // 8 :],
    }
    blue = {name: float(part[..., 0].mean() - part[..., 2].mean()) for name, part in edges.items()}
    expected = {0: "top", 90: "left", 180: "bottom", 270: "right"}[rotation]
    assert max(blue, key=lambda name: blue[name]) == expected


def test_pyav_scales_large_frames_down_and_reports_the_real_size(tmp_path: Path) -> None:
    path = _h264(tmp_path / "big.mp4", seconds=0.4, size=(2560, 1440))
    with open_video(path, "pyav") as stream:
        assert (stream.width, stream.height) == (2560, 1440)
        assert stream.first_frame.shape[:2] == (720, 1280)
    assert (probe_video(path).width, probe_video(path).height) == (2560, 1440)
