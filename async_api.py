"""The asynchronous video API, mounted at `/api/v1`: upload, status, results, cancel, cleanup and
artifacts. Handlers are thin: they call `VideoService` and shape its answers into wire models.

This module is also the one place where domain errors become HTTP answers
(`register_error_handlers`), so every error is `{"detail": "..."}` with the right status and never
shows a path, a stack trace or an exception's internals. The OpenAPI document says so too: every
error status of every route references `ErrorResponse`, never FastAPI's validation array.

Access: when API_KEY is set, every route needs the X-API-Key header, except that the artifacts and
the event stream also open with a signed URL (`signing.py`), which is what the API hands out for
them, since `<img>`, `<video>` and `EventSource` cannot send a header. Every answer under the key
is `Cache-Control: private`.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import mimetypes
import os
from collections.abc import AsyncIterable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from fastapi.security import APIKeyHeader
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.types import Message as ASGIMessage

from schemas import (
    AnalysisType,
    CancelResponse,
    ErrorResponse,
    Message,
    ResultsResponse,
    StatusResponse,
    UploadResponse,
)
from session_manager import SessionStatus
from session_store import StoreUnavailable
from signing import EVENTS, SignatureError, UrlSigner
from uploads import MalformedUpload, StorageFull, UploadError, UploadStalled, UploadTooLarge
from video_service import (
    ArtifactNotFound,
    ClientGone,
    InvalidUpload,
    QueueFull,
    ServiceError,
    SessionFinished,
    SessionNotFound,
    SessionNotReady,
    ShuttingDown,
    StorageUnavailable,
    TooManyUploads,
    UnsupportedMediaType,
    VideoService,
)

logger = logging.getLogger(__name__)


# -- dependencies -------------------------------------------------------------------------------


# The dependencies and the status/results handlers are `async def` on purpose: they only read
# memory, and a plain `def` would send each one to a worker thread. Under load that hand-off,
# not the work, was the latency: every hop waits for the GIL behind the busy analysis threads.
async def get_service(request: Request) -> VideoService:
    return request.app.state.service


ServiceDep = Annotated[VideoService, Depends(get_service)]


async def get_signer(request: Request) -> UrlSigner | None:
    return request.app.state.signer


SignerDep = Annotated[UrlSigner | None, Depends(get_signer)]

_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False)


def _key_matches(request: Request, api_key: str | None) -> bool:
    """True when API_KEY is not set, or the header matches it (compared in constant time)."""
    expected = request.app.state.settings.api_key
    if expected is None:
        return True
    given = (api_key or "").encode()
    return hmac.compare_digest(given, expected.get_secret_value().encode())


def _unauthorized() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, "Invalid or missing API key")


async def require_api_key(
    request: Request, api_key: Annotated[str | None, Depends(_api_key_header)]
) -> None:
    """When API_KEY is set, the X-API-Key header must match it (compared in constant time)."""
    if not _key_matches(request, api_key):
        raise _unauthorized()


async def require_api_key_or_signature(
    request: Request,
    api_key: Annotated[str | None, Depends(_api_key_header)],
    signer: SignerDep,
    expires: Annotated[
        str | None,
        Query(description="Unix time a signed URL expires (only when API_KEY is set)."),
    ] = None,
    token: Annotated[
        str | None, Query(description="The signature of a signed URL (only when API_KEY is set).")
    ] = None,
) -> None:
    """The X-API-Key header, or the `expires` and `token` of a URL the API signed for this
    session and name (a wrong or expired one is a 403)."""
    if _key_matches(request, api_key):
        return
    if signer is None or (expires is None and token is None):
        raise _unauthorized()
    name = request.path_params.get("name", EVENTS)
    signer.verify(request.path_params["session_id"], name, expires, token)


async def wait_for_disconnect(request: Request) -> None:
    """Return once the client has gone. Call it only after the body has been read: from then
    on the server has nothing else to tell the application."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


class PrivateCacheMiddleware:
    """Marks every answer under `prefixes` `Cache-Control: private` (added in front of what a
    route says), so that no shared cache keeps what needed a key."""

    def __init__(self, app: ASGIApp, prefixes: tuple[str, ...]) -> None:
        self.app = app
        self.prefixes = prefixes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefixes):
            await self.app(scope, receive, send)
            return

        async def send_private(message: ASGIMessage) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                current = headers.get("cache-control")
                if current is None:
                    headers["Cache-Control"] = "private"
                elif "private" not in current and "no-store" not in current:
                    headers["Cache-Control"] = f"private, {current}"
            await send(message)

        await self.app(scope, receive, send_private)


