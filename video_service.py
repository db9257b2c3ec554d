"""Orchestration: an upload becomes a session, a session becomes an analysis in the pool, and
every way a session ends (completed, failed, cancelled, cleaned up, expired) leaves the disk as
it should. A shutdown is not an end: running and queued analyses are handed back, keep their
videos, and the next start resumes them.

It depends on three interfaces, so the same use cases run in one process or across machines:
a `SessionStore` (`session_manager.SessionManager`, or Redis: `session_store.py`), a
`TaskBackend` (`task_manager.BackgroundTaskManager`, or RQ workers: `task_backend.py`) and a
`BlobStore` (the storage folder, or an S3 bucket: `blob_store.py`). Files are named by the server,
never by the client (`<session id>/<name>`); `STORAGE_DIR/server.lock` keeps a second process off
a storage folder that holds the sessions. It owns the domain errors the API maps to HTTP answers
in one place (`async_api.py`), and knows nothing of HTTP itself.

In RQ mode this class is also the worker's side: `analyse_here` runs one analysis in a work
horse, with the same progress, cancel and durability rules as the thread pool.

What a client was told survives a crash: a new session is committed to the database before the
upload answers, a result is committed before the video it came from is deleted, a cancel or a
cleanup is committed before it answers, and a failure is committed as soon as it is recorded.
"""

from __future__ import annotations

import asyncio
import fcntl
import functools
import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import Future
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
from pydantic import ValidationError

from blob_store import BlobNotFound, BlobStore, LocalBlobStore
from config import Settings, StartupRefused
from engine_process import AnalysisCrashed, ProcessEngine
from observability import SessionEvents
from railway_video_generator import (
    AnalysisCancelled,
    AnalysisOptions,
    AnalysisResult,
    InvalidVideo,
    VideoDecodeError,
    probe_video,
)
from schemas import AnalysisData, AnalysisParams, AnalysisType
from session_manager import Session, SessionStatus
from session_store import SessionStore, StoreUnavailable
from task_backend import TaskBackend
from task_manager import BackgroundTaskManager
from uploads import StorageFull, UploadTooLarge, free_bytes, receive_upload

logger = logging.getLogger(__name__)

# How long cancel, cleanup and shutdown wait for a running analysis to notice its stop event.
_STOP_WAIT_SECONDS = 2.0
# How long a change that must be durable waits for its database commit.
_COMMIT_WAIT_SECONDS = 5.0
# A session found `processing` at start-up this many times fails instead of running again: the
# process died while analysing it each time, and a video that kills the process must not keep
# the service in a restart loop.
_MAX_INTERRUPTIONS = 2
_INTERRUPTED_TOO_OFTEN = (
    "The analysis was interrupted twice (the server stopped while analysing this video); "
    "upload it again or contact support"
)
_REQUEUED = "Queued again after a server restart"
_HANDED_BACK = "Queued again after a worker restart"
_WORKER_LOST = "Queued again: the worker analysing it stopped"
_LOCK_NAME = "server.lock"
_UPLOAD_NAME = "upload.part"
# Room for the form's boundaries, headers and small fields beside the file itself.
_FORM_OVERHEAD = 1024 * 1024
# What a 429 suggests: about the time a short clip takes to analyse.
_RETRY_AFTER_SECONDS = 10
# What a 429 for too many bodies at once suggests: uploads come and go faster than analyses.
_UPLOAD_RETRY_AFTER_SECONDS = 5


class ServiceError(Exception):
    """A failure the client caused or must know about; the message is safe to show."""


class SessionNotFound(ServiceError):
    def __init__(self) -> None:
        super().__init__("Session not found")


class SessionNotReady(ServiceError):
    """Results asked for before the analysis completed."""

    def __init__(self, session: Session) -> None:
        message = f"Results are not available: the session is {session.status.value}"
        if session.status == SessionStatus.FAILED and session.error:
            message += f" ({session.error})"
        super().__init__(message)
        self.status = session.status


class SessionFinished(ServiceError):
    """Cancel asked for a session that has already ended."""

    def __init__(self, session: Session) -> None:
        super().__init__(f"Cannot cancel: the session is already {session.status.value}")
        self.status = session.status


class QueueFull(ServiceError):
    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many videos are waiting for analysis; try again later")
        self.retry_after = retry_after


