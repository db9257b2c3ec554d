"""Reading videos: opening and probing a file, and one forward pass that hands over sampled frames.

`VideoStream` is the interface the rest of the engine reads frames through (as PySceneDetect keeps
its backends behind one stream); `OpenCVStream` is its backend. `SampledFrames` runs the decoding
in a second thread and hands over only the frames the analysis samples: decoding is the floor of
the analysis time, and OpenCV lets go of the GIL while it decodes, so the next frames decode while
the previous sample is analysed.

Real files lie about themselves: frame counts are wrong or 0, rates absurd, tails corrupt. Nothing
here trusts the container for loops; its declared length is used only to estimate progress and to
tell a file that stops early from one that lies (`check_not_cut_short`).
"""

from __future__ import annotations

import logging
import math
import os
import queue
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from analysis.errors import AnalysisCancelled, InvalidVideo, VideoDecodeError, VideoTooLong
from analysis.results import VideoInfo

logger = logging.getLogger(__name__)

_QUEUE_POLL_S = 0.1
# Sampled frames the decoding thread may run ahead of the analysis. They are full-size (25 MB
# each at 4K), and analysis outpaces decoding, so the queue is nearly always empty: 3 keeps the
# overlap (measured: the same speed as 8) and bounds the worst case when the CPU is contended.
_DECODE_AHEAD = 3


class VideoStream(Protocol):
    """A video opened for one forward pass; `first_frame` is already decoded."""

    fps: float
    declared_frames: int
    first_frame: np.ndarray

    def grab(self) -> bool:
        """Decode the next frame without converting it; False at the end."""

    def retrieve(self) -> np.ndarray:
        """The last grabbed frame as a BGR image."""

    def position(self) -> float:
        """Presentation time of the last decoded frame, in seconds."""

    def close(self) -> None:
        """Release the decoder."""


