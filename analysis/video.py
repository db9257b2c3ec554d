"""Reading videos: opening and probing a file, and one forward pass that hands over sampled frames.

`VideoStream` is the interface the rest of the engine reads frames through (as PySceneDetect keeps
its backends behind one stream), with two backends: `PyAVStream` (the default) and `OpenCVStream`.
Both decode with FFmpeg and apply rotation metadata; PyAV also lets the decoder skip H.264's
deblocking filter, a quarter of its decoding time, invisible in frames shrunk for analysis, and
scales large frames down in the same step that converts them.

`SampledFrames` runs the decoding in a second thread and hands over only the frames the analysis
samples: decoding is the floor of the analysis time, and both libraries let go of the GIL while
they decode, so the next frames decode while the previous sample is analysed. With PyAV, H.264
frames that nothing refers to (a B-frame no other frame is predicted from) and that are not
sampled are not decoded at all: in a file with B-frames that is a third of the frames, and about
a third of the decoding time, with the very same samples handed over.

Real files lie about themselves: frame counts are wrong or 0, rates absurd, tails corrupt. Nothing
here trusts the container for loops; its declared length is used only to estimate progress and to
tell a file that stops early from one that lies (`check_not_cut_short`).
"""

from __future__ import annotations

import heapq
import logging
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Protocol

import av
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


MAX_FRAME_SIDE = 1280
"""Frames with a longer side are scaled down to it for analysis: the motion analysis works at
256 px and the pose estimator on a 256 px crop, so 4K costs what 720p does."""


