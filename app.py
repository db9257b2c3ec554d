"""The FastAPI application: configuration, life cycle, and the routes outside `/api/v1`.

`lifespan` builds the session store, the task backend and the service from `Settings`, keeps
them on `app.state`, sweeps expired sessions periodically and, on shutdown, hands unfinished
analyses back for the next start (see `VideoService.shutdown`). By default everything is in this
process: it first takes the storage folder's lock (one server process per folder). With
TASK_BACKEND=rq, sessions are in Redis, files in an S3 bucket and analyses in RQ workers: there
is no shared folder to lock, and this process also looks for jobs whose worker died. Nothing
heavy happens at import time: `create_app(settings)` gives each test a fresh application. A start
that must not go ahead (a bad setting, a folder in use, Redis or the bucket out of reach) says
why in one line, without a traceback.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
from fastapi import Depends, FastAPI, Request
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

import logs
from async_api import (
    UPLOAD_FORM,
    PrivateCacheMiddleware,
    ServiceDep,
    _errors,
    multipart_body,
    register_error_handlers,
    require_api_key,
    router,
    signed_router,
    wait_for_disconnect,
)
from config import ConfigurationError, Settings, StartupRefused, load_settings
from observability import SessionEvents
from observability import install as install_observability
from schemas import AnalysisData, AnalysisType, HealthResponse
from session_manager import SessionManager
from session_store import SessionStore, StoreUnavailable
from signing import UrlSigner
from task_backend import Distributed, RQTaskBackend, TaskBackend, on_interruption
from task_manager import BackgroundTaskManager
from video_service import StorageLock, VideoService

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
SESSIONS_DB = "sessions.sqlite3"
# The reference web page (plain HTML, CSS and JavaScript; no build step).
STATIC_DIR = Path(__file__).resolve().parent / "static"


def configure_logging(settings: Settings) -> None:
    """Logging is configured here and nowhere else: LOG_FORMAT (text or json) and LOG_LEVEL.

    Called when the app is built, which `uvicorn app:app` does before it logs its first line,
    so with LOG_FORMAT=json every line of the process is a JSON object, uvicorn's included."""
    logs.configure(settings.log_format, settings.log_level)


