"""The synchronous `/analyze/*` endpoints run through the task manager's own accounting and stop
their analysis when the client goes away.

A client hanging up mid-request needs a real server and a raw socket (the in-process client cannot
disconnect), so the service runs as uvicorn in a subprocess with one worker.
"""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API
from tests.raw_http import multipart, request_head
from tests.server import Server, wait_until


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "storage", tmp_path / "server.log", MAX_WORKERS="1")
    server.env.pop("API_KEY", None)
    yield server.start()
    server.stop()


def health(server: Server) -> dict:
    return httpx.get(f"{server.url}/health", timeout=5).json()


def session_folders(server: Server) -> list[str]:
    return sorted(p.name for p in server.storage.iterdir() if p.is_dir())


def send_synchronous(server: Server, video: Path) -> socket.socket:
    """Send a whole /analyze/workout request and return the open socket, unanswered."""
    body = multipart({}, video.read_bytes())
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(request_head("POST", "/analyze/workout", length=len(body)) + body)
    return sock


def test_a_client_that_hangs_up_mid_analysis_stops_it_and_its_files_go(
    server: Server, clips: dict[str, Path]
) -> None:
    sock = send_synchronous(server, clips["long"])  # about 3 s of analysis on a quiet machine
    try:
        wait_until(lambda: health(server)["running"] == 1, 30, "the analysis started")
        assert len(session_folders(server)) == 1
    finally:
        sock.close()
    hung_up = time.monotonic()
    # The pool is freed when the analysis stops; the request's own clean-up removes the folder
    # just after, in another thread: both within the same deadline.
    wait_until(
        lambda: (h := health(server))["running"] == 0 and h["queued"] == 0,
        3,
        "the pool freed after the client hung up",
    )
    freed = time.monotonic() - hung_up
    wait_until(
        lambda: session_folders(server) == [],
        max(0.0, 3 - freed),
        "the files gone after the client hung up",
    )
    log = server.log.read_text()
    # Stopped, not finished: the worker saw its cancel event, and the service said why.
    assert "stopped after cancellation" in log, log[-3000:]
    assert "stopped: the client went away" in log
    print(f"worker freed {freed:.2f} s after the client hung up")


def test_a_client_that_hangs_up_while_queued_is_dropped_from_the_queue(
    server: Server, clips: dict[str, Path]
) -> None:
    with open(clips["long"], "rb") as f:
        running = httpx.post(f"{server.url}{API}/upload", files={"video": f}, timeout=30)
    session_id = running.json()["sessionId"]
    wait_until(lambda: health(server)["running"] == 1, 30, "the one worker busy")
    sock = send_synchronous(server, clips["short"])
    try:
        wait_until(lambda: health(server)["queued"] == 1, 10, "the synchronous analysis queued")
    finally:
        sock.close()
    hung_up = time.monotonic()
    wait_until(lambda: health(server)["queued"] == 0, 1.5, "the queue emptied after hanging up")
    # Its folder goes just after, in the request's own clean-up: within the same deadline.
    wait_until(
        lambda: session_folders(server) == [session_id],
        max(0.0, 1.5 - (time.monotonic() - hung_up)),
        "only the upload's folder left after hanging up",
    )
    assert "stopped: the client went away" in server.log.read_text()
    # The one worker is still on the upload; once it is cancelled, nothing is left counted.
    assert httpx.post(f"{server.url}{API}/cancel/{session_id}").status_code == 200
    wait_until(
        lambda: (h := health(server))["running"] == 0 and h["queued"] == 0, 3, "the pool idle"
    )
    assert session_folders(server) == []
    # And the next synchronous request is served in full.
    with open(clips["short"], "rb") as f:
        answer = httpx.post(f"{server.url}/analyze/workout", files={"video": f}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert health(server)["running"] == 0 and health(server)["queued"] == 0