# -- OpenAPI details ----------------------------------------------------------------------------


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    descriptions = {
        400: "Bad request",
        401: "Missing or wrong X-API-Key (only when API_KEY is set)",
        403: "A signed URL that has expired or was altered (only when API_KEY is set)",
        404: "Session not found",
        408: "The upload sent nothing for UPLOAD_IDLE_SECONDS",
        409: "The session has already ended",
        413: "File larger than MAX_UPLOAD_MB",
        415: "Not a video format we accept",
        422: "Unreadable video, bad analysis_type or params",
        429: "Too many videos waiting, or MAX_CONCURRENT_UPLOADS uploads under way; "
        "see Retry-After",
        503: "Shutting down, or the session store cannot save new sessions (or, with "
        "STATE_STORE=redis, be reached) right now",
        507: "Not enough disk space (DISK_RESERVE_MB is kept free)",
    }
    return {code: {"model": ErrorResponse, "description": descriptions[code]} for code in codes}


# FastAPI documents its validation array (HTTPValidationError) as the 422 of every route with a
# parameter, but our handler answers {"detail": "<sentence>"}: say so instead.
_INVALID_PARAMETERS: dict[int | str, dict[str, Any]] = {
    422: {"model": ErrorResponse, "description": "Invalid path or header parameters"}
}


UPLOAD_FORM: dict[str, Any] = {
    "type": "object",
    "required": ["video"],
    "properties": {
        "video": {"type": "string", "format": "binary", "description": "The video file."},
        "analysis_type": {
            "type": "string",
            "enum": [t.value for t in AnalysisType],
            "default": AnalysisType.HIGHLIGHTS.value,
        },
        "params": {
            "type": "string",
            "default": "{}",
            "description": "A JSON object with any of: segment_seconds (1-60), max_highlights "
            "(1-20), highlight_seconds (1-30), sample_fps (2-30), reel (bool).",
            "examples": ['{"max_highlights": 3, "reel": true}'],
        },
    },
}


