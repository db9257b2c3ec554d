"""What the service tells the people who run it: a log line and a metric per event of a
session's life, and per request.

- `SessionEvents` is what `VideoService` calls where something happens to a session (upload
  accepted or refused, analysis started, progress, ended, cancelled, cleaned up, expired). Each
  call writes one log line carrying the session id and, given a `Metrics`, records it. An
  analysis's metrics are recorded in one place, `AnalysisRun.ended`, by the code that ran the
  analysis: a worker in another process records them there too.
- `RequestObserver` is the ASGI middleware that gives each request an id (`X-Request-ID`, taken
  from the client or made up, echoed in the answer), binds the session id found in its path for
  its log lines, and times it by route template and status.
- `install(app)` wires both, and `GET /metrics`, into an application.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import TYPE_CHECKING, Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

import logs
from metrics import Metrics
from metrics import router as metrics_router
from session_manager import Session, SessionStatus

if TYPE_CHECKING:
    from fastapi import FastAPI

logger = logging.getLogger(__name__)

# Progress is logged when it passes these percentages, not per segment: a search for a session
# shows its pace without pages of progress lines.
PROGRESS_MILESTONES = (25, 50, 75)
# The route label of a request that matched no route: its raw path would let any client create
# series without bound.
UNMATCHED_ROUTE = "unmatched"
# An incoming X-Request-ID is kept only if it is short and plain; anything else could forge or
# break log lines, and gets a fresh id instead.
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
# Session ids are server-made uuids, and no other segment of this API's paths is one: the
# uuid-shaped segment of a path is its session. (Matching the routes themselves before the
# router does would cost about 90 µs a request with FastAPI 0.165's included routers.)
_SESSION_IN_PATH = re.compile(
    r"/([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?=/|$)"
)
# The upload errors' classes, by name (importing them here would be circular), and the reason
# each one is counted under. A new error class is counted under its own snake_case name.
_REJECTION_REASONS = {
    "UploadTooLarge": "too_large",
    "UnsupportedMediaType": "unsupported",
    "InvalidUpload": "invalid",
    "MalformedUpload": "malformed",
    "QueueFull": "queue_full",
    "ShuttingDown": "shutting_down",
    "StorageFull": "disk_full",
    "ClientDisconnect": "interrupted",
}
_DOMAIN_ERRORS = frozenset({"ServiceError", "UploadError"})


def rejection_reason(exc: BaseException) -> str:
    """The `reason` label of an upload refused with `exc`; "error" for anything unexpected."""
    names = [cls.__name__ for cls in type(exc).__mro__]
    for name in names:
        if name in _REJECTION_REASONS:
            return _REJECTION_REASONS[name]
    if _DOMAIN_ERRORS.intersection(names):
        return re.sub(r"(?<!^)(?=[A-Z])", "_", names[0]).lower()
    return "error"


class SessionEvents:
    """The log line, and the metrics, of each event of a session's life.

    Args:
        metrics: where to record; None only logs (a `VideoService` built outside an app).
    """

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics

    def upload_accepted(self, session_id: str, analysis_type: str, size: int) -> None:
        """A video was stored and its session created. Called in the upload request, whose
        remaining log lines (uvicorn's access line too) then carry the session id."""
        logs.session_id.set(session_id)
        logger.info(
            "upload accepted: %s analysis of %.1f MB",
            analysis_type,
            size / 1e6,
            extra={"event": "upload_accepted", "analysis_type": analysis_type, "bytes": size},
        )
        if self.metrics is not None:
            self.metrics.upload_accepted(analysis_type, size)

    def upload_rejected(self, exc: BaseException) -> None:
        reason = rejection_reason(exc)
        logger.info(
            "upload refused (%s): %s",
            reason,
            exc,
            extra={"event": "upload_rejected", "reason": reason},
        )
        if self.metrics is not None:
            self.metrics.upload_rejected(reason)

    def analysis_started(self, session: Session) -> AnalysisRun:
        """A worker took the session; the returned run follows it to its end."""
        queued = max(0.0, time.time() - session.created_at)
        logger.info(
            "analysis started (%s) after %.1f s in the queue",
            session.analysis_type,
            queued,
            extra={
                "event": "analysis_started",
                "session_id": session.id,
                "analysis_type": session.analysis_type,
                "queued_s": round(queued, 3),
            },
        )
        return AnalysisRun(session.id, session.analysis_type, self.metrics)

    def cancelled(self, session_id: str) -> None:
        logger.info(
            "session cancelled on request",
            extra={"event": "session_cancelled", "session_id": session_id},
        )

    def removed(self, session_id: str, why: str) -> None:
        """The session and its files are gone: `why` is "cleanup" (asked for) or "expired"."""
        message = "session expired and removed" if why == "expired" else "session cleaned up"
        logger.info(message, extra={"event": f"session_{why}", "session_id": session_id})


class AnalysisRun:
    """One analysis, from a worker taking it to its end: its progress milestones, then how it
    ended, with its duration. Used from the worker thread only."""

    def __init__(self, session_id: str, analysis_type: str, metrics: Metrics | None) -> None:
        self.session_id = session_id
        self.analysis_type = analysis_type
        self._metrics = metrics
        self._started = time.monotonic()
        self._milestones = list(PROGRESS_MILESTONES)

    def progress(self, percent: int) -> None:
        """Log the progress when it passes a milestone (once, however many it jumps over)."""
        if not self._milestones or percent < self._milestones[0]:
            return
        self._milestones = [m for m in self._milestones if percent < m]
        logger.info(
            "analysis at %d%%",
            percent,
            extra={
                "event": "analysis_progress",
                "session_id": self.session_id,
                "progress": percent,
            },
        )

    def ended(
        self,
        final: Session | None,
        *,
        video_seconds: float | None = None,
        error: BaseException | None = None,
    ) -> None:
        """Log and record how the analysis ended.

        Args:
            final: the session as the analysis left it (None once cleaned up): its status is
                the outcome, so a cancel that raced the end is counted as what it became.
            video_seconds: the video's length, for the real-time factor of a completed run.
            error: the exception the analysis stopped with, if any.
        """
        seconds = time.monotonic() - self._started
        if final is None:
            outcome = SessionStatus.CANCELLED.value  # cleaned up while it ran
        elif final.status.is_terminal:
            outcome = final.status.value
        else:
            outcome = "interrupted"  # handed back to the queue, to resume after a restart
        fields: dict[str, Any] = {
            "event": f"analysis_{outcome}",
            "session_id": self.session_id,
            "analysis_type": self.analysis_type,
            "outcome": outcome,
            "duration_s": round(seconds, 3),
        }
        if outcome == SessionStatus.COMPLETED.value and video_seconds:
            fields["video_s"] = round(video_seconds, 3)
            fields["realtime_factor"] = round(video_seconds / max(seconds, 1e-9), 2)
            logger.info(
                "analysis completed in %.2f s: %.1f s of video, %.1fx real time",
                seconds,
                video_seconds,
                fields["realtime_factor"],
                extra=fields,
            )
        elif outcome == SessionStatus.FAILED.value:
            # The traceback is logged once, by the task pool, with this session's id.
            fields["error"] = f"{type(error).__name__}: {error}" if error else None
            logger.error("analysis failed after %.2f s: %s", seconds, fields["error"], extra=fields)
        else:
            logger.info("analysis %s after %.2f s", outcome, seconds, extra=fields)
        if self._metrics is not None:
            self._metrics.analysis_ended(self.analysis_type, outcome, seconds, video_seconds)


class RequestObserver:
    """ASGI middleware: a request id and the path's session id for the log lines of each
    request, and its duration by method, route template and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = _header(scope, b"x-request-id")
        request_id = given if given and _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        # Each request runs in a task of its own, with its own copy of the context: setting
        # these here cannot leak into another request.
        logs.request_id.set(request_id)
        in_path = _SESSION_IN_PATH.search(scope["path"])
        logs.session_id.set(in_path.group(1) if in_path else None)
        status = 500  # what the client gets when the app raises before answering
        started = time.perf_counter()

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            self.metrics.observe_request(
                scope["method"], route_template(scope), status, time.perf_counter() - started
            )


def route_template(scope: Scope) -> str:
    """The template of the route that answered, e.g. /api/v1/video/status/{session_id}.

    The router leaves the route in the scope, but a route of an included router knows only its
    own part of the path (/video/status/{session_id}): what precedes that part in the request's
    path is the routers' prefix, a literal in this app."""
    route = scope.get("route")
    template, regex = getattr(route, "path", None), getattr(route, "path_regex", None)
    if not template or regex is None:
        return UNMATCHED_ROUTE
    path: str = scope["path"]
    for cut in (i for i, char in enumerate(path) if char == "/"):
        if regex.match(path[cut:]):
            return path[:cut] + template
    return template


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


def install(app: FastAPI) -> Metrics:
    """Give `app` its metrics (on `app.state.metrics`), the request middleware and
    `GET /metrics`; the service's state is read from `app.state.service` at each scrape."""
    metrics = Metrics()
    metrics.watch(lambda: getattr(app.state, "service", None))
    app.state.metrics = metrics
    app.add_middleware(RequestObserver, metrics=metrics)
    app.include_router(metrics_router)
    return metrics
