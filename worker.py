"""An RQ worker that analyses videos: `python -m worker`, the Procfile's `worker:` line.

It reads the same settings as the web process (TASK_BACKEND=rq, REDIS_URL, S3_*), builds the
same `VideoService` over Redis and the bucket, and takes jobs from the queue one at a time. RQ
forks a work horse per job; the horse runs `task_backend.perform_analysis`, which is
`VideoService.analyse_here`: the same analysis code, progress, cancel and durability rules as the
thread pool of the one-process server. On top of RQ's `HerokuWorker`:

- a job counts as abandoned after WORKER_LOST_SECONDS without a heartbeat (RQ's own grace is a
  fixed 60 s), so tests can make a dead worker's job come back in seconds;
- SIGTERM (a Railway redeploy) hands the running job back at once: the horse stops the analysis
  through its cancel event and the job returns RQ's `Retry`, which requeues it at the front, so
  another worker takes it over; the session is `queued` meanwhile;
- whatever a horse fetched or wrote locally is removed after each job, even when it was killed;
- with WORKER_METRICS_PORT, the worker serves the analysis metrics of its horses (prometheus
  multiprocess mode) on that port, as README "Running it in production" describes. Their files
  live in a temporary folder named after the worker's pid, removed when the worker exits, and
  by the next worker to start on the machine if it was killed outright.

A start that must not go ahead (a bad setting, Redis or the bucket out of reach) says why in
one line and exits with status 1.
"""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

from config import ConfigurationError, Settings, StartupRefused, load_settings

logger = logging.getLogger("worker")