class TooManyUploads(ServiceError):
    """MAX_CONCURRENT_UPLOADS bodies are being received already."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many uploads are in progress; try again shortly")
        self.retry_after = retry_after


class UnsupportedMediaType(ServiceError):
    def __init__(self) -> None:
        super().__init__(
            "Unsupported file type: upload a video (MP4, MOV, M4V, 3GP, WebM, MKV, AVI, MPEG, "
            "FLV, OGG or WMV)"
        )


class InvalidUpload(ServiceError):
    """The form or its video cannot be used (422)."""


class VideoTooLong(InvalidUpload):
    """The container says the video is longer than MAX_VIDEO_MINUTES (422)."""

    def __init__(self, seconds: float, limit_minutes: float) -> None:
        super().__init__(
            f"The video is too long: {seconds / 60:.1f} minutes; the limit is "
            f"{limit_minutes:g} minutes"
        )


class ClientGone(ServiceError):
    """The client of a synchronous analysis went away; nobody reads this answer."""

    def __init__(self) -> None:
        super().__init__("The client went away before the analysis finished")


class ArtifactNotFound(ServiceError):
    def __init__(self) -> None:
        super().__init__("Artifact not found")


class ShuttingDown(ServiceError):
    def __init__(self) -> None:
        super().__init__("The server is shutting down; try again shortly")


class StorageUnavailable(ServiceError):
    """The session database cannot save a new session right now (503)."""

    def __init__(self) -> None:
        super().__init__("The server cannot save new sessions right now; try again shortly")


class StorageInUse(StartupRefused):
    """Another server process holds the storage folder: this one must not start."""


class StorageLock:
    """An exclusive `flock` on `STORAGE_DIR/server.lock`, held for the life of the process.

    Two servers on one folder would each resume the other's sessions and delete each other's
    files. The kernel drops the lock when its process dies, so a crash never leaves it stale.
    """

    def __init__(self, fd: int) -> None:
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, storage: Path) -> StorageLock:
        """Take the lock of `storage` (created if missing) and write our pid into it.

        Raises:
            StorageInUse: another process holds it; the message names its pid.
        """
        storage.mkdir(parents=True, exist_ok=True)
        fd = os.open(storage / _LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise StorageInUse(
                f"STORAGE_DIR {storage} is in use by another server (pid {holder}); "
                "give each server its own STORAGE_DIR"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd)

    def release(self) -> None:
        """Let another process take the folder (closing the file drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def sniff_container(head: bytes) -> str | None:
    """The file extension of the video container these first bytes start, or None.

    The client's file name and content type are not trusted (curl sends every file as
    application/octet-stream); the bytes are.
    """
    if len(head) >= 8 and head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return ".mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return ".mkv"
    if head.startswith(b"RIFF") and head[8:12] in (b"AVI ", b"AVIX"):
        return ".avi"
    if head.startswith((b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")):
        return ".mpg"
    if len(head) > 376 and head[0] == head[188] == head[376] == 0x47:
        # MPEG-TS: a sync byte every 188 bytes ("G" alone would let GIFs and text through).
        return ".ts"
    if head.startswith(b"FLV"):
        return ".flv"
    if head.startswith(b"OggS"):
        return ".ogv"
    if head.startswith(b"\x30\x26\xb2\x75\x8e\x66\xcf\x11"):
        return ".wmv"
    return None


def _check_head(head: bytes) -> None:
    if not head:
        raise InvalidUpload("The uploaded video file is empty")
    if sniff_container(head) is None:
        raise UnsupportedMediaType()


def parse_form(fields: dict[str, str]) -> tuple[AnalysisType, AnalysisParams]:
    """Validate the `analysis_type` and `params` form fields.

    Raises:
        InvalidUpload: an unknown analysis type, params that are not a JSON object, unknown
            keys or out-of-range values.
    """
    raw_type = fields.get("analysis_type", "").strip() or AnalysisType.HIGHLIGHTS.value
    try:
        analysis_type = AnalysisType(raw_type)
    except ValueError:
        allowed = ", ".join(t.value for t in AnalysisType)
        raise InvalidUpload(f"analysis_type must be one of: {allowed}") from None
    raw_params = fields.get("params", "").strip() or "{}"
    try:
        params = json.loads(raw_params)
    except ValueError:
        raise InvalidUpload("params must be a JSON object") from None
    if not isinstance(params, dict):
        raise InvalidUpload("params must be a JSON object")
    try:
        return analysis_type, AnalysisParams.model_validate(params)
    except ValidationError as exc:
        raise InvalidUpload(_describe_validation(exc)) from None


def _describe_validation(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors():
        where = ".".join(str(part) for part in error["loc"])
        if error["type"] == "extra_forbidden":
            problems.append(f"unknown key '{where}'")
        else:
            problems.append(f"'{where}': {error['msg']}")
    allowed = ", ".join(AnalysisParams.model_fields)
    return f"Invalid params: {'; '.join(problems)} (allowed keys: {allowed})"


def build_data(result: AnalysisResult, artifact_url: str | None) -> dict[str, Any]:
    """The wire `data` object of a result; `artifact_url` is the URL folder of the session's
    artifacts (None when they are not kept, as in the synchronous endpoints)."""

    def url(name: str | None) -> str | None:
        return f"{artifact_url}/{name}" if name and artifact_url else None

    data: dict[str, Any] = {
        "analysis_type": result.analysis_type,
        "video": {
            "duration": result.video.duration,
            "fps": result.video.fps,
            "width": result.video.width,
            "height": result.video.height,
            "frame_count": result.video.frame_count,
        },
        "processing_time": round(result.processing_time, 3),
    }
    if result.highlights is not None:
        data["highlights"] = [
            {
                "start": h.start,
                "end": h.end,
                "score": h.score,
                "reason": h.reason,
                "thumbnail_url": url(h.thumbnail),
                "peak_time": h.peak_time,
            }
            for h in result.highlights
        ]
    if result.workout is not None:
        workout = result.workout
        data["workout"] = {
            "total_reps": workout.total_reps,
            "active_time": workout.active_time,
            "rest_time": workout.rest_time,
            "segments": [
                {
                    "start": s.start,
                    "end": s.end,
                    "kind": s.kind,
                    "reps": s.reps,
                    "rep_times": list(s.rep_times),
                    "tempo": s.tempo,
                    "intensity": s.intensity,
                    "exercise": s.exercise,
                    "exercise_confidence": s.exercise_confidence,
                    "rep_durations": list(s.rep_durations),
                    "range_of_motion": None
                    if s.range_of_motion is None
                    else list(s.range_of_motion),
                    "dominant_joint": s.dominant_joint,
                }
                for s in workout.segments
            ],
            "method": workout.method,
        }
    if result.reel is not None:
        data["reel_url"] = url(result.reel)
    # Validate once here, so a result that breaks the contract fails the analysis, not /results.
    return AnalysisData.model_validate(data).model_dump(mode="json", exclude_unset=True)


class VideoService:
    """The service's use cases, over a session store, a task backend and a blob store.

    Args:
        settings: the configuration.
        sessions: where sessions live.
        tasks: where session analyses run.
        artifact_url_prefix: the URL folder of artifacts, in results.
        events: the log lines and metrics of each event.
        blobs: where videos and artifacts live; the storage folder when omitted.
        pool: the threads of the synchronous analyses (`/analyze/*`), which always run in this
            process; `tasks` itself when omitted (it must then be a `BackgroundTaskManager`).
        engine: runs the analyses; child processes started from a fork server when omitted.
    """

    def __init__(
        self,
        settings: Settings,
        sessions: SessionStore,
        tasks: TaskBackend,
        artifact_url_prefix: str = "/api/v1/video/artifacts",
        events: SessionEvents | None = None,
        blobs: BlobStore | None = None,
        pool: BackgroundTaskManager | None = None,
        engine: ProcessEngine | None = None,
    ) -> None:
        self.settings = settings
        self.sessions = sessions
        self.tasks = tasks
        if pool is None:
            if not isinstance(tasks, BackgroundTaskManager):
                raise TypeError("give a pool for the synchronous analyses")
            pool = tasks
        self.pool = pool
        # The analyses run in child processes, never in this one's GIL (engine_process.py).
        self.engine = engine if engine is not None else ProcessEngine()
        self.storage = Path(settings.storage_dir).resolve()
        self.blobs: BlobStore = blobs if blobs is not None else LocalBlobStore(self.storage)
        self._artifact_url_prefix = artifact_url_prefix
        self._accepting = True
        self.events = events or SessionEvents()
        # Bodies being received now. Only the event loop touches it (receive_video), so it
        # needs no lock.
        self._receiving = 0

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Create the storage folder, resume what a restart interrupted, and remove session
        folders that no session owns.

        Sessions that were queued (a shutdown hands its running analyses back as queued) are
        queued again. Those still `processing` were interrupted by a crash: they start over from
        their saved video (their progress shows no step back: it resumes moving once the new
        run passes it), unless that is the _MAX_INTERRUPTIONS-th time, when they fail. A session
        whose result was saved before the crash completes; one whose video is gone fails with a
        message that says so.

        With workers elsewhere (RQ) there is nothing to resume: a start of this process says
        nothing about the analyses, which the queue and its workers own.
        """
        self.storage.mkdir(parents=True, exist_ok=True)
        if not self.tasks.in_process:
            return
        ended: list[str] = []
        for session in self.sessions.list_sessions():
            if session.status == SessionStatus.COMPLETED:
                # The result was committed but the crash came before the video was deleted.
                self.blobs.delete(session.id, _name(session.video_path))
                continue
            if session.status.is_terminal:
                continue
            if session.result is not None:
                self._complete_saved(session)
                continue
            interruptions = session.interruptions
            if session.status == SessionStatus.PROCESSING:
                interruptions += 1
                logger.warning(
                    "session %s was interrupted while processing (%d time(s))",
                    session.id,
                    interruptions,
                )
            if interruptions >= _MAX_INTERRUPTIONS:
                self._fail_at_start(session.id, _INTERRUPTED_TOO_OFTEN, interruptions)
                ended.append(session.id)
                continue
            if not self.blobs.has(session.id, _name(session.video_path)):
                self._fail_at_start(
                    session.id,
                    "The video was lost when the server restarted; upload it again",
                    interruptions,
                )
                ended.append(session.id)
                continue
            logger.info("resuming session %s (was %s)", session.id, session.status.value)
            self.sessions.update_session(
                session.id,
                status=SessionStatus.QUEUED,
                message=_REQUEUED,
                started_at=None,
                interruptions=interruptions,
            )
            self._submit(session.id)
        if ended:
            self._commit()  # start-up serves no request yet: no one sees them half-ended
            for session_id in ended:
                self._remove_files(session_id)
        known = {s.id for s in self.sessions.list_sessions()}
        for session_id in self.blobs.session_ids():
            if session_id not in known:
                logger.info("removing orphaned session folder %s", session_id)
                self.blobs.remove(session_id)

    def _fail_at_start(self, session_id: str, error: str, interruptions: int) -> None:
        logger.warning("session %s failed at start-up: %s", session_id, error)
        self.sessions.update_session(
            session_id,
            status=SessionStatus.FAILED,
            error=error,
            message="Analysis failed",
            finished_at=time.time(),
            interruptions=interruptions,
        )

    def _complete_saved(self, session: Session) -> None:
        logger.info("session %s completes from its saved result", session.id)
        self.blobs.delete(session.id, _name(session.video_path))
        self.sessions.update_session(
            session.id,
            status=SessionStatus.COMPLETED,
            progress=100,
            message="Analysis complete",
            finished_at=time.time(),
        )

    def shutdown(self) -> None:
        """Refuse new uploads and hand the work back for the next start.

        Running analyses are stopped through their cancel events, queued ones are dropped from
        the pool; all keep their videos and are recorded as queued, so the next start resumes
        them (and, unlike a crash, a shutdown does not count towards _MAX_INTERRUPTIONS). Waits
        at most _STOP_WAIT_SECONDS for the analyses to stop.

        With workers elsewhere (RQ), the queued and running analyses stay theirs; only the
        synchronous analyses of this process stop.
        """
        self._accepting = False
        if not self.tasks.in_process:
            self.pool.shutdown(wait=True, cancel_pending=True, timeout=_STOP_WAIT_SECONDS)
            self.tasks.shutdown()
            self.engine.close()
            return
        if not self.tasks.shutdown(wait=True, cancel_pending=True, timeout=_STOP_WAIT_SECONDS):
            logger.warning(
                "analyses still running after %.1fs; handing them back anyway", _STOP_WAIT_SECONDS
            )
        self.engine.close()
        unfinished = self.sessions.list_sessions(SessionStatus.QUEUED)
        unfinished += self.sessions.list_sessions(SessionStatus.PROCESSING)
        for session in unfinished:
            if session.result is not None:
                continue  # saved before the stop: the next start completes it
            self.sessions.update_session(
                session.id,
                expect_status=frozenset({SessionStatus.QUEUED, SessionStatus.PROCESSING}),
                status=SessionStatus.QUEUED,
                message=_REQUEUED,
                started_at=None,
            )
        if unfinished:
            logger.info("handed %d session(s) back for the next start", len(unfinished))
        self._commit()

    def _commit(self) -> bool:
        """Wait for the session changes so far to reach the database; False (logged) when they
        did not within _COMMIT_WAIT_SECONDS (they stay queued and are retried)."""
        if self.sessions.flush(_COMMIT_WAIT_SECONDS):
            return True
        logger.warning("session changes are not in the database yet; they will be retried")
        return False

    # -- uploads -------------------------------------------------------------------------------

    def check_capacity(self) -> None:
        """Raise before reading a body the service could not queue anyway."""
        if not self._accepting:
            raise ShuttingDown()
        if not self.sessions.healthy:
            raise StorageUnavailable()
        counts = self.tasks.counts()
        # Workers elsewhere come and go: a full queue is the one sign that they are all busy.
        busy = not self.tasks.in_process or counts["running"] >= self.tasks.max_workers
        if busy and counts["queued"] >= self.settings.max_queued:
            raise QueueFull(retry_after=_RETRY_AFTER_SECONDS)

    async def receive_video(
        self,
        stream: AsyncIterator[bytes],
        content_type: str | None,
        content_length: str | None = None,
    ) -> tuple[str, Path, AnalysisType, AnalysisParams]:
        """Stream an upload into a new session folder and check it is a video we can decode.

        Returns:
            (the new session id, the stored video's path, the analysis type, the params).

        Raises:
            UploadError: see `uploads.receive_upload` (malformed, too large, disk full or
                below its reserve, stalled); StorageFull also before a byte is read when the
                declared size would not fit.
            TooManyUploads: MAX_CONCURRENT_UPLOADS bodies are being received already.
            UnsupportedMediaType: the bytes are not a video container.
            InvalidUpload: empty file, bad form fields, or a video that does not decode.
            VideoTooLong: the video is longer than MAX_VIDEO_MINUTES.
        """
        declared = _declared_size(content_length)
        # Each refusal here comes before a byte of the body is read.
        if declared > self.settings.max_upload_bytes + _FORM_OVERHEAD:
            raise UploadTooLarge(f"File too large: the limit is {self.settings.max_upload_mb} MB")
        if self._receiving >= self.settings.max_concurrent_uploads:
            raise TooManyUploads(retry_after=_UPLOAD_RETRY_AFTER_SECONDS)
        # One statvfs: a metadata call as cheap as a stat, made on the loop to spare a hop.
        if free_bytes(self.storage) - declared < self.settings.disk_reserve_bytes:
            raise StorageFull("Not enough disk space to store the video")
        self._receiving += 1
        try:
            return await self._receive_video(stream, content_type)
        finally:
            self._receiving -= 1

    async def _receive_video(
        self, stream: AsyncIterator[bytes], content_type: str | None
    ) -> tuple[str, Path, AnalysisType, AnalysisParams]:
        session_id = str(uuid.uuid4())
        folder = self.storage / session_id
        await anyio.to_thread.run_sync(folder.mkdir, 0o700, True)
        try:
            upload = await receive_upload(
                stream,
                content_type,
                folder / _UPLOAD_NAME,
                max_bytes=self.settings.max_upload_bytes,
                check_head=_check_head,
                idle_seconds=self.settings.upload_idle_seconds,
                reserve_bytes=self.settings.disk_reserve_bytes,
            )
            analysis_type, params = parse_form(upload.fields)
            video_path = folder / f"video{sniff_container(upload.head)}"
            await anyio.to_thread.run_sync(os.replace, upload.path, video_path)
            try:
                info = await anyio.to_thread.run_sync(probe_video, video_path)
            except InvalidVideo as exc:
                raise InvalidUpload(
                    f"The file is not a readable video: {_public_error(exc)}"
                ) from None
            # The container's duration; one that does not know it says 0, and then only the
            # analysis itself could stop at the limit (the engine has no such option yet).
            if info.duration > self.settings.max_video_minutes * 60:
                raise VideoTooLong(info.duration, self.settings.max_video_minutes)
        except BaseException:
            await anyio.to_thread.run_sync(self._remove_folder, folder)
            raise
        return session_id, video_path, analysis_type, params

    async def upload(
        self,
        stream: AsyncIterator[bytes],
        content_type: str | None,
        content_length: str | None = None,
    ) -> str:
        """Receive a video and queue its analysis; returns the new session's id."""
        self.check_capacity()
        session_id, video_path, analysis_type, params = await self.receive_video(
            stream, content_type, content_length
        )
        try:
            self.check_capacity()
            size = video_path.stat().st_size
            # Into the bucket (streamed from the file) or left where it is (the local folder).
            stored = await anyio.to_thread.run_sync(self.blobs.put_video, session_id, video_path)
            self.sessions.create_session(
                stored,
                analysis_type.value,
                params.model_dump(),
                session_id=session_id,
                work_dir=str(video_path.parent) if self.tasks.in_process else None,
            )
            # The 202 promises the session: it must survive a crash from the moment it is sent.
            if not await anyio.to_thread.run_sync(self.sessions.flush, _COMMIT_WAIT_SECONDS):
                raise StorageUnavailable()
            self.events.upload_accepted(session_id, analysis_type.value, size)
            self._submit(session_id)
        except BaseException:
            await anyio.to_thread.run_sync(self._undo_upload, session_id, video_path.parent)
            raise
        return session_id

    def _undo_upload(self, session_id: str, folder: Path) -> None:
        try:
            self.sessions.delete_session(session_id)
        finally:
            self.blobs.remove(session_id)
            self._remove_folder(folder)

    def _submit(self, session_id: str) -> None:
        self.tasks.submit_analysis(session_id, self._analyse)

    # -- the worker side -----------------------------------------------------------------------

    def _analyse(self, session_id: str, cancel_event: threading.Event) -> None:
        started = self.sessions.update_session(
            session_id,
            expect_status=SessionStatus.QUEUED,
            status=SessionStatus.PROCESSING,
            started_at=time.time(),
            progress=1,
            message="Starting analysis",
        )
        session = self.sessions.get_session(session_id, with_result=False)
        if not started or session is None:
            return  # cancelled or cleaned up before a worker took it
        # Committed before the work starts: if this video takes the process down, the next
        # start finds the session `processing` and counts the interruption.
        self._commit()
        run = self.events.analysis_started(session)

        def on_progress(percent: int, message: str) -> None:
            # 100 is kept for "completed": the result is not stored yet.
            try:
                self.sessions.update_session(
                    session_id,
                    expect_status=SessionStatus.PROCESSING,
                    progress=min(99, max(1, int(percent))),
                    message=message,
                )
            except StoreUnavailable:
                pass  # Redis restarting: a progress report is not worth the analysis
            run.progress(percent)

        try:
            with self.blobs.workspace(session_id, _name(session.video_path)) as work:
                result = self.engine.analyze(
                    str(work.video),
                    session.analysis_type,
                    on_progress,
                    cancel_event=cancel_event,
                    output_dir=str(work.output_dir),
                    options=self._options(session.params),
                )
                data = build_data(result, f"{self._artifact_url_prefix}/{session_id}")
                # Stored even when a stop came meanwhile: a hand-back after the analysis ended
                # still completes the session, and a cancel removes them below.
                self.blobs.keep_artifacts(session_id, work, result.artifacts)
        except BaseException as exc:
            if isinstance(exc, StoreUnavailable):
                raise  # the video stays for the run that follows (analyse_here says when)
            # Stopping because we were asked to (a cancel, or the shutdown handing the work
            # back) is not a failure.
            if not (isinstance(exc, AnalysisCancelled) or cancel_event.is_set()):
                # The files go first, so a session seen `failed` has none left; a crash in
                # between leaves it `processing` without a video, which the next start fails.
                self._remove_files(session_id)
                failed = self.sessions.update_session(
                    session_id,
                    expect_status=SessionStatus.PROCESSING,
                    status=SessionStatus.FAILED,
                    error=_public_error(exc),
                    message="Analysis failed",
                    finished_at=time.time(),
                )
                if failed:
                    self._commit()
            else:
                self._remove_files_if_ended(session_id)
            run.ended(self.sessions.get_session(session_id, with_result=False), error=exc)
            raise
        # The result is committed while the session is still `processing`, before the video it
        # came from goes: a crash in between finds it at the next start, which completes the
        # session. If the database does not take it, the video stays for a re-run.
        # `queued` too: a shutdown may have handed the session back just as the analysis ended,
        # and a finished result is better kept than run again.
        live = frozenset({SessionStatus.PROCESSING, SessionStatus.QUEUED})
        saved = self.sessions.update_session(
            session_id,
            expect_status=live,
            message="Saving the results",
            result=data,
            artifacts=tuple(result.artifacts),
        )
        if saved and self._commit():
            self.blobs.delete(session_id, _name(session.video_path))
        # "completed" comes after the video is gone, so a completed session never has one.
        completed = saved and self.sessions.update_session(
            session_id,
            expect_status=live,
            status=SessionStatus.COMPLETED,
            progress=100,
            message="Analysis complete",
            finished_at=time.time(),
        )
        final = self.sessions.get_session(session_id, with_result=False)
        if completed:
            self._commit()
        elif final is None or final.status != SessionStatus.COMPLETED:
            # Cancelled or cleaned up meanwhile: no result outlives it. (Completed by another run
            # of the same job, after a worker was wrongly given up for dead: that result stays.)
            self.sessions.update_session(
                session_id,
                expect_status=frozenset({SessionStatus.CANCELLED, SessionStatus.FAILED}),
                result=None,
                artifacts=(),
            )
            self._remove_files_if_ended(session_id)
        run.ended(final, video_seconds=result.video.duration)

    def analyse_here(
        self, session_id: str, stop: threading.Event, handed_back: Callable[[], bool]
    ) -> bool:
        """Run a session's analysis in this process: the RQ job (`task_backend.py`).

        The analysis stops when `stop` is set (a cancel, a cleanup, or the worker shutting
        down). A failure is recorded on the session and logged here; it is not raised, since
        running a failing video again would fail again.

        Returns:
            True when the worker handed the session back (`handed_back()`): it is queued again,
            to run elsewhere; False when the analysis ended (however it ended).
        """
        try:
            self._analyse(session_id, stop)
        except StoreUnavailable:
            # Redis was away when the outcome had to be saved: let RQ see a failed job, so the
            # job runs again (a retry, or once Redis is back, the sweep for abandoned jobs).
            raise
        except Exception:
            if not stop.is_set():
                logger.exception("analysis of session %s failed", session_id)
        if not handed_back():
            return False
        return self.sessions.update_session(
            session_id,
            expect_status=frozenset({SessionStatus.PROCESSING, SessionStatus.QUEUED}),
            status=SessionStatus.QUEUED,
            message=_HANDED_BACK,
            started_at=None,
        )

    def job_interrupted(self, session_id: str, will_retry: bool, why: str) -> None:
        """A job ended without finishing (its worker died): see `record_interruption`."""
        record_interruption(self.sessions, self.blobs, session_id, will_retry, why)

    def _remove_files_if_ended(self, session_id: str) -> None:
        """Remove a session's files once it has ended or is gone; a session handed back by the
        shutdown (queued or processing) keeps its video for the next start."""
        session = self.sessions.get_session(session_id, with_result=False)
        if session is None or session.status.is_terminal:
            self._remove_files(session_id)

    # -- queries -------------------------------------------------------------------------------

    def get(self, session_id: str, *, with_result: bool = False) -> Session:
        """The session (without its result unless asked), or SessionNotFound."""
        session = self.sessions.get_session(session_id, with_result=with_result)
        if session is None:
            raise SessionNotFound()
        return session

    def queue_position(self, session_id: str) -> int | None:
        return self.tasks.queue_position(session_id)

    def results(self, session_id: str) -> Session:
        session = self.get(session_id, with_result=True)
        if session.status != SessionStatus.COMPLETED or session.result is None:
            raise SessionNotReady(session)
        return session

    def artifact(self, session_id: str, name: str) -> Path | str:
        """An artifact the session produced (nothing else is ever served): its local file, or
        in S3 mode a short-lived URL of it. Blocks on the bucket: call it off the event loop.

        Raises:
            ArtifactNotFound: the session did not produce it, or its file is gone.
        """
        session = self.sessions.get_session(session_id, with_result=False)
        if session is None or name not in session.artifacts:
            raise ArtifactNotFound()
        try:
            return self.blobs.artifact(session_id, name)
        except BlobNotFound:
            raise ArtifactNotFound() from None

    # -- cancel, cleanup, expiry -----------------------------------------------------------------

    async def cancel(self, session_id: str) -> None:
        """Stop a queued or processing session; its video and partial results are removed.

        Raises:
            SessionNotFound, SessionFinished.
        """
        self.get(session_id)
        cancelled = self.sessions.update_session(
            session_id,
            expect_status=frozenset({SessionStatus.QUEUED, SessionStatus.PROCESSING}),
            status=SessionStatus.CANCELLED,
            message="Processing cancelled",
            finished_at=time.time(),
        )
        if not cancelled:
            raise SessionFinished(self.get(session_id))
        self.events.cancelled(session_id)
        self.tasks.cancel_task(session_id)
        await anyio.to_thread.run_sync(self._stop_and_remove_files, session_id)

    async def cleanup(self, session_id: str) -> None:
        """Forget a session: stop its analysis, delete its files, its record and its result."""
        if not await anyio.to_thread.run_sync(self._forget, session_id):
            raise SessionNotFound()
        self.events.removed(session_id, "cleanup")

    def expire(self, now: float | None = None) -> int:
        """Clean up every session older than the TTL; returns how many. Runs off the loop.

        A session whose record is already gone (Redis dropped it at its own TTL, before any
        sweep) still has its files removed."""
        expired = self.sessions.expired(now or time.time(), self.settings.session_ttl_seconds)
        for session_id in expired:
            if self._forget(session_id):
                self.events.removed(session_id, "expired")
            else:
                self.blobs.remove(session_id)
        return len(expired)

    def _forget(self, session_id: str) -> bool:
        """Delete the record (so the worker's updates miss), stop the task, remove the files,
        drop the task's record; False when there was no such session. Blocks up to
        _STOP_WAIT_SECONDS: call it off the event loop."""
        if not self.sessions.delete_session(session_id):
            return False
        self.tasks.cancel_task(session_id)
        self._stop_and_remove_files(session_id)
        self.tasks.forget(session_id)
        return True

    def _stop_and_remove_files(self, session_id: str) -> None:
        if not self.tasks.wait(session_id, timeout=_STOP_WAIT_SECONDS):
            logger.warning("session %s did not stop in %.1fs", session_id, _STOP_WAIT_SECONDS)
        # Its end is recorded before its files go: a crash in between must not leave a
        # session whose video has vanished.
        self._commit()
        self._remove_files(session_id)

    def _remove_files(self, session_id: str) -> None:
        self.blobs.remove(session_id)

    @staticmethod
    def _remove_folder(folder: Path) -> None:
        shutil.rmtree(folder, ignore_errors=True)

    # -- the synchronous endpoints -------------------------------------------------------------

    async def analyze_now(
        self,
        stream: AsyncIterator[bytes],
        content_type: str | None,
        analysis_type: AnalysisType,
        content_length: str | None = None,
        client_gone: Callable[[], Awaitable[object]] | None = None,
    ) -> dict[str, Any]:
        """Receive a video, analyse it in the pool, return the data and keep nothing.

        The analysis is a task of the pool like any other: counted, queued, and stopped through
        the task manager. It is cancelled when `client_gone` returns before it ends, since
        nobody would read its answer.

        Raises:
            As `receive_video`; InvalidUpload for a video that breaks mid-analysis; ClientGone.
        """
        self.check_capacity()
        session_id, video_path, _, params = await self.receive_video(
            stream, content_type, content_length
        )
        task_id = f"sync-{session_id}"
        event = threading.Event()
        try:
            work = functools.partial(
                self.engine.analyze,
                str(video_path),
                analysis_type.value,
                cancel_event=event,
                options=self._options(params.model_dump()),
            )
            future = self.pool.submit_task(task_id, work, cancel_event=event)
            if not await _done_or_gone(future, client_gone):
                logger.info("synchronous analysis %s stopped: the client went away", task_id)
                raise ClientGone()
            try:
                result = future.result()
            except (InvalidVideo, VideoDecodeError) as exc:
                raise InvalidUpload(
                    f"The video could not be analysed: {_public_error(exc)}"
                ) from None
            return build_data(result, None)
        finally:
            # Drops it from the queue or stops it running (a no-op once it has finished).
            self.pool.cancel_task(task_id)
            await anyio.to_thread.run_sync(self._stop_and_forget_now, task_id, video_path.parent)

    def _options(self, params: dict[str, Any]) -> AnalysisOptions:
        """The engine's options for a session's params: the limit on length holds in the
        analysis too, for containers that do not declare their length (or lie about it)."""
        return AnalysisOptions(**params, max_seconds=self.settings.max_video_minutes * 60)

    def _stop_and_forget_now(self, task_id: str, folder: Path) -> None:
        if not self.pool.wait(task_id, timeout=_STOP_WAIT_SECONDS):
            logger.warning("task %s did not stop in %.1fs", task_id, _STOP_WAIT_SECONDS)
        self._remove_folder(folder)
        self.pool.forget(task_id)


async def _done_or_gone(
    future: Future[Any], client_gone: Callable[[], Awaitable[object]] | None
) -> bool:
    """Wait until `future` is done (True) or `client_gone` returns first (False).

    `future` itself is never cancelled from here, as `asyncio.wrap_future` would on
    cancellation: a queued task cancelled behind the task manager's back stayed counted as
    queued for ever. Stopping it is the caller's business, through the task manager.
    """
    loop = asyncio.get_running_loop()
    done = asyncio.Event()

    def wake(_: Future[Any]) -> None:
        try:
            loop.call_soon_threadsafe(done.set)
        except RuntimeError:
            pass  # the loop has closed: nobody is waiting any more

    future.add_done_callback(wake)
    waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(done.wait())}
    if client_gone is not None:
        waiters.add(asyncio.ensure_future(client_gone()))
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
        # Collects the cancellations, and any error of a waiter, so none is reported unread.
        await asyncio.gather(*waiters, return_exceptions=True)
    return future.done()


# An absolute path inside a message (a decoder's error often names the file it was reading).
_PATH = re.compile(r"(?<![\w.])/[^\s'\"]+")


def _public_error(exc: BaseException) -> str:
    # Only the engine's own errors carry a message meant for people; others stay in the log.
    # Even those may quote a library's error text, so no server path goes out with them.
    if isinstance(exc, (InvalidVideo, VideoDecodeError)):
        return _PATH.sub("<file>", str(exc)) or "The video could not be decoded"
    if isinstance(exc, AnalysisCrashed):
        return f"The analysis stopped: {exc}"
    return "Internal error during analysis"


def _declared_size(content_length: str | None) -> int:
    try:
        return max(0, int(content_length or 0))
    except ValueError:
        return 0


def _name(video_path: str) -> str:
    """The file name of a session's video, whatever the store's reference (a path or a key)."""
    return PurePosixPath(video_path).name


def record_interruption(
    sessions: SessionStore,
    blobs: BlobStore | None,
    session_id: str,
    will_retry: bool,
    why: str,
) -> None:
    """Record a job that ended without finishing (its worker died, or it raised).

    The session's interruption count goes up, as after a crash of the one-process server. When
    the job runs again it is queued again; when its retries are spent it fails with a message
    that says so, and its files go (`blobs`; None leaves them to the expiry sweep).
    """
    session = sessions.get_session(session_id, with_result=False)
    if session is None or session.status.is_terminal:
        return  # cancelled or cleaned up: there is nothing to run again
    interruptions = session.interruptions + 1
    logger.warning(
        "session %s: its job ended without finishing (%s), %d time(s)",
        session_id,
        why,
        interruptions,
    )
    live = frozenset({SessionStatus.PROCESSING, SessionStatus.QUEUED})
    if will_retry:
        sessions.update_session(
            session_id,
            expect_status=live,
            status=SessionStatus.QUEUED,
            message=_WORKER_LOST,
            started_at=None,
            interruptions=interruptions,
        )
        return
    times = "twice" if interruptions == 2 else f"{interruptions} times"
    if blobs is not None:
        blobs.remove(session_id)
    sessions.update_session(
        session_id,
        expect_status=live,
        status=SessionStatus.FAILED,
        error=f"The analysis was interrupted {times} (the worker analysing this video stopped "
        "each time); upload it again or contact support",
        message="Analysis failed",
        finished_at=time.time(),
        interruptions=interruptions,
    )
