"""Tests of opening, probing and reading videos (analysis/video.py)."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from analysis.errors import InvalidVideo, VideoDecodeError
from analysis.video import SampledFrames, check_not_cut_short, open_video, probe_video
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


def _h264(
    path: Path,
    seconds: float = 2.0,
    rotation: int = 0,
    size=(320, 240),
    fps: int = 25,
    times_ms: list[int] | None = None,
) -> Path:
    """An H.264 clip (libx264's default settings: B-frames, some of them referred to by no other
    frame) of a block moving right, with a display rotation (degrees) if given; with `times_ms`,
    one frame at each of these times (a variable frame rate)."""
    frames = []
    count = len(times_ms) if times_ms is not None else round(seconds * fps)
    for i in range(count):
        frame = np.full((size[1], size[0], 3), 60, np.uint8)
        frame[: size[1] // 4] = (200, 80, 40)  # a blue band marks the top of the picture
        x = 10 + 8 * i % (size[0] - 40)
        cv2.rectangle(frame, (x, size[1] // 2), (x + 30, size[1] // 2 + 30), (250, 250, 250), -1)
        frames.append(frame)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = size[0], size[1], "yuv420p"
        if times_ms is not None:
            stream.codec_context.time_base = Fraction(1, 1000)
        if rotation:
            stream.set_display_rotation(rotation)
        for i, frame in enumerate(frames):
            picture = av.VideoFrame.from_ndarray(frame, format="bgr24")
            if times_ms is not None:
                picture.pts, picture.time_base = times_ms[i], Fraction(1, 1000)
            for packet in stream.encode(picture):
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


def _samples(path: Path, step: float, leave: bool) -> tuple[list, int, int]:
    """What SampledFrames hands over (index, position, frame), the frames it counts, and how many
    of them were left undecoded."""
    with open_video(path, "pyav") as stream:
        sampled = SampledFrames(stream, step, leave_undecoded=leave)
        items = [(index, position, frame) for index, frame, position in sampled]
        return items, sampled.frames, stream.skipped


def _same_samples(a: list, b: list) -> bool:
    return len(a) == len(b) and all(
        i == j and p == q and np.array_equal(f, g)
        for (i, p, f), (j, q, g) in zip(a, b, strict=True)
    )


@pytest.mark.parametrize(("fps", "step"), [(25, 0.1), (30, 0.1), (24, 0.1), (60, 1 / 30)])
def test_frames_nothing_refers_to_are_left_undecoded_and_the_samples_stay_the_same(
    tmp_path: Path, fps: int, step: float
) -> None:
    path = _h264(tmp_path / "clip.mp4", seconds=4.0, fps=fps)
    decoded, frames, none_left = _samples(path, step, leave=False)
    left, same_frames, skipped = _samples(path, step, leave=True)
    assert none_left == 0 and frames == same_frames == 4 * fps
    assert _same_samples(decoded, left)
    # libx264 leaves about a third of the frames unreferenced here; most are not sampled.
    assert skipped >= 0.15 * frames, skipped


@pytest.mark.parametrize(
    "times",
    [
        # Frames 33, 50 and 17 ms apart in turn.
        [sum(([33, 50, 17] * 40)[:i]) for i in range(120)],
        # 30 fps with a quarter of a second missing after two seconds (a phone dropping frames):
        # a frame's index cannot be read off its timestamp.
        [round(i * 1000 / 30) + (250 if i >= 60 else 0) for i in range(120)],
    ],
    ids=["uneven", "gap"],
)
def test_a_variable_frame_rate_keeps_its_samples_too(tmp_path: Path, times: list[int]) -> None:
    path = _h264(tmp_path / "vfr.mp4", fps=30, times_ms=times)
    decoded, frames, _ = _samples(path, 0.1, leave=False)
    left, same_frames, _ = _samples(path, 0.1, leave=True)
    assert frames == same_frames == len(times)
    assert _same_samples(decoded, left)


def test_pyav_scales_large_frames_down_and_reports_the_real_size(tmp_path: Path) -> None:
    path = _h264(tmp_path / "big.mp4", seconds=0.4, size=(2560, 1440))
    with open_video(path, "pyav") as stream:
        assert (stream.width, stream.height) == (2560, 1440)
        assert stream.first_frame.shape[:2] == (720, 1280)
    assert (probe_video(path).width, probe_video(path).height) == (2560, 1440)
