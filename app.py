"""The FastAPI application: configuration, life cycle, and the routes outside `/api/v1`.

`lifespan` builds the session store, the task pool and the service from `Settings`, keeps them on
`app.state`, sweeps expired sessions periodically and, on shutdown, cancels pending and running
analyses and removes the files of unfinished sessions. Nothing heavy happens at import time:
`create_app(settings)` gives each test a fresh application.
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
from config import Settings
from observability import SessionEvents
from observability import install as install_observability
from schemas import AnalysisData, AnalysisType, HealthResponse
from session_manager import SessionManager
from signing import UrlSigner
from task_manager import BackgroundTaskManager
from video_service import VideoService, lower_thread_priority

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


def create_app(settings: Settings | None = None) -> FastAPI:
    """Build the application; `settings` defaults to the environment's."""
    settings = settings or Settings()
    configure_logging(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        sessions = await anyio.to_thread.run_sync(
            SessionManager, Path(settings.storage_dir) / SESSIONS_DB
        )
        tasks = BackgroundTaskManager(
            max_workers=settings.max_workers, initializer=lower_thread_priority
        )
        service = VideoService(
            settings,
            sessions,
            tasks,
            f"{API_PREFIX}/video/artifacts",
            events=SessionEvents(app.state.metrics),
        )
        await anyio.to_thread.run_sync(service.start)
        app.state.settings = settings
        app.state.sessions = sessions
        app.state.tasks = tasks
        app.state.service = service
        sweeper = asyncio.create_task(_sweep_expired(service, settings.cleanup_interval_seconds))
        logger.info("ready: %d worker(s), storage in %s", settings.max_workers, service.storage)
        try:
            yield
        finally:
            sweeper.cancel()
            await anyio.to_thread.run_sync(service.shutdown)
            await anyio.to_thread.run_sync(sessions.close)
            logger.info("shut down")

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
    register_error_handlers(app)
    install_observability(app)
    app.include_router(router, prefix=API_PREFIX)
    app.include_router(signed_router, prefix=API_PREFIX)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, html=True), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        """The reference web page."""
        return FileResponse(STATIC_DIR / "index.html")

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health(request: Request) -> HealthResponse:
        """Report that the service is up, with its load."""
        service: VideoService = request.app.state.service
        counts = service.tasks.counts()
        return HealthResponse(
            status="healthy",
            running=counts["running"],
            queued=counts["queued"],
            sessions=len(service.sessions),
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

    @app.post("/analyze/highlights", **sync_route)
    async def analyze_highlights(request: Request, service: ServiceDep) -> dict[str, Any]:
        """Find a video's highlights and answer with the data (no session kept)."""
        return await service.analyze_now(
            request.stream(),
            request.headers.get("content-type"),
            AnalysisType.HIGHLIGHTS,
            request.headers.get("content-length"),
            client_gone=lambda: wait_for_disconnect(request),
        )

    @app.post("/analyze/workout", **sync_route)
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


app = create_app()
