"""Tests of opening, probing and reading videos (analysis/video.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.errors import InvalidVideo, VideoDecodeError
from analysis.video import check_not_cut_short, probe_video
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