class VideoStream(Protocol):
    """A video opened for one forward pass; `first_frame` is already decoded.

    Frames are BGR, rotated upright, and at most MAX_FRAME_SIDE on their longer side (PyAV);
    `width` and `height` are the video's own (rotated) size."""

    fps: float
    declared_frames: int
    first_frame: np.ndarray
    width: int
    height: int

    @property
    def declared_duration(self) -> float:
        """What the container says the length is (s); 0 when it does not know."""

    def grab(self) -> bool:
        """Decode the next frame without converting it; False at the end."""

    def retrieve(self) -> np.ndarray:
        """The last grabbed frame as a BGR image."""

    def position(self) -> float:
        """Presentation time of the last decoded frame, in seconds."""

    @property
    def skipped(self) -> int:
        """Frames before the last grabbed one (all of them at the end) left undecoded."""

    def leave_undecoded(self, wanted: Callable[[int], bool]) -> None:
        """From now on, a frame whose index (from 0, in display order) `wanted` refuses may be
        left undecoded where no other frame is predicted from it; `grab` then moves past it."""

    def close(self) -> None:
        """Release the decoder."""

    def __enter__(self) -> VideoStream: ...

    def __exit__(self, *exc: object) -> None: ...


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
        self.height, self.width = frame.shape[:2]
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

    @property
    def skipped(self) -> int:
        return 0

    def leave_undecoded(self, wanted: Callable[[int], bool]) -> None:
        pass  # OpenCV decodes every frame

    def close(self) -> None:
        self._capture.release()

    def __enter__(self) -> OpenCVStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class PyAVStream:
    """`VideoStream` on PyAV (FFmpeg): deblocking skipped, frame threads, rotation applied.

    Raises:
        InvalidVideo: the file does not exist, cannot be opened, has no video stream, or its
            first frame does not decode.
    """

    def __init__(self, path: str | os.PathLike[str], max_side: int = MAX_FRAME_SIDE) -> None:
        if not Path(path).is_file():
            raise InvalidVideo("video file does not exist")
        try:
            self._container = av.open(str(path))
        except (av.FFmpegError, UnicodeDecodeError, ValueError) as exc:
            raise InvalidVideo("the file is not a video FFmpeg can open") from exc
        try:
            if not self._container.streams.video:
                raise InvalidVideo("the file has no video stream")
            stream = self._container.streams.video[0]
            stream.thread_type = "AUTO"
            # The deblocking filter smooths block edges for the eye; at 256 px nothing of it
            # survives, and H.264 spends about a quarter of its decoding time there.
            stream.codec_context.options = {"skip_loop_filter": "all"}
            self._wanted: Callable[[int], bool] | None = None
            self._length_size = _avcc_length_size(stream)
            self._left: list[int] = []  # pts of frames left undecoded, not yet counted
            self._skipped = 0
            self._output = 0  # frames decoded and grabbed, the first one included
            self._frames = self._decoded(stream)
            self._frame = self._next()
            if self._frame is None:
                raise InvalidVideo("no frame could be decoded from the file")
            self._output = 1
            self._start_pts = self._frame.pts
            self._time_base = stream.time_base
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            self.fps = _sane_fps(float(rate) if rate else float("nan"))
            nominal = stream.base_rate
            self._constant_rate = bool(
                rate and nominal and abs(float(rate) / float(nominal) - 1.0) < 1e-3
            )
            self._rotation = int(round(self._frame.rotation or 0)) % 360
            width, height = self._frame.width, self._frame.height
            if self._rotation in (90, 270):
                width, height = height, width
            self.width, self.height = width, height
            scale = min(1.0, max_side / max(width, height))
            self._size = (
                max(2, round(self._frame.width * scale)),
                max(2, round(self._frame.height * scale)),
            )
            self.declared_frames = _declared_frames(self._container, stream, self.fps)
            self.first_frame = self.retrieve()
        except BaseException:
            self._container.close()
            raise

    @property
    def declared_duration(self) -> float:
        return self.declared_frames / self.fps

    def _decoded(self, stream: av.video.stream.VideoStream) -> Iterator[av.VideoFrame]:
        """Every frame in display order, as `container.decode` gives them, except those
        `_leave` leaves undecoded."""
        for packet in self._container.demux(stream):
            wanted = self._wanted
            if wanted is not None and self._leave(packet, wanted):
                continue
            yield from packet.decode()

    def _index_of(self, pts: int) -> float:
        """A frame's index from its timestamp (a constant-rate count from the first frame)."""
        assert self._start_pts is not None and self._time_base is not None
        return float((pts - self._start_pts) * self._time_base) * self.fps

    def _last_index(self) -> int:
        """The index of the last frame grabbed: those decoded before it and those left."""
        return self._output - 1 + self._skipped

    def _leave(self, packet: av.Packet, wanted: Callable[[int], bool]) -> bool:
        """Whether to leave this packet undecoded: a frame of the future that is not `wanted`
        and that no other frame refers to (every slice of it has nal_ref_idc 0)."""
        # `leave_undecoded` gave `wanted` only once the first timestamp and time base were known.
        if self._length_size is None or packet.pts is None or packet.is_keyframe or not packet.size:
            return False
        place = self._index_of(packet.pts)
        index = round(place)
        if (
            abs(place - index) > 0.05  # off the constant-rate grid: not a frame to guess at
            or index <= self._last_index()
            or wanted(index)
        ):
            return False
        if not _unreferenced(bytes(packet), self._length_size):
            return False
        heapq.heappush(self._left, packet.pts)
        return True

    def leave_undecoded(self, wanted: Callable[[int], bool]) -> None:
        # Only where the frame rate is constant: a frame's index is then told by its timestamp
        # before it is decoded, which is when it must be decided.
        if (
            self._length_size is not None
            and self._start_pts is not None
            and self._time_base is not None
            and self._constant_rate
        ):
            self._wanted = wanted

    @property
    def skipped(self) -> int:
        return self._skipped

    def _count_left(self) -> None:
        """Count the frames left undecoded before the frame just grabbed (all at the end), and
        stop leaving any if the count and the timestamps ever disagree (a variable frame rate:
        the index of a frame could then not be told from its timestamp)."""
        frame = self._frame
        if frame is None:
            self._skipped += len(self._left)
            self._left.clear()
            return
        if frame.pts is None:
            self._wanted = None  # those left are counted by later frames, or at the end
            return
        while self._left and self._left[0] < frame.pts:
            heapq.heappop(self._left)
            self._skipped += 1
        if self._wanted is not None and round(self._index_of(frame.pts)) != self._last_index():
            logger.debug("frame timestamps are irregular: every frame is decoded from here")
            self._wanted = None

    def _next(self) -> av.VideoFrame | None:
        try:
            return next(self._frames)
        except StopIteration:
            return None
        except av.FFmpegError as exc:
            # A damaged packet ends the readable part, as it does for OpenCV; whether that is
            # well short of the declared length is `check_not_cut_short`'s to say.
            logger.info("decoding stopped: %s", exc)
            return None

    def grab(self) -> bool:
        self._frame = self._next()
        if self._frame is not None:
            self._output += 1
        self._count_left()
        return self._frame is not None

    def retrieve(self) -> np.ndarray:
        if self._frame is None:
            raise VideoDecodeError("a frame could not be read")
        width, height = self._size
        image: np.ndarray
        if (width, height) == (self._frame.width, self._frame.height):
            image = self._frame.to_ndarray(format="bgr24")
        else:
            image = self._frame.reformat(width=width, height=height, format="bgr24").to_ndarray()
        if self._rotation in _ROTATIONS:
            image = cv2.rotate(image, _ROTATIONS[self._rotation])
        return image

    def position(self) -> float:
        return float(self._frame.time or 0.0) if self._frame is not None else 0.0

    def close(self) -> None:
        self._container.close()

    def __enter__(self) -> PyAVStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# Display rotation (degrees counter-clockwise, as PyAV reports it) -> the turn that makes the
