"""Prometheus metrics of one application instance, and the `GET /metrics` endpoint.

Each `Metrics` has its own registry (never prometheus_client's global one), so every app a test
builds starts at zero. Counters and histograms are recorded where things happen: requests by
the middleware (`observability.RequestObserver`), uploads and analyses by the session events
(`observability.SessionEvents`). The state of the service (queue depth, running workers,
sessions stored, disk used) is read when Prometheus scrapes, by `ServiceCollector`.

Labels are bounded sets: route templates (never a raw path), status codes, analysis types,
outcomes and rejection reasons. No session id and no file path is ever a label or a value.
"""

from __future__ import annotations

import hmac
import math
import os
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from session_manager import SessionStatus
from session_store import StoreUnavailable

if TYPE_CHECKING:
    from config import Settings
    from video_service import VideoService

# Status polls answer in about a millisecond; an event stream lasts as long as its analysis.
REQUEST_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1,
    2.5,
    5,
    10,
    30,
    60,
    300,
)
ANALYSIS_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800, 3600)
# Seconds of video per second of analysis; 720p runs at about 15-19 on one worker.
REALTIME_BUCKETS = (0.5, 1, 2, 4, 6, 8, 10, 12.5, 15, 17.5, 20, 25, 30, 50, 100)
# Walking STORAGE_DIR costs a stat per file: at most once per this many seconds, whatever the
# scrape rate.
DISK_CACHE_SECONDS = 15.0


class Metrics:
    """The instruments of one app instance, in a registry of its own."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.request_seconds = Histogram(
            "http_request_duration_seconds",
            "Time from a request's arrival to its last response byte (for the event stream, "
            "the stream's life), by route template and status.",
            ["method", "route", "status"],
            buckets=REQUEST_BUCKETS,
            registry=registry,
        )
        self.uploads = Counter(
            "video_uploads",
            "Uploads accepted (202) by POST /api/v1/video/upload.",
            ["analysis_type"],
            registry=registry,
        )
        self.upload_bytes = Counter(
            "video_upload_bytes", "Bytes of the videos accepted.", registry=registry
        )
        self.upload_rejections = Counter(
            "video_upload_rejections",
            "Uploads refused, by reason (too_large, unsupported, invalid, malformed, queue_full, "
            "shutting_down, disk_full, interrupted, error, ...).",
            ["reason"],
            registry=registry,
        )
        self.analyses = Counter(
            "video_analyses",
            "Analyses that ended, by type and outcome (completed, failed, cancelled, "
            "interrupted). A session cancelled while still queued never started one.",
            ["analysis_type", "outcome"],
            registry=registry,
        )
        self.analysis_seconds = Histogram(
            "video_analysis_duration_seconds",
            "Wall time of an analysis, from a worker taking it to its end.",
            ["analysis_type", "outcome"],
            buckets=ANALYSIS_BUCKETS,
            registry=registry,
        )
        self.realtime_factor = Histogram(
            "video_analysis_realtime_factor",
            "Seconds of video per second of analysis, for completed analyses.",
            ["analysis_type"],
            buckets=REALTIME_BUCKETS,
            registry=registry,
        )
        # Memory, CPU and open files of this process (read from /proc; absent elsewhere).
        ProcessCollector(registry=registry)

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.request_seconds.labels(method, route, str(status)).observe(seconds)

    def upload_accepted(self, analysis_type: str, size: int) -> None:
        self.uploads.labels(analysis_type).inc()
        self.upload_bytes.inc(size)

    def upload_rejected(self, reason: str) -> None:
        self.upload_rejections.labels(reason).inc()

    def analysis_ended(
        self, analysis_type: str, outcome: str, seconds: float, video_seconds: float | None
    ) -> None:
        """Record one analysis's end: the count, its duration, and for a completed one its
        real-time factor."""
        self.analyses.labels(analysis_type, outcome).inc()
        self.analysis_seconds.labels(analysis_type, outcome).observe(seconds)
        if outcome == SessionStatus.COMPLETED.value and video_seconds and seconds > 0:
            self.realtime_factor.labels(analysis_type).observe(video_seconds / seconds)

    def watch(self, service: Callable[[], VideoService | None]) -> None:
        """Report the service's state at each scrape; `service` answers None before start-up."""
        self.registry.register(ServiceCollector(service))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class ServiceCollector(Collector):
    """Gauges read when Prometheus scrapes: the pool, the store and the disk."""

    def __init__(self, service: Callable[[], VideoService | None]) -> None:
        self._service = service
        self._disk = _DiskUsage(DISK_CACHE_SECONDS)

    def collect(self) -> Iterator[Metric]:
        service = self._service()
        if service is None:
            return
        try:
            yield from self._service_gauges(service)
        except StoreUnavailable:
            pass  # Redis is away (distributed mode): the scrape still has the rest
        used, size, free = self._disk.measure(service.storage)
        yield _gauge(
            "video_storage_used_bytes",
            f"Bytes of the files under STORAGE_DIR (remeasured every {DISK_CACHE_SECONDS:.0f} s).",
            used,
        )
        yield _gauge(
            "video_storage_filesystem_size_bytes", "Size of STORAGE_DIR's filesystem.", size
        )
        yield _gauge(
            "video_storage_filesystem_free_bytes", "Free bytes on STORAGE_DIR's filesystem.", free
        )

    @staticmethod
    def _service_gauges(service: VideoService) -> Iterator[Metric]:
        # With TASK_BACKEND=rq these come from the queue and the sessions in Redis.
        counts = service.tasks.counts()
        yield _gauge("video_queue_depth", "Sessions waiting for a worker.", counts["queued"])
        yield _gauge(
            "video_queue_capacity",
            "MAX_QUEUED: waiting sessions beyond which uploads answer 429.",
            service.settings.max_queued,
        )
        yield _gauge("video_workers_running", "Analyses running now.", counts["running"])
        yield _gauge(
            "video_workers",
            "MAX_WORKERS, or with TASK_BACKEND=rq the registered workers: analyses that may "
            "run at once.",
            service.tasks.max_workers,
        )
        sessions = GaugeMetricFamily(
            "video_sessions", "Sessions stored, by status.", labels=["status"]
        )
        for status in SessionStatus:
            sessions.add_metric([status.value], service.sessions.count(status))
        yield sessions


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