def multipart_body(schema: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` documenting a multipart body that the handler streams itself."""
    return {
        "requestBody": {
            "required": True,
            "content": {"multipart/form-data": {"schema": schema}},
        }
    }


# -- routes -------------------------------------------------------------------------------------

router = APIRouter(prefix="/video", tags=["video"], dependencies=[Depends(require_api_key)])
# The routes a browser reaches through plain URLs (`<img>`, `<video>`, EventSource).
signed_router = APIRouter(
    prefix="/video", tags=["video"], dependencies=[Depends(require_api_key_or_signature)]
)
_AUTH = (401,)
_SIGNED_AUTH = (401, 403)

# OpenAPI links: what a client (and the stateful fuzzer) can do with the `sessionId` of a 202.
_SESSION_LINKS = {
    name: {
        "operationId": operation_id,
        "parameters": {"session_id": "$response.body#/sessionId"},
        "description": description,
    }
    for name, operation_id, description in [
        ("GetStatus", "get_status", "The session's status and progress"),
        ("StreamEvents", "stream_events", "The session's status as Server-Sent Events"),
        ("GetResults", "get_results", "The session's results, once completed"),
        ("CancelSession", "cancel_session", "Cancel the session's analysis"),
        ("CleanupSession", "cleanup_session", "Delete the session"),
        ("GetArtifact", "get_artifact", "A thumbnail or the reel of the session"),
    ]
}


@router.post(
    "/upload",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=UploadResponse,
    responses={
        202: {"description": "The session, queued for analysis", "links": _SESSION_LINKS},
        **_errors(*_AUTH, 400, 408, 413, 415, 422, 429, 503, 507),
    },
    openapi_extra=multipart_body(UPLOAD_FORM),
    operation_id="upload_video",
)
async def upload_video(request: Request, service: ServiceDep, signer: SignerDep) -> UploadResponse:
    """Upload a video and queue its analysis."""
    # The body is streamed to disk here rather than parsed by FastAPI, so the size limit holds
    # while the bytes arrive and memory stays flat (see uploads.py).
    try:
        session_id = await service.upload(
            request.stream(),
            request.headers.get("content-type"),
            request.headers.get("content-length"),
        )
    except Exception as exc:
        service.events.upload_rejected(exc)
        raise
    events_url = str(request.app.url_path_for("stream_events", session_id=session_id))
    if signer is not None:
        events_url = signer.sign(events_url, session_id, EVENTS)
    return UploadResponse(
        sessionId=session_id,
        status=SessionStatus.QUEUED,
        message="Video uploaded successfully",
        eventsUrl=events_url,
    )


@router.get(
    "/status/{session_id}",
    response_model=StatusResponse,
    response_model_exclude_none=True,
    responses={**_errors(*_AUTH, 404, 503), **_INVALID_PARAMETERS},
    operation_id="get_status",
)
async def get_status(session_id: str, service: ServiceDep) -> StatusResponse:
    """Get a session's status and progress."""
    return status_of(service, session_id)


def status_of(service: VideoService, session_id: str) -> StatusResponse:
    """The status model of a session (shared with the event stream)."""
    session = service.get(session_id)
    return StatusResponse(
        sessionId=session.id,
        status=session.status,
        progress=session.progress,
        message=session.message,
        analysisType=AnalysisType(session.analysis_type),
        createdAt=session.created_at,
        updatedAt=session.updated_at,
        queuePosition=service.queue_position(session_id)
        if session.status == SessionStatus.QUEUED
        else None,
        error=session.error if session.status == SessionStatus.FAILED else None,
    )


# Seconds of silence after which the event stream sends a heartbeat comment (tests shorten it).
EVENTS_HEARTBEAT_SECONDS = 15.0
# How often the event stream looks at its session: a snapshot from the in-memory store costs
# microseconds, and 150 ms is well under what a person perceives as lag.
EVENTS_POLL_SECONDS = 0.15


_ERROR_SCHEMA = {"$ref": "#/components/schemas/ErrorResponse"}
_STATUS_SCHEMA = {"$ref": "#/components/schemas/StatusResponse"}


def _json_errors(errors: dict[int | str, dict[str, Any]]) -> dict[int | str, dict[str, Any]]:
    """`_errors` for a route whose own media type is not JSON: its errors still are."""
    return {
        code: {
            "description": spec["description"],
            "content": {"application/json": {"schema": _ERROR_SCHEMA}},
        }
        for code, spec in errors.items()
    }


def _sse_data(schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "string", "contentMediaType": "application/json", "contentSchema": schema}


# The two kinds of event the stream sends (heartbeats are SSE comments, not events).
_EVENTS_ITEM_SCHEMA = {
    "oneOf": [
        {
            "title": "status",
            "description": "A change of status, progress or queue position; the data is the "
            "status JSON. Sent without an `event:` line, so its type is the default `message`.",
            "type": "object",
            "properties": {"event": {"const": "message"}, "data": _sse_data(_STATUS_SCHEMA)},
            "required": ["data"],
        },
        {
            "title": "gone",
            "description": "The session was cleaned up or expired; the last event, with data "
            '{"detail": "Session not found"}.',
            "type": "object",
            "properties": {"event": {"const": "gone"}, "data": _sse_data(_ERROR_SCHEMA)},
            "required": ["event", "data"],
        },
    ]
}


_EVENTS_EXAMPLE = (
    'data: {"sessionId":"2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11","status":"processing",'
    '"progress":65,"message":"Analyzing segment 13/20","analysisType":"workout",'
    '"createdAt":1795489366.16,"updatedAt":1795489370.02}\n\n'
    ": heartbeat\n\n"
    'data: {"sessionId":"2f0c6d1e-8a53-4b9e-9d55-0c1f3f0b7a11","status":"completed",'
    '"progress":100,"message":"Analysis complete","analysisType":"workout",'
    '"createdAt":1795489366.16,"updatedAt":1795489372.40}\n\n'
)
_GONE_EXAMPLE = 'event: gone\ndata: {"detail":"Session not found"}\n\n'


async def _existing_session(session_id: str, service: ServiceDep) -> str:
    """The path's session id; a 404 here answers before any stream starts."""
    service.get(session_id)
    return session_id


@signed_router.get(
    "/events/{session_id}",
    response_class=EventSourceResponse,
    responses={
        200: {
            "description": "A stream of status events, ending after a terminal status, or "
            "with a `gone` event when the session is cleaned up",
            "content": {
                "text/event-stream": {
                    "itemSchema": _EVENTS_ITEM_SCHEMA,
                    "examples": {
                        "progress": {"value": _EVENTS_EXAMPLE},
                        "gone": {"value": _GONE_EXAMPLE},
                    },
                }
            },
        },
        **_json_errors({**_errors(*_SIGNED_AUTH, 404, 503), **_INVALID_PARAMETERS}),
    },
    operation_id="stream_events",
)
async def stream_events(
    session_id: Annotated[str, Depends(_existing_session)], service: ServiceDep
) -> AsyncIterable[ServerSentEvent]:
    """Follow a session's status and progress as Server-Sent Events.

    Each event's data is the status JSON, sent once per change of status, progress or queue
    position; a `: heartbeat` comment follows every EVENTS_HEARTBEAT_SECONDS of silence. The
    stream ends after a terminal status, or with a `gone` event when the session is cleaned up.
    """
    loop = asyncio.get_running_loop()
    last: tuple[object, ...] | None = None
    heartbeat_due = loop.time() + EVENTS_HEARTBEAT_SECONDS
    try:
        while True:
            try:
                current = status_of(service, session_id)
            except SessionNotFound as exc:
                yield ServerSentEvent(event="gone", data=ErrorResponse(detail=str(exc)))
                return
            key = (current.status, current.progress, current.queuePosition)
            if key != last:
                last = key
                # The status endpoint's JSON, field for field (it leaves out the null ones).
                yield ServerSentEvent(raw_data=current.model_dump_json(exclude_none=True))
                if current.status.is_terminal:
                    return
                heartbeat_due = loop.time() + EVENTS_HEARTBEAT_SECONDS
            elif loop.time() >= heartbeat_due:
                yield ServerSentEvent(comment="heartbeat")
                heartbeat_due = loop.time() + EVENTS_HEARTBEAT_SECONDS
            # Wake on the heartbeat's deadline, not up to a poll after it. (FastAPI also sends a
            # ": ping" after 15 s with nothing to send; clients ignore comments, so an extra one
            # at the same moment is harmless.)
            await asyncio.sleep(max(0.0, min(EVENTS_POLL_SECONDS, heartbeat_due - loop.time())))
    finally:
        # Reached on every way out, including a client that went away (the task is cancelled).
        logger.debug("event stream of session %s closed", session_id)


@router.get(
    "/results/{session_id}",
    response_model=ResultsResponse,
    response_model_exclude_unset=True,
    responses={**_errors(*_AUTH, 400, 404, 503), **_INVALID_PARAMETERS},
    operation_id="get_results",
)
async def get_results(session_id: str, service: ServiceDep, signer: SignerDep) -> dict[str, Any]:
    """Get the analysis results of a completed session."""
    session = service.results(session_id)
    data = session.result  # a copy: signing its URLs changes nothing stored
    if signer is not None and data is not None:
        _sign_artifact_urls(data, signer, session.id)
    return {"sessionId": session.id, "status": session.status.value, "data": data}


def _sign_artifact_urls(data: dict[str, Any], signer: UrlSigner, session_id: str) -> None:
    """Sign, in place, the artifact URLs of a result: stored results keep plain URLs, and each
    answer gets a fresh expiry."""

    def sign(url: str | None) -> str | None:
        return signer.sign(url, session_id, url.rsplit("/", 1)[-1]) if url else url

    for highlight in data.get("highlights") or ():
        highlight["thumbnail_url"] = sign(highlight.get("thumbnail_url"))
    if "reel_url" in data:
        data["reel_url"] = sign(data["reel_url"])


@router.post(
    "/cancel/{session_id}",
    response_model=CancelResponse,
    responses={**_errors(*_AUTH, 404, 409, 503), **_INVALID_PARAMETERS},
    operation_id="cancel_session",
)
async def cancel_session(session_id: str, service: ServiceDep) -> CancelResponse:
    """Cancel a queued or running analysis and delete its video and partial results."""
    await service.cancel(session_id)
    return CancelResponse(
        sessionId=session_id,
        status=SessionStatus.CANCELLED,
        message="Processing cancelled successfully",
    )


@router.delete(
    "/cleanup/{session_id}",
    response_model=Message,
    responses={**_errors(*_AUTH, 404, 503), **_INVALID_PARAMETERS},
    operation_id="cleanup_session",
)
async def cleanup_session(session_id: str, service: ServiceDep) -> Message:
    """Delete a session: stop its analysis, remove its files, record and results."""
    await service.cleanup(session_id)
    return Message(message="Session cleaned up successfully")


class ArtifactFile(FileResponse):
    """A FileResponse that answers 404 (JSON) when its file has vanished since the lookup (a
    cleanup or an expiry in between), where Starlette's would raise and make it a 500."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            stat_result = await anyio.to_thread.run_sync(os.stat, self.path)
        except FileNotFoundError:
            missing = JSONResponse({"detail": str(ArtifactNotFound())}, status_code=404)
            await missing(scope, receive, send)
            return
        # Given the stat, Starlette does not look again before it sends the headers.
        self.stat_result = stat_result
        self.set_stat_headers(stat_result)
        await super().__call__(scope, receive, send)


@signed_router.get(
    "/artifacts/{session_id}/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "content": {"image/jpeg": {}, "video/mp4": {}},
            "description": "A thumbnail (JPEG) or the highlight reel (MP4)",
        },
        307: {
            "description": "With BLOB_STORE=s3: the file at a presigned bucket URL that "
            "expires in S3_URL_SECONDS"
        },
        **_errors(*_SIGNED_AUTH, 404, 503),
        **_INVALID_PARAMETERS,
    },
    operation_id="get_artifact",
)
def get_artifact(session_id: str, name: str, service: ServiceDep) -> Response:
    """Download a thumbnail or the highlight reel of a session."""
    path = service.artifact(session_id, name)
    if isinstance(path, str):
        # S3 mode: the bucket serves the bytes, through a URL that expires in S3_URL_SECONDS.
        return RedirectResponse(path, status_code=307, headers={"Cache-Control": "no-store"})
    media_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    # Artifacts never change once written: let the browser keep them (privately, under a key:
    # PrivateCacheMiddleware).
    return ArtifactFile(path, media_type=media_type, headers={"Cache-Control": "max-age=3600"})


# -- errors → HTTP, in one place ----------------------------------------------------------------

_STATUS_OF: dict[type[Exception], int] = {
    SessionNotFound: 404,
    ArtifactNotFound: 404,
    SessionNotReady: 400,
    SessionFinished: 409,
    SignatureError: 403,
    UploadStalled: 408,
    UploadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidUpload: 422,
    MalformedUpload: 422,
    QueueFull: 429,
    TooManyUploads: 429,
    ShuttingDown: 503,
    StorageUnavailable: 503,
    StoreUnavailable: 503,
    StorageFull: 507,
    ClientGone: 400,  # nobody receives it: the client has gone
}

# Errors that may be raised before the whole body is read: answering them leaves the rest
# unread, so the connection cannot carry another request (and must not drain a huge body).
_BODY_UNREAD = (UploadError, TooManyUploads, QueueFull, ShuttingDown, UnsupportedMediaType)


def _status_for(exc: Exception) -> int:
    for cls in type(exc).__mro__:
        if cls in _STATUS_OF:
            return _STATUS_OF[cls]
    return 400


async def _domain_error(request: Request, exc: Exception) -> JSONResponse:
    code = _status_for(exc)
    headers = {}
    if isinstance(exc, (QueueFull, TooManyUploads)):
        headers["Retry-After"] = str(exc.retry_after)
    if isinstance(exc, _BODY_UNREAD):
        headers["Connection"] = "close"
    return JSONResponse({"detail": str(exc)}, status_code=code, headers=headers)


async def _client_gone(request: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": "The upload was interrupted"}, status_code=400)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
    return JSONResponse({"detail": f"Invalid request: {problems}"}, status_code=422)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    # A 500 is a bug: log everything, tell the client nothing internal.
    logger.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"detail": "Internal server error"}, status_code=500)


def register_error_handlers(app: FastAPI) -> None:
    """Map every domain error to its HTTP status on `app`."""
    app.add_exception_handler(ServiceError, _domain_error)
    app.add_exception_handler(UploadError, _domain_error)
    app.add_exception_handler(SignatureError, _domain_error)
    app.add_exception_handler(StoreUnavailable, _domain_error)
    app.add_exception_handler(ClientDisconnect, _client_gone)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(Exception, _unexpected)