async def _sweep_expired(service: VideoService, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        try:
            removed = await anyio.to_thread.run_sync(service.expire)
            if removed:
                logger.info("expired %d session(s)", removed)
        except Exception:
            logger.exception("expiry sweep failed")


async def _sweep_abandoned(tasks: RQTaskBackend, interval: float) -> None:
    # Every API replica looks: workers look only between jobs, and all of them may be busy.
    while True:
        await asyncio.sleep(interval)
        try:
            await anyio.to_thread.run_sync(tasks.sweep)
        except StoreUnavailable:
            pass  # logged by the store; the next sweep tries again
        except Exception:
            logger.exception("sweep of abandoned jobs failed")


class _OneLineStartupRefusal:
    """Make a refused start-up (StartupRefused) one line in uvicorn's log.

    uvicorn logs the message of a failed lifespan start-up, and Starlette makes that message the
    whole traceback; for a refusal we expect, the sentence is all a person needs.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await self.app(scope, receive, send)
            return
        held: list[Message] = []

        async def hold_failure(message: Message) -> None:
            if message["type"] == "lifespan.startup.failed":
                held.append(message)  # sent below, once the exception says what it was
            else:
                await send(message)

        try:
            await self.app(scope, receive, hold_failure)
        except StartupRefused as exc:
            held[:] = [{"type": "lifespan.startup.failed", "message": str(exc)}]
            raise  # uvicorn says nothing more once the failure is reported; a TestClient raises
        finally:
            for message in held:
                await send(message)


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; `settings` defaults to the environment's.

    Raises:
        ConfigurationError: without `settings`, an environment variable breaks its rule.
    """
    settings = settings or load_settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = Path(settings.storage_dir).resolve()
        # The synchronous analyses (/analyze/*) run on this process's threads in every mode.
        pool = BackgroundTaskManager(max_workers=settings.max_workers)
        lock: StorageLock | None = None
        sessions: SessionStore
        tasks: TaskBackend
        if settings.distributed:
            # STORAGE_DIR only holds uploads while they arrive: nothing shared to lock.
            remote = await anyio.to_thread.run_sync(Distributed.connect, settings)
            sessions, tasks, blobs = remote.sessions, remote.tasks, remote.blobs
        else:
            # First of all: a second process on this folder must not resume our sessions.
            lock = await anyio.to_thread.run_sync(StorageLock.acquire, storage)
            try:
                sessions = await anyio.to_thread.run_sync(SessionManager, storage / SESSIONS_DB)
            except BaseException:
                lock.release()
                raise
            tasks, blobs = pool, None
        sweepers: list[asyncio.Task[None]] = []
        try:
            service = VideoService(
                settings,
                sessions,
                tasks,
                f"{API_PREFIX}/video/artifacts",
                events=SessionEvents(app.state.metrics),
                blobs=blobs,
                pool=pool,
            )
            await anyio.to_thread.run_sync(service.start)
            app.state.settings = settings
            app.state.sessions = sessions
            app.state.tasks = tasks
            app.state.service = service
            sweepers.append(
                asyncio.create_task(_sweep_expired(service, settings.cleanup_interval_seconds))
            )
            if isinstance(tasks, RQTaskBackend):
                on_interruption(service.job_interrupted)
                sweepers.append(
                    asyncio.create_task(_sweep_abandoned(tasks, settings.job_sweep_seconds))
                )
                logger.info("ready: analyses in RQ workers, sessions in Redis, files in S3")
            else:
                logger.info("ready: %d worker(s), storage in %s", settings.max_workers, storage)
            try:
                yield
            finally:
                for sweeper in sweepers:
                    sweeper.cancel()
                await anyio.to_thread.run_sync(service.shutdown)
                await anyio.to_thread.run_sync(sessions.close)
                logger.info("shut down")
        finally:
            if lock is not None:
                lock.release()

    app = FastAPI(
        title="Workout video analysis",
        version="1.0.0",
        description="Upload a workout video, follow its analysis, read its highlights and "
        "its sets and repetitions with timestamps.",
        lifespan=lifespan,
    )
    # Built from the settings alone; the routes that sign or check URLs read it here.
    app.state.signer = UrlSigner.from_settings(settings)
    if settings.api_key is not None:
        app.add_middleware(PrivateCacheMiddleware, prefixes=(API_PREFIX, "/analyze"))
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            # A cross-origin page could not read a 429's Retry-After otherwise.
            expose_headers=["Retry-After"],
        )
    app.add_middleware(_OneLineStartupRefusal)
    register_error_handlers(app)
    install_observability(app)
    app.include_router(router, prefix=API_PREFIX)
    app.include_router(signed_router, prefix=API_PREFIX)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, html=True), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The reference web page."""
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health", response_model=HealthResponse, tags=["service"], operation_id="health")
    async def health(request: Request) -> HealthResponse:
        """Report that the service is up, with its load; `degraded` while the session database
        refuses writes."""
        service: VideoService = request.app.state.service
        try:
            counts = service.tasks.counts()
            sessions = len(service.sessions)
        except StoreUnavailable:
            # Up, but Redis is not: say so instead of failing the platform's health check.
            return HealthResponse(status="degraded", running=0, queued=0, sessions=0)
        return HealthResponse(
            status="healthy" if service.sessions.healthy else "degraded",
            running=counts["running"],
            queued=counts["queued"],
            sessions=sessions,
        )

    form = {k: v for k, v in UPLOAD_FORM["properties"].items() if k != "analysis_type"}
    sync_route: dict[str, Any] = {
        "response_model": AnalysisData,
        "response_model_exclude_unset": True,
        "responses": _errors(401, 400, 408, 413, 415, 422, 429, 503, 507),
        "openapi_extra": multipart_body({**UPLOAD_FORM, "properties": form}),
        "dependencies": [Depends(require_api_key)],
        "tags": ["synchronous"],
    }

    @app.post("/analyze/highlights", operation_id="analyze_highlights", **sync_route)
    async def analyze_highlights(request: Request, service: ServiceDep) -> dict[str, Any]:
        """Find a video's highlights and answer with the data (no session kept)."""
        return await service.analyze_now(
            request.stream(),
            request.headers.get("content-type"),
            AnalysisType.HIGHLIGHTS,
            request.headers.get("content-length"),
            client_gone=lambda: wait_for_disconnect(request),
        )

    @app.post("/analyze/workout", operation_id="analyze_workout", **sync_route)
    async def analyze_workout(request: Request, service: ServiceDep) -> dict[str, Any]:
        """Analyse a video's sets and repetitions and answer with the data (no session kept)."""
        return await service.analyze_now(
            request.stream(),
            request.headers.get("content-type"),
            AnalysisType.WORKOUT,
            request.headers.get("content-length"),
            client_gone=lambda: wait_for_disconnect(request),
        )

    return app


def _app_from_environment() -> FastAPI:
    try:
        return create_app()
    except ConfigurationError as exc:
        # uvicorn imports this module to start the server: one line and a non-zero exit.
        raise SystemExit(f"configuration error: {exc}") from None


app = _app_from_environment()
