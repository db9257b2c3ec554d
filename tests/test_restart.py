"""Faults and restarts of the real server process: SIGKILL loses nothing, SIGTERM is orderly."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import API, TERMINAL
from tests.server import Server


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[list[Server]]:
    started: list[Server] = []
    yield started
    for server in started:
        server.stop()


def _server(servers: list[Server], tmp_path: Path) -> Server:
    server = Server(tmp_path / "storage", tmp_path / "server.log", MAX_WORKERS="1")
    servers.append(server)
    return server.start()


def _upload(server: Server, path: Path, **form: str) -> str:
    with open(path, "rb") as f:
        response = httpx.post(
            f"{server.url}{API}/upload", files={"video": (path.name, f)}, data=form, timeout=30
        )
    assert response.status_code == 202, response.text
    return str(response.json()["sessionId"])


def _status(server: Server, session_id: str) -> dict:
    return httpx.get(f"{server.url}{API}/status/{session_id}", timeout=5).json()


def _wait(server: Server, session_id: str, statuses: set[str], timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = _status(server, session_id)
        if body["status"] in statuses:
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.05)


def test_sigkill_mid_analysis_loses_nothing(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    done = _upload(first, clips["short"], analysis_type="full")
    _wait(first, done, TERMINAL)
    results_before = httpx.get(f"{first.url}{API}/results/{done}").json()
    running = _upload(first, clips["long"], analysis_type="workout")
    queued = _upload(first, clips["reps"], analysis_type="workout")
    body = _wait(first, running, {"processing"})
    while body["progress"] < 10:
        body = _status(first, running)
    assert _status(first, queued)["status"] == "queued"
    first.kill()

    second = Server(first.storage, first.log, MAX_WORKERS="1")
    servers.append(second)
    second.start()
    # The completed session is served again, with the same data and its thumbnails.
    results_after = httpx.get(f"{second.url}{API}/results/{done}").json()
    assert results_after == results_before
    for highlight in results_after["data"]["highlights"]:
        thumbnail = httpx.get(second.url + highlight["thumbnail_url"])
        assert thumbnail.status_code == 200
    # The interrupted analysis starts over from its saved video and completes, then the queued.
    assert _wait(second, running, TERMINAL)["status"] == "completed"
    assert _wait(second, queued, TERMINAL)["status"] == "completed"
    reps = httpx.get(f"{second.url}{API}/results/{queued}").json()["data"]["workout"]
    assert abs(reps["total_reps"] - 8) <= 1


def test_sigterm_cancels_running_work_and_keeps_the_store_consistent(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    done = _upload(first, clips["short"])
    _wait(first, done, TERMINAL)
    running = _upload(first, clips["long"])
    _wait(first, running, {"processing"})
    started = time.monotonic()
    # uvicorn re-raises the signal once its shutdown is done, so the status is -SIGTERM: what
    # shows an orderly stop is the lifespan finishing.
    assert first.terminate() in (0, -signal.SIGTERM)
    assert time.monotonic() - started < 5, "shutdown waited for the analysis"
    assert "Application shutdown complete" in first.log.read_text()
    assert not (first.storage / running).exists()

    second = Server(first.storage, first.log, MAX_WORKERS="1")
    servers.append(second)
    second.start()
    assert _status(second, done)["status"] == "completed"
    cancelled = _status(second, running)
    assert cancelled["status"] == "cancelled"
    assert "shut down" in cancelled["message"]
    assert second.process is not None
    assert httpx.get(f"{second.url}/health").json()["running"] == 0


def test_sigterm_is_not_held_up_by_open_event_streams(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    server = _server(servers, tmp_path)
    # One worker, four long analyses: a stream on each would hold uvicorn's shutdown until all
    # four had run (about 12 s) but for --timeout-graceful-shutdown 5.
    sessions = [_upload(server, clips["long"]) for _ in range(4)]
    _wait(server, sessions[0], {"processing"})
    streams = [
        threading.Thread(target=_follow, args=(server, session_id), daemon=True)
        for session_id in sessions
    ]
    for stream in streams:
        stream.start()
    time.sleep(0.5)  # every stream open and waiting
    started = time.monotonic()
    server.terminate(timeout=30)
    assert time.monotonic() - started < 7.5, "open event streams held up the shutdown"
    assert "Application shutdown complete" in server.log.read_text()


def _follow(server: Server, session_id: str) -> None:
    try:
        with httpx.stream("GET", f"{server.url}{API}/events/{session_id}", timeout=30) as r:
            for _ in r.iter_lines():
                pass
    except httpx.HTTPError:
        pass  # the server went away: that is the point