# picture upright, as OpenCV applies it.
_ROTATIONS = {
    90: cv2.ROTATE_90_COUNTERCLOCKWISE,
    180: cv2.ROTATE_180,
    270: cv2.ROTATE_90_CLOCKWISE,
}


def _avcc_length_size(stream: av.video.stream.VideoStream) -> int | None:
    """The size of the NAL length prefixes of an H.264 stream stored as in MP4 (avcC), or None
    for any other codec or form (whose frames are then all decoded)."""
    try:
        name = stream.codec_context.name
        extradata = bytes(stream.codec_context.extradata or b"")
    except (AttributeError, av.FFmpegError):
        return None
    if name != "h264" or len(extradata) < 7 or extradata[0] != 1:
        return None
    return (extradata[4] & 3) + 1


def _unreferenced(data: bytes, length_size: int) -> bool:
    """Whether an H.264 access unit (avcC form) has slices and no other frame refers to any of
    them (nal_ref_idc 0 in every slice's header). Any doubt (a malformed unit) says no."""
    i, slices = 0, 0
    while i + length_size < len(data):
        size = int.from_bytes(data[i : i + length_size], "big")
        header = data[i + length_size]
        if size <= 0 or i + length_size + size > len(data) or header & 0x80:
            return False
        if 1 <= header & 0x1F <= 5:  # a coded slice
            if header & 0x60:
                return False
            slices += 1
        i += length_size + size
    return slices > 0 and i == len(data)


def _declared_frames(
    container: av.container.InputContainer, stream: av.video.stream.VideoStream, fps: float
) -> int:
    """The frame count the container declares (or its duration times the rate); 0 if none."""
    if stream.frames and stream.frames > 0:
        return int(stream.frames)
    if stream.duration and stream.time_base:
        return max(0, round(float(stream.duration * stream.time_base) * fps))
    if container.duration and container.duration > 0:
        return max(0, round(container.duration / av.time_base * fps))
    return 0


BACKENDS = ("pyav", "opencv")


