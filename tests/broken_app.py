"""The real service with one route broken, for the smoke test to catch: every results request
answers 500. `uvicorn tests.broken_app:app` serves everything else exactly as `app:app` does."""

from __future__ import annotations

from starlette.types import Receive, Scope, Send

from app import create_app

_service = create_app()


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and "/video/results/" in scope["path"]:
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 500, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"detail":"Internal server error"}'})
        return
    await _service(scope, receive, send)