class _DiskUsage:
    """(bytes under a folder, its filesystem's size, free bytes), remeasured at most every
    `ttl` seconds."""

    def __init__(self, ttl: float) -> None:
        self._ttl = ttl
        self._lock = threading.Lock()
        self._measured_at = -math.inf
        self._value = (0, 0, 0)

    def measure(self, folder: Path) -> tuple[int, int, int]:
        with self._lock:
            now = time.monotonic()
            if now - self._measured_at >= self._ttl:
                usage = shutil.disk_usage(folder)
                self._value = (_tree_size(folder), usage.total, usage.free)
                self._measured_at = now
            return self._value


def _tree_size(folder: Path) -> int:
    total = 0
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return 0  # removed while we walked (a session cleaned up meanwhile)
    for entry in entries:
        try:
            if entry.is_dir(follow_symlinks=False):
                total += _tree_size(Path(entry.path))
            else:
                total += entry.stat(follow_symlinks=False).st_size
        except OSError:
            continue
    return total


# -- the endpoint -------------------------------------------------------------------------------

router = APIRouter()


def _matches(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def authorised(request: Request, settings: Settings) -> bool:
    """True when /metrics may answer this request.

    Open when neither API_KEY nor METRICS_TOKEN is set; otherwise the X-API-Key header must
    match API_KEY, or an `Authorization: Bearer` token must match METRICS_TOKEN (what a
    Prometheus scrape config sends with `authorization: {credentials: ...}`).
    """
    api_key, token = settings.api_key, settings.metrics_token
    if api_key is None and token is None:
        return True
    if api_key is not None and _matches(
        request.headers.get("x-api-key", ""), api_key.get_secret_value()
    ):
        return True
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    return (
        token is not None
        and scheme.lower() == "bearer"
        and _matches(credentials.strip(), token.get_secret_value())
    )


# A plain `def`: FastAPI runs it in a worker thread, so the disk walk never holds the event loop.
@router.get("/metrics", include_in_schema=False)
def get_metrics(request: Request) -> Response:
    """Prometheus metrics in the text exposition format."""
    settings: Settings = request.app.state.settings
    if not authorised(request, settings):
        bearer = settings.metrics_token is not None
        return JSONResponse(
            {"detail": "Invalid or missing credentials for /metrics"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"} if bearer else None,
        )
    metrics: Metrics = request.app.state.metrics
    return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)