class OpenCVStream:
    """`VideoStream` on OpenCV's FFmpeg backend (rotation metadata is applied).

    Raises:
        InvalidVideo: the file does not exist, cannot be opened, or its first frame does not
            decode.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        if not Path(path).is_file():
            raise InvalidVideo("video file does not exist")
        self._capture = cv2.VideoCapture(str(path))
        if not self._capture.isOpened():
            self._capture.release()
            raise InvalidVideo("the file is not a video OpenCV can open")
        try:
            try:
                ok, frame = self._capture.read()
            except cv2.error as exc:
                raise InvalidVideo("the first frame could not be decoded") from exc
            if not ok or frame is None or frame.size == 0:
                raise InvalidVideo("no frame could be decoded from the file")
        except BaseException:
            self._capture.release()
            raise
        self.first_frame: np.ndarray = frame
        self.fps = _sane_fps(self._capture.get(cv2.CAP_PROP_FPS))
        count = self._capture.get(cv2.CAP_PROP_FRAME_COUNT)
        self.declared_frames = int(count) if math.isfinite(count) and count > 0 else 0

    @property
    def declared_duration(self) -> float:
        """What the container says the length is (s); 0 when it does not know."""
        return self.declared_frames / self.fps

    def grab(self) -> bool:
        return bool(self._capture.grab())

    def retrieve(self) -> np.ndarray:
        ok, frame = self._capture.retrieve()
        if not ok or frame is None:
            raise VideoDecodeError("a frame could not be read")
        return frame

    def position(self) -> float:
        return float(self._capture.get(cv2.CAP_PROP_POS_MSEC)) / 1000.0

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> OpenCVStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def open_video(path: str | os.PathLike[str]) -> OpenCVStream:
    """Open a video for one pass; the caller closes it (it is a context manager)."""
    return OpenCVStream(path)


def _sane_fps(fps: float) -> float:
    # A missing or absurd rate would wreck every timestamp; 30 is the commonest real rate.
    if not math.isfinite(fps) or not 1.0 <= fps <= 1000.0:
        logger.warning("container reports fps=%s; assuming 30", fps)
        return 30.0
    return float(fps)


def probe_video(path: str | os.PathLike[str]) -> VideoInfo:
    """Check that a file is a decodable video and describe it.

    Args:
        path: the video file.

    Returns:
        Duration, frame rate, size of a decoded frame and the container's frame count (which may be
        wrong or 0; the analysis never relies on it).

    Raises:
        InvalidVideo: the file cannot be opened or its first frame cannot be decoded.
    """
    with open_video(path) as stream:
        height, width = stream.first_frame.shape[:2]
        count = stream.declared_frames
        return VideoInfo(
            round(count / stream.fps, 2), round(stream.fps, 3), int(width), int(height), count
        )


def check_not_cut_short(declared: float, reached: float) -> None:
    """Raise VideoDecodeError when decoding stopped well before the container's duration.

    A file with a corrupt or missing tail opens, decodes its first frames at upload, and then
    the decoder gives up part-way: an analysis of the part that decoded would be presented as
    the whole video. Containers do misstate their length a little (and raw streams know
    nothing, `declared` 0), hence the margins: it must fall short by 10 % and by 2 s.
    """
    if declared > 0 and reached < declared * 0.9 and declared - reached >= 2.0:
        raise VideoDecodeError(
            f"the video stops at {reached:.1f} s of the {declared:.1f} s its container declares: "
            "the file is truncated or corrupt"
        )


def stop_if_cancelled(cancel_event: threading.Event | None) -> None:
    """Raise AnalysisCancelled once the caller has set `cancel_event`."""
    if cancel_event is not None and cancel_event.is_set():
        raise AnalysisCancelled("analysis cancelled")


class SampledFrames:
    """One pass over a stream, decoded in a second thread, handing over every `step` seconds.

    Iterating yields `(index, frame, reached)`: the frame's index, the BGR frame and the furthest
    presentation time decoded so far (s). Iteration ends at the end of the video; a decoding
    error is raised in the iterating thread. Afterwards `frames` is the number of frames decoded.
    The decoding thread has ended when iteration ends, raises or the iterator is closed.

    Args:
        stream: the opened video (its first frame is decoded already).
        step: seconds between sampled frames.
        cancel_event: stops the decoding thread early too.
        max_seconds: raise VideoTooLong once decoding passes this length (None: no limit).
    """

    def __init__(
        self,
        stream: VideoStream,
        step: float,
        cancel_event: threading.Event | None = None,
        max_seconds: float | None = None,
    ) -> None:
        self._stream = stream
        self._step = step
        self._cancel = cancel_event
        self._max_seconds = max_seconds
        self._samples: queue.Queue[tuple[int, np.ndarray | None, object]] = queue.Queue(
            maxsize=_DECODE_AHEAD
        )
        self._stop = threading.Event()
        self.frames = 0

    def __iter__(self) -> Iterator[tuple[int, np.ndarray, float]]:
        decoder = threading.Thread(target=self._decode, name="video-decode", daemon=True)
        decoder.start()
        try:
            while True:
                index, frame, extra = self._samples.get()
                if frame is None:
                    self.frames = index
                    if isinstance(extra, BaseException):
                        raise extra
                    return
                assert isinstance(extra, float)
                yield index, frame, extra
        finally:
            self._stop.set()
            decoder.join()

    def _hand_over(self, item: tuple[int, np.ndarray | None, object]) -> bool:
        """Put `item` on the queue unless the pass is stopped first; whether it was put."""
        while not self._stop.is_set():
            try:
                self._samples.put(item, timeout=_QUEUE_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def _decode(self) -> None:
        """The decoding thread: every frame is decoded, the sampled ones are converted and handed
        over in order, then `(frames decoded, None, the error that stopped it or None)`."""
        stream, step = self._stream, self._step
        next_sample = 0.0
        index = 0
        frame: np.ndarray | None = stream.first_frame
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                if self._cancel is not None and self._cancel.is_set():
                    break
                seconds = index / stream.fps
                if self._max_seconds is not None and seconds > self._max_seconds:
                    raise VideoTooLong(
                        f"the video is longer than the {self._max_seconds / 60:g} minutes accepted"
                    )
                if frame is None:
                    try:
                        if not stream.grab():
                            break
                        if seconds + 1e-6 >= next_sample:
                            frame = stream.retrieve()
                    except VideoDecodeError as exc:
                        raise VideoDecodeError(
                            f"the frame at {seconds:.2f} s could not be read"
                        ) from exc
                    except cv2.error as exc:
                        raise VideoDecodeError(
                            f"decoding failed at {seconds:.2f} s: {exc}"
                        ) from exc
                if frame is not None:
                    next_sample = max(next_sample + step, seconds + step / 2)
                    if not self._hand_over((index, frame, stream.position())):
                        return
                    frame = None
                index += 1
        except BaseException as exc:  # handed to the iterating thread, which raises it
            error = exc
        self._hand_over((index, None, error))