_METRICS_FOLDER = "worker-metrics-"
"""Prefix of a worker's metrics folder in the temporary directory: then the worker's pid, a dash."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _remove_metrics_of_dead_workers() -> None:
    """Remove the metrics folders of workers that are gone without removing theirs (SIGKILL, the
    out-of-memory killer). A folder whose pid is alive, perhaps reused, is left alone."""
    for folder in Path(tempfile.gettempdir()).glob(f"{_METRICS_FOLDER}*-*"):
        pid = folder.name.removeprefix(_METRICS_FOLDER).partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(folder, ignore_errors=True)


def _remove_own_metrics(folder: str, owner: int) -> None:
    # Processes forked from the worker inherit its exit handlers: only the worker removes it.
    if os.getpid() == owner:
        shutil.rmtree(folder, ignore_errors=True)


def _serve_metrics(port: int) -> None:
    """Prometheus multiprocess mode across this worker's horses, served on `port`.

    Must run before anything creates a metric. Every horse of this worker writes into files
    named after the worker's pid, not its own: a worker runs one horse at a time, so they never
    write at once, and the folder does not grow by two files per job. The worker itself never
    opens them (its horses make their metrics after the fork).
    """
    _remove_metrics_of_dead_workers()
    worker_pid = os.getpid()
    folder = tempfile.mkdtemp(prefix=f"{_METRICS_FOLDER}{worker_pid}-")
    atexit.register(_remove_own_metrics, folder, worker_pid)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
    from prometheus_client import CollectorRegistry, start_http_server, values
    from prometheus_client.multiprocess import MultiProcessCollector

    values.ValueClass = values.MultiProcessValue(lambda: worker_pid)
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=folder)
    start_http_server(port, registry=registry)


def build_worker(settings: Settings) -> Any:
    """The RQ worker of these settings, with its `VideoService` ready for its horses.

    Raises:
        StartupRefused: Redis or the bucket cannot be reached.
    """
    from rq.worker import HerokuWorker

    import task_backend
    from engine_process import ProcessEngine
    from metrics import Metrics
    from observability import SessionEvents
    from task_manager import BackgroundTaskManager
    from video_service import VideoService

    remote = task_backend.Distributed.connect(settings)
    service = VideoService(
        settings,
        remote.sessions,
        remote.tasks,
        # Metrics are made in each horse (main_work_horse), never here: see _serve_metrics.
        events=SessionEvents(),
        blobs=remote.blobs,
        # A worker never runs synchronous analyses; the pool only satisfies the constructor.
        pool=BackgroundTaskManager(max_workers=1),
        # The horse, one thread that has imported the engine, forks the analysis's process; it
        # keeps its own priority, so a SIGTERM is acted on at once however busy the machine is.
        engine=ProcessEngine("fork"),
    )
    task_backend.serve_jobs_with(service)
    task_backend.on_interruption(service.job_interrupted)
    scratch = remote.blobs.scratch
    # What a horse killed mid-job (or a worker killed whole) left in this worker's scratch.
    for leftover in scratch.glob("analysis-*") if scratch.is_dir() else ():
        shutil.rmtree(leftover, ignore_errors=True)

    class AnalysisWorker(HerokuWorker):
        """RQ's HerokuWorker with our abandonment grace, SIGTERM hand-back and local cleanup."""

        # Seconds between SIGTERM and raising in the job, if the analysis has not stopped by
        # itself through its cancel event (it does within a frame or two).
        imminent_shutdown_delay = 5

        def get_heartbeat_ttl(self, job: Any) -> int:
            # RQ adds a fixed 60 s to the heartbeat interval; we add WORKER_LOST_SECONDS.
            return int(self.job_monitoring_interval + settings.worker_lost_seconds)

        def request_stop_sigrtmin(self, signum: int, frame: Any) -> None:
            # In the horse, on the worker's SIGTERM: stop now, and requeue the job (see
            # perform_analysis); RQ's own raise stays as the fallback.
            task_backend.current_job().hand_back()
            super().request_stop_sigrtmin(signum, frame)

        def handle_work_horse_killed(
            self, job: Any, retpid: Any, ret_val: Any, rusage: Any
        ) -> None:
            # The horse died (out of memory, a crash in a decoder): RQ retries or fails the job
            # next; the session says which.
            if self._stopped_job_id != job.id:
                service.job_interrupted(job.id, bool(job.retries_left), "work horse died")
            super().handle_work_horse_killed(job, retpid, ret_val, rusage)

        def main_work_horse(self, job: Any, queue: Any) -> None:
            # In the horse: a fresh registry whose values are read from the files as the last
            # horse left them (one made in the worker itself would hand every horse a stale view
            # of the files, and the next horse would write over the last one's entries).
            service.events = SessionEvents(Metrics())
            super().main_work_horse(job, queue)

        def execute_job(self, job: Any, queue: Any) -> None:
            try:
                super().execute_job(job, queue)
            finally:
                for leftover in scratch.glob(f"analysis-{job.id}-*"):
                    shutil.rmtree(leftover, ignore_errors=True)

    from rq import Queue

    queue = Queue(task_backend.QUEUE, connection=remote.tasks.connection)
    return AnalysisWorker(
        [queue],
        connection=remote.tasks.connection,
        job_monitoring_interval=settings.worker_heartbeat_seconds,
        maintenance_interval=max(1, round(settings.job_sweep_seconds)),
    )


def main() -> None:
    """Start one worker and run until SIGTERM or SIGINT (then the running job is handed back)."""
    try:
        settings = load_settings()
        if not settings.distributed:
            raise ConfigurationError(
                "the worker runs analyses from the queue: set TASK_BACKEND=rq (with "
                "STATE_STORE=redis, BLOB_STORE=s3, REDIS_URL and S3_*)"
            )
    except ConfigurationError as exc:
        raise SystemExit(f"configuration error: {exc}") from None
    import logs

    logs.configure(settings.log_format, settings.log_level)
    from analysis.pose import silence_runtime_banner

    # The pose runtime's one-off line on stderr would be the only log line that is not JSON.
    # Silenced once here: the horses, and the analysis processes they fork, inherit it, so no
    # job pays for a throw-away interpreter.
    silence_runtime_banner()
    if settings.worker_metrics_port is not None:
        _serve_metrics(settings.worker_metrics_port)
    try:
        worker = build_worker(settings)
    except StartupRefused as exc:
        raise SystemExit(str(exc)) from None
    logger.info("worker %s ready (pid %d)", worker.name, os.getpid())
    worker.work(with_scheduler=False, logging_level=settings.log_level)
    sys.exit(0)


if __name__ == "__main__":
    main()
