"""The highlight reel: a second, seek-based pass with PyAV over just the highlight windows,
encoded H.264/yuv420p with faststart so browsers play it (OpenCV's wheels cannot encode H.264)."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

from analysis.errors import VideoDecodeError
from analysis.options import AnalysisOptions
from analysis.video import stop_if_cancelled

REEL_NAME = "highlight_reel.mp4"


def _even(value: float) -> int:
    return max(2, int(value) // 2 * 2)


def write_reel(
    path: str | os.PathLike,
    windows: list[tuple[float, float]],
    target: Path,
    options: AnalysisOptions,
    cancel_event: threading.Event | None,
    progress: Callable[[float], None],
) -> None:
    """Cut the windows (in time order) out of the video into an H.264 MP4 browsers can play."""
    import av  # imported here: only reels need it, and it is a heavy import

    try:
        source = av.open(str(path))
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"the video cannot be reopened for the reel: {exc}") from exc
    try:
        stream = source.streams.video[0]
        stream.thread_type = "AUTO"
        width, height = stream.codec_context.width, stream.codec_context.height
        scale = min(1.0, options.reel_max_height / max(1, min(width, height)))
        out_w, out_h = _even(width * scale), _even(height * scale)
        rate = stream.average_rate or stream.guessed_rate or Fraction(30)
        rate = Fraction(rate).limit_denominator(1001)
        with av.open(str(target), mode="w", options={"movflags": "+faststart"}) as sink:
            encoder = sink.add_stream("libx264", rate=rate)
            encoder.width, encoder.height, encoder.pix_fmt = out_w, out_h, "yuv420p"
            encoder.options = {"preset": "veryfast", "crf": "23"}
            pts = 0
            total = sum(end - start for start, end in windows) or 1.0
            done = 0.0
            for start, end in sorted(windows):
                seek_to = int(start / stream.time_base) if stream.time_base else 0
                source.seek(max(0, seek_to), stream=stream, backward=True)
                for frame in source.decode(stream):
                    stop_if_cancelled(cancel_event)
                    t = frame.time
                    if t is None or t < start - 1e-3:
                        continue
                    if t >= end:
                        break
                    image = frame.reformat(width=out_w, height=out_h, format="yuv420p")
                    image.pts = pts
                    image.time_base = Fraction(1) / rate
                    pts += 1
                    for packet in encoder.encode(image):
                        sink.mux(packet)
                    progress(min(1.0, (done + t - start) / total))
                done += end - start
            for packet in encoder.encode():
                sink.mux(packet)
    except av.FFmpegError as exc:
        raise VideoDecodeError(f"writing the highlight reel failed: {exc}") from exc
    finally:
        source.close()
