"""Where analyses run: the task backend `video_service.py` depends on, and its RQ implementation.

`TaskBackend` is the interface. `task_manager.BackgroundTaskManager` (a thread pool in this
process) is one; `RQTaskBackend` (jobs on a Redis queue, run by RQ workers in other processes,
on other machines) is the other. In RQ:

- the job id is the session id, and a waiting session's queue position is its job's place in the
  queue (RQ's is 0-based, ours 1-based);
- a running job stops when its session is cancelled or cleaned up: the work horse watches the
  session in Redis (`watch_session`, every 0.1 s) and sets the analysis's cancel event; RQ's stop
  command (which kills the work horse) is the last resort of `wait`;
- a job whose worker died (no heartbeat for WORKER_LOST_SECONDS, found by
  `StartedJobRegistry.cleanup` in `sweep`) runs again on another worker, at the front of the queue,
  at most `MAX_RETRIES` times; its `on_failure` callback (`job_failed`) counts the interruption on
  the session, requeues it, or fails it once the retries are spent;
- a worker that gets SIGTERM hands its job back at once: the job returns RQ's `Retry`, which
  requeues it at the front without spending a retry (see `worker.py`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlsplit

from blob_store import S3BlobStore
from config import Settings, StartupRefused
from logs import session_context
from session_manager import SessionStatus
from session_store import RedisSessionStore, StoreUnavailable

logger = logging.getLogger(__name__)

QUEUE = "video-analysis"
# "At most twice": a job whose worker dies is run again on another worker up to this many times.
MAX_RETRIES = 2
# A SIGTERM hand-back (a redeploy) does not spend a retry; this only bounds a loop of them.
MAX_HANDBACKS = 100
# How often a running job looks at its session for a cancel or a cleanup.
WATCH_SECONDS = 0.1
# How long `wait` lets a job notice its cancel before RQ's stop command kills its work horse.
_STOP_COMMAND_AFTER = 1.0


class TaskBackend(Protocol):
    """Runs analyses by session id: queues them, cancels them, says where they are."""

    @property
    def in_process(self) -> bool:
        """True when the analyses run in this process (a restart or a shutdown of it stops
        them); False when workers elsewhere own them."""
        ...

    @property
    def max_workers(self) -> int:
        """How many analyses can run at once."""
        ...

    def submit_analysis(
        self, session_id: str, analyse: Callable[[str, threading.Event], Any]
    ) -> None:
        """Queue the analysis of a session. An in-process backend runs `analyse(session_id,
        cancel_event)` on its threads; a backend with workers elsewhere runs the same method of
        the worker's own `VideoService`."""
        ...

    def cancel_task(self, session_id: str) -> bool:
        """Drop a queued analysis, or ask a running one to stop; True when there was one."""
        ...

    def wait(self, session_id: str, timeout: float | None = None) -> bool:
        """Block until the analysis is no longer running; False when `timeout` passed first."""
        ...

    def forget(self, session_id: str) -> None: ...

    def queue_position(self, session_id: str) -> int | None:
        """1-based place among the waiting analyses, or None when not waiting."""
        ...

    def counts(self) -> dict[str, int]:
        """{"running": ..., "queued": ...} right now."""
        ...

    def shutdown(
        self, wait: bool = True, cancel_pending: bool = True, timeout: float | None = None
    ) -> bool: ...


# -- what runs the job, in whichever process that is -----------------------------------------------

# The handler of a job that ended without finishing (its worker died, or it raised): set by the
# `VideoService` of this process (an API replica or a worker) when it is built for RQ.
_interrupted: Callable[[str, bool, str], None] | None = None
# The service a work horse runs its job with: built by `worker.py` before the worker forks.
_worker_service: Any = None


def on_interruption(handler: Callable[[str, bool, str], None]) -> None:
    """Make `handler(session_id, will_retry, why)` the way this process records a job that
    ended without finishing."""
    global _interrupted
    _interrupted = handler


def serve_jobs_with(service: Any) -> None:
    """Make `service` (a `VideoService`) the one this worker process runs its jobs with."""
    global _worker_service
    _worker_service = service


