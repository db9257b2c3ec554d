"""The Server-Sent Events stream of a session: `GET /api/v1/video/events/{id}`.

Every test runs against the one-process service and against the distributed one (the stream
served by an in-process API, the analysis run by a real RQ worker process).

Real clips are uploaded and analysed; where a test needs a session that holds still (to see a
heartbeat, or to clean it up mid-stream), it creates one in the real session store and never
submits it, so nothing changes until the test says so.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

import async_api
from config import Settings
from session_manager import SessionStatus
from tests.conftest import API, make_client, upload

EVENTS = f"{API}/events"
STATUS_ORDER = ["queued", "processing", "completed"]


@dataclass
class Event:
    """One parsed SSE block: its event name, its data (JSON-decoded) and its comments."""

    event: str = "message"
    data: dict | None = None
    comments: list[str] = field(default_factory=list)


@pytest.fixture(params=["threads", "rq"])
def mode(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(autouse=True)
def frequent_heartbeats(monkeypatch: pytest.MonkeyPatch) -> None:
    # A stream that fails to end still sends a line every half second, so read_events gets to
    # check its deadline instead of waiting for a line that never comes.
    monkeypatch.setattr(async_api, "EVENTS_HEARTBEAT_SECONDS", 0.5)


def read_events(response: httpx.Response, timeout: float = 30.0) -> Iterator[Event]:
    """Parse a text/event-stream body block by block, as a browser's EventSource does; fail
    once `timeout` seconds have passed (checked at every line: heartbeats included)."""
    deadline = time.monotonic() + timeout
    current = Event()
    for line in response.iter_lines():
        assert time.monotonic() < deadline, f"the stream was still open after {timeout} s"
        if line == "":
            yield current
            current = Event()
        elif line.startswith(":"):
            current.comments.append(line[1:].strip())
        elif line.startswith("event:"):
            current.event = line.removeprefix("event:").strip()
        elif line.startswith("data:"):
            current.data = json.loads(line.removeprefix("data:").strip())


def idle_session(client: TestClient) -> str:
    """A queued session in the real store that no worker will ever pick up."""
    return client.app.state.sessions.create_session("/nonexistent.mp4", "workout", {})


@contextmanager
def watchdog(client: TestClient, session_id: str, seconds: float) -> Iterator[None]:
    """Delete the session after `seconds`, so a stream that fails to end fails the test (with a
    `gone` event) instead of hanging it."""
    timer = threading.Timer(seconds, client.app.state.sessions.delete_session, [session_id])
    timer.start()
    try:
        yield
    finally:
        timer.cancel()


def test_events_of_unknown_session_is_404(client: TestClient) -> None:
    response = client.get(f"{EVENTS}/no-such-session")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"detail": "Session not found"}


def test_events_follow_an_analysis_in_order_and_end_when_it_completes(
    client: TestClient, clips: dict[str, Path]
) -> None:
    # The long clip takes seconds to analyse: many progress changes to see, on any machine.
    answer = upload(client, clips["long"], analysis_type="full")
    assert answer.status_code == 202
    session_id = answer.json()["sessionId"]

    with (
        watchdog(client, session_id, 30),
        client.stream("GET", f"{EVENTS}/{session_id}") as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        # The generator returning is what ends this loop: the stream closes by itself.
        events = [e for e in read_events(response) if e.data is not None]

    statuses = [e.data["status"] for e in events]
    progress = [e.data["progress"] for e in events]
    assert statuses[-1] == "completed" and progress[-1] == 100
    assert len(events) >= 5, f"expected progress along the way, got {statuses}"
    assert progress == sorted(progress), f"progress went backwards: {progress}"
    assert [STATUS_ORDER.index(s) for s in statuses] == sorted(
        STATUS_ORDER.index(s) for s in statuses
    )
    # One event per change: no two consecutive events carry the same status and progress.
    pairs = list(zip(statuses, progress, strict=True))
    assert all(a != b for a, b in zip(pairs, pairs[1:], strict=False))
    # The data is the status endpoint's JSON, field for field.
    final = client.get(f"{API}/status/{session_id}").json()
    assert events[-1].data == final


def test_heartbeat_is_sent_while_nothing_changes(
    client: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(async_api, "EVENTS_HEARTBEAT_SECONDS", 0.2)
    session_id = idle_session(client)
    blocks: list[Event] = []
    started = time.monotonic()
    with (
        watchdog(client, session_id, 5),
        client.stream("GET", f"{EVENTS}/{session_id}") as response,
    ):
        for event in read_events(response):
            blocks.append(event)
            if sum("heartbeat" in e.comments for e in blocks) == 2:
                client.app.state.sessions.update_session(session_id, status=SessionStatus.CANCELLED)
    elapsed = time.monotonic() - started

    assert blocks[0].data is not None and blocks[0].data["status"] == "queued"
    heartbeats = [e for e in blocks if "heartbeat" in e.comments]
    assert len(heartbeats) == 2 and all(e.data is None for e in heartbeats)
    assert blocks[-1].data is not None and blocks[-1].data["status"] == "cancelled"
    # Two heartbeats 0.2 s apart, not one per poll and not 15 s apart.
    assert 0.35 < elapsed < 3.0


def test_stream_ends_with_gone_when_the_session_is_cleaned_up(client: TestClient) -> None:
    session_id = idle_session(client)
    with client.stream("GET", f"{EVENTS}/{session_id}") as response:
        events = []
        for event in read_events(response):
            events.append(event)
            if len(events) == 1:
                assert client.delete(f"{API}/cleanup/{session_id}").status_code == 200
    assert events[0].data is not None and events[0].data["status"] == "queued"
    assert events[-1].event == "gone"
    assert events[-1].data == {"detail": "Session not found"}


def test_stream_stops_when_the_client_disconnects(
    client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="async_api")
    session_id = idle_session(client)
    with client.stream("GET", f"{EVENTS}/{session_id}") as response:
        first = next(read_events(response))
        assert first.data is not None
    # Closing the response disconnects; the session never changed, so only the disconnect can
    # have ended the stream.
    deadline = time.monotonic() + 2.0
    closed = f"event stream of session {session_id} closed"
    while closed not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert closed in caplog.text
    assert client.app.state.sessions.get_session(session_id).status == SessionStatus.QUEUED


def test_events_need_the_api_key_when_one_is_set(make_settings: Callable[..., Settings]) -> None:
    with make_client(make_settings(api_key="s3cret")) as c:
        session_id = idle_session(c)
        assert c.get(f"{EVENTS}/{session_id}").status_code == 401
        with c.stream("GET", f"{EVENTS}/{session_id}", headers={"X-API-Key": "s3cret"}) as response:
            assert response.status_code == 200
            assert next(read_events(response)).data["status"] == "queued"


def test_events_are_documented_as_status_events_or_a_gone_event(client: TestClient) -> None:
    operation = client.get("/openapi.json").json()["paths"][f"{EVENTS}/{{session_id}}"]["get"]
    item = operation["responses"]["200"]["content"]["text/event-stream"]["itemSchema"]
    status, gone = item["oneOf"]
    assert status["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/StatusResponse"
    }
    assert "event" not in status["required"]
    assert gone["properties"]["event"] == {"const": "gone"}
    assert gone["properties"]["data"]["contentSchema"] == {
        "$ref": "#/components/schemas/ErrorResponse"
    }
    assert set(gone["required"]) == {"event", "data"}
    assert "application/json" in operation["responses"]["404"]["content"]