def open_video(path: str | os.PathLike[str], backend: str = "pyav") -> VideoStream:
    """Open a video for one pass with `backend` ("pyav" or "opencv"); the caller closes it
    (both are context managers).

    Raises:
        InvalidVideo: see the backends.
        ValueError: an unknown backend.
    """
    if backend == "pyav":
        return PyAVStream(path)
    if backend == "opencv":
        return OpenCVStream(path)
    raise ValueError(f"unknown video backend {backend!r}")


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
    stream = open_video(path)
    try:
        count = stream.declared_frames
        return VideoInfo(
            round(count / stream.fps, 2), round(stream.fps, 3), stream.width, stream.height, count
        )
    finally:
        stream.close()


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


class _Sampler:
    """The sampling rule: a frame at `seconds` is taken if it is at or past the next sample's
    time; the one after is a `step` later, or half a step after this frame if that is later (so
    a gap in the video does not make a burst of samples)."""

    def __init__(self, step: float) -> None:
        self._step = step
        self._next = 0.0

    def takes(self, seconds: float) -> bool:
        if seconds + 1e-6 < self._next:
            return False
        self._next = max(self._next + self._step, seconds + self._step / 2)
        return True


class _Schedule:
    """The indices of the frames `SampledFrames` hands over from a video at `fps`, one every
    `step` seconds (the `_Sampler` rule over every index in turn), for the decoder to know at
    demuxing time which frames it may leave undecoded. Remembers a bounded window."""

    def __init__(self, fps: float, step: float) -> None:
        self._fps = fps
        self._sampler = _Sampler(step)
        self._upto = -1  # every index up to here is decided
        self._sampled: set[int] = set()

    def __contains__(self, index: int) -> bool:
        while self._upto < index:
            self._upto += 1
            if self._sampler.takes(self._upto / self._fps):
                self._sampled.add(self._upto)
        if len(self._sampled) > 4096:  # packets arrive at most a few dozen frames out of order
            self._sampled = {i for i in self._sampled if i >= index - 1024}
        return index in self._sampled


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
        leave_undecoded: let the stream leave frames that are neither sampled nor referred to
            undecoded (`VideoStream.leave_undecoded`); the samples are the same either way.
    """

    def __init__(
        self,
        stream: VideoStream,
        step: float,
        cancel_event: threading.Event | None = None,
        max_seconds: float | None = None,
        leave_undecoded: bool = True,
    ) -> None:
        self._stream = stream
        self._step = step
        self._leave_undecoded = leave_undecoded
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
        """The decoding thread: every frame is decoded (or left undecoded when it is neither
        sampled nor referred to), the sampled ones are converted and handed over in order, then
        `(frames in the video, None, the error that stopped it or None)`."""
        stream, step = self._stream, self._step
        if self._leave_undecoded:
            stream.leave_undecoded(_Schedule(stream.fps, step).__contains__)
        sampler = _Sampler(step)
        sampler.takes(0.0)  # the first frame, decoded on opening
        index = 0
        grabbed = 0
        frame: np.ndarray | None = stream.first_frame
        error: BaseException | None = None
        try:
            while not self._stop.is_set():
                if self._cancel is not None and self._cancel.is_set():
                    break
                seconds = index / stream.fps
                if frame is None:
                    try:
                        if not stream.grab():
                            break
                        grabbed += 1
                        index = grabbed + stream.skipped
                        seconds = index / stream.fps
                        if self._max_seconds is not None and seconds > self._max_seconds:
                            raise VideoTooLong(
                                f"the video is longer than the {self._max_seconds / 60:g} "
                                "minutes accepted"
                            )
                        if sampler.takes(seconds):
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
                    if not self._hand_over((index, frame, stream.position())):
                        return
                    frame = None
        except BaseException as exc:  # handed to the iterating thread, which raises it
            error = exc
        index = grabbed + 1 + stream.skipped  # the frames of the video, left ones included
        self._hand_over((index, None, error))