def perform_analysis(session_id: str) -> Any:
    """The RQ job: analyse a session in this work horse.

    Returns:
        RQ's `Retry` when the worker handed the job back (SIGTERM), which requeues it at the
        front of the queue without spending a retry; None otherwise (the session records how
        the analysis ended, a failure included: retrying a video that fails is pointless).
    """
    from rq import Retry

    service = _worker_service
    if service is None:
        raise RuntimeError("no VideoService in this process: start workers with `python -m worker`")
    job = current_job()
    watcher = threading.Thread(
        target=watch_session, args=(service.sessions, session_id, job), daemon=True
    )
    watcher.start()
    try:
        handed_back = session_context(session_id).run(
            service.analyse_here, session_id, job.stop, lambda: job.handed_back
        )
    finally:
        job.done.set()
        watcher.join(1.0)
    if handed_back:
        logger.info("session %s handed back to the queue", session_id)
        return Retry(max=MAX_HANDBACKS, enqueue_at_front=True)
    return None


class RunningJob:
    """The job of this work horse: its stop event, and whether the worker handed it back."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.done = threading.Event()
        self.handed_back = False

    def hand_back(self) -> None:
        """The worker is shutting down (SIGTERM): stop, and requeue the job."""
        self.handed_back = True
        self.stop.set()


_current = RunningJob()


def current_job() -> RunningJob:
    """The job this work horse runs (a work horse runs one job, then exits)."""
    return _current


def watch_session(sessions: Any, session_id: str, job: RunningJob) -> None:
    """Set `job.stop` once the session is cancelled, failed or cleaned up (in another process);
    return when the job is done."""
    while not job.done.wait(WATCH_SECONDS):
        try:
            session = sessions.get_session(session_id, with_result=False)
        except StoreUnavailable:
            continue  # Redis is restarting: the analysis goes on meanwhile
        if session is None or session.status in (SessionStatus.CANCELLED, SessionStatus.FAILED):
            job.stop.set()
            return


def job_failed(job: Any, connection: Any, exc_type: Any, exc_value: Any, tb: Any) -> None:
    """RQ's `on_failure` callback: the job ended without finishing. Called by
    `StartedJobRegistry.cleanup` for a job whose worker died (in any process that runs it), and by
    a work horse for a job that raised.

    The process's `VideoService` records it (interruption count, requeued or failed, files);
    a process without one (an operator's `rq info`) still records it on the session, and leaves
    the files of a failed session to the expiry sweep.
    """
    will_retry = bool(job.retries_left)
    why = getattr(exc_type, "__name__", str(exc_type))
    handler = _interrupted
    if handler is None:
        from video_service import record_interruption

        store = RedisSessionStore(connection, ttl_seconds=1)
        handler = lambda s, r, w: record_interruption(store, None, s, r, w)  # noqa: E731
    try:
        handler(job.id, will_retry, why)
    except Exception:
        logger.exception("could not record the interruption of session %s", job.id)


# -- the API side ----------------------------------------------------------------------------------


class RQTaskBackend:
    """Analyses as RQ jobs on one queue, run by RQ workers (`python -m worker`).

    Args:
        connection: a `redis.Redis`.
        job_timeout: seconds after which RQ stops a job (a bound, not a plan).
    """

    in_process = False

    def __init__(self, connection: Any, job_timeout: int) -> None:
        from rq import Queue

        self.connection = connection
        self.queue = Queue(QUEUE, connection=connection)
        self.job_timeout = job_timeout

    def _call(self, operation: Callable[[], Any]) -> Any:
        import redis

        try:
            return operation()
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            raise StoreUnavailable() from exc

    @property
    def max_workers(self) -> int:
        from rq import Worker

        return int(self._call(lambda: Worker.count(queue=self.queue)))

    def submit_analysis(
        self, session_id: str, analyse: Callable[[str, threading.Event], Any]
    ) -> None:
        from rq import Callback, Retry

        self._call(
            lambda: self.queue.enqueue(
                perform_analysis,
                session_id,
                job_id=session_id,
                job_timeout=self.job_timeout,
                result_ttl=0,  # the session holds the result
                failure_ttl=24 * 3600,
                retry=Retry(max=MAX_RETRIES, enqueue_at_front=True),
                on_failure=Callback(job_failed),
                description=f"analysis of session {session_id}",
            )
        )

    def _job(self, session_id: str) -> Any:
        """The job with its status as of this one read, or None. (Its status is read with it:
        asked for again, a job that has just finished may already be gone, result_ttl=0.)"""
        from rq.exceptions import NoSuchJobError
        from rq.job import Job

        try:
            return self._call(lambda: Job.fetch(session_id, connection=self.connection))
        except NoSuchJobError:
            return None

    def cancel_task(self, session_id: str) -> bool:
        from rq.job import JobStatus

        job = self._job(session_id)
        if job is None:
            return False
        status = job.get_status(refresh=False)
        if status in (JobStatus.QUEUED, JobStatus.SCHEDULED, JobStatus.DEFERRED):
            self._call(lambda: self.queue.remove(session_id))
            self._call(job.delete)
            return True
        # Running: its work horse sees the session's new status within WATCH_SECONDS.
        return status == JobStatus.STARTED

    def _running(self, session_id: str) -> bool:
        from rq.job import JobStatus

        job = self._job(session_id)
        return job is not None and job.get_status(refresh=False) == JobStatus.STARTED

    def wait(self, session_id: str, timeout: float | None = None) -> bool:
        from rq.command import send_stop_job_command
        from rq.exceptions import InvalidJobOperation, NoSuchJobError

        started = time.monotonic()
        deadline = None if timeout is None else started + timeout
        stop_sent = False
        while self._running(session_id):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                return False
            if not stop_sent and now - started >= _STOP_COMMAND_AFTER:
                # It did not notice its session's change: kill its work horse.
                logger.warning("session %s did not stop by itself; stopping its job", session_id)
                try:
                    self._call(lambda: send_stop_job_command(self.connection, session_id))
                except (InvalidJobOperation, NoSuchJobError):
                    pass  # it has just ended
                stop_sent = True
            time.sleep(0.02)
        return True

    def forget(self, session_id: str) -> None:
        pass  # jobs keep no result (result_ttl=0): nothing to drop

    def queue_position(self, session_id: str) -> int | None:
        position = self._call(lambda: self.queue.get_job_position(session_id))
        return None if position is None else int(position) + 1

    def counts(self) -> dict[str, int]:
        # cleanup=False: a registry cleanup is `sweep`'s job alone, at its own pace.
        running = self._call(lambda: self.queue.started_job_registry.get_job_count(cleanup=False))
        return {"running": int(running), "queued": int(self._call(lambda: self.queue.count))}

    def sweep(self) -> None:
        """Find jobs whose worker died: each runs again elsewhere, or fails (see `job_failed`).
        Safe off the main thread: the callbacks' time limit is a timer, not SIGALRM."""
        from rq.registry import StartedJobRegistry
        from rq.timeouts import TimerDeathPenalty

        registry = StartedJobRegistry(queue=self.queue, death_penalty_class=TimerDeathPenalty)
        self._call(registry.cleanup)

    def shutdown(
        self, wait: bool = True, cancel_pending: bool = True, timeout: float | None = None
    ) -> bool:
        # The jobs belong to the workers and the queue: an API replica that stops leaves them.
        return True


# -- wiring ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Distributed:
    """The three distributed parts, connected from the settings (API replicas and workers)."""

    sessions: RedisSessionStore
    tasks: RQTaskBackend
    blobs: S3BlobStore

    @classmethod
    def connect(cls, settings: Settings) -> Distributed:
        """Connect to Redis and the bucket and check both answer.

        Raises:
            StartupRefused: one of them cannot be reached; the line names it (never a secret).
        """
        import redis
        from botocore.exceptions import BotoCoreError, ClientError

        assert settings.redis_url is not None  # checked by Settings
        url = settings.redis_url.get_secret_value()
        client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=5, health_check_interval=30
        )
        # The hash outlives the session by two sweeps and an hour: the sweep removes it (and the
        # session's files) first, and Redis forgets it even if no sweep ever runs.
        ttl = settings.session_ttl_seconds + 2 * settings.cleanup_interval_seconds + 3600
        sessions = RedisSessionStore(client, ttl_seconds=ttl)
        try:
            sessions.ping()
        except StoreUnavailable:
            raise StartupRefused(f"cannot reach Redis at REDIS_URL ({_where(url)})") from None
        blobs = S3BlobStore.from_settings(settings)
        try:
            blobs.check()
        except (BotoCoreError, ClientError) as exc:
            raise StartupRefused(
                f"cannot use S3_BUCKET {settings.s3_bucket} at S3_ENDPOINT_URL "
                f"{settings.s3_endpoint_url}: {_s3_reason(exc)}"
            ) from None
        # A job may take as long as its video lasts (analyses run at 10-20x real time).
        job_timeout = max(600, int(settings.max_video_minutes * 60))
        return cls(sessions, RQTaskBackend(client, job_timeout), blobs)


def _where(url: str) -> str:
    # host:port/db, never the password a URL may carry.
    parsed = urlsplit(url)
    return f"{parsed.hostname}:{parsed.port or 6379}{parsed.path or ''}"


def _s3_reason(exc: Exception) -> str:
    error = getattr(exc, "response", {}).get("Error", {})
    code = error.get("Code")
    if code in {"403", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied"}:
        return "the credentials are refused (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)"
    if code in {"404", "NoSuchBucket"}:
        return "no such bucket"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
