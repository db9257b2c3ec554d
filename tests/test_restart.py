"""Faults and restarts of the real server process: SIGKILL loses nothing it had answered for,
SIGTERM hands the work to the next start, a video that keeps killing the process is given up on,
and one storage folder has one server."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ANALYSIS_DEADLINE, API, status_of, wait_for
from tests.server import Server, run_refused


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


def _restart(servers: list[Server], previous: Server) -> Server:
    """A new server process on the same STORAGE_DIR (and log), as after a redeploy."""
    server = Server(previous.storage, previous.log, MAX_WORKERS="1")
    servers.append(server)
    return server.start()


def _analysing(server: Server, session_id: str, progress: int = 0) -> dict:
    """Wait until the engine itself reports on the session (so the `processing` status is
    committed: the service commits it before the engine starts), at `progress` or more."""
    deadline = time.monotonic() + ANALYSIS_DEADLINE
    while True:
        body = status_of(server, session_id)
        if (
            body["status"] == "processing"
            and body["message"] != "Starting analysis"
            and body["progress"] >= progress
        ):
            return body
        assert body["status"] in {"queued", "processing"}, body
        assert time.monotonic() < deadline, body
        time.sleep(0.02)


def test_sigkill_mid_analysis_loses_nothing(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    done = _upload(first, clips["short"], analysis_type="full")
    wait_for(first, done)
    results_before = httpx.get(f"{first.url}{API}/results/{done}").json()
    running = _upload(first, clips["long"])  # highlights: 4 s to redo, the workout 9 s
    queued = _upload(first, clips["reps"], analysis_type="workout")
    _analysing(first, running, progress=10)
    assert status_of(first, queued)["status"] == "queued"
    first.kill()

    second = _restart(servers, first)
    # The completed session is served again, with the same data and its thumbnails.
    results_after = httpx.get(f"{second.url}{API}/results/{done}").json()
    assert results_after == results_before
    for highlight in results_after["data"]["highlights"]:
        thumbnail = httpx.get(second.url + highlight["thumbnail_url"])
        assert thumbnail.status_code == 200
    # The interrupted analysis starts over from its saved video and completes, then the queued.
    assert wait_for(second, running)["status"] == "completed"
    assert wait_for(second, queued)["status"] == "completed"
    reps = httpx.get(f"{second.url}{API}/results/{queued}").json()["data"]["workout"]
    assert abs(reps["total_reps"] - 8) <= 1


def test_sigterm_mid_analysis_hands_the_work_to_the_next_start(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    done = _upload(first, clips["short"])
    wait_for(first, done)
    running = _upload(first, clips["long"])  # highlights: 4 s to redo, the workout 9 s
    queued = _upload(first, clips["reps"], analysis_type="workout")
    before = _analysing(first, running, progress=10)
    assert status_of(first, queued)["status"] == "queued"
    started = time.monotonic()
    # uvicorn re-raises the signal once its shutdown is done, so the process ends "killed by
    # SIGTERM" (143 in a shell), its status after an orderly stop; a crash would be anything else.
    assert first.terminate() == -signal.SIGTERM
    assert time.monotonic() - started < 5, "shutdown took longer than the graceful timeout"
    log = first.log.read_text()
    assert "Application shutdown complete" in log
    assert "handed 2 session(s) back" in log
    # A stop for the shutdown is not a cancel or a failure, not even in the log.
    assert "Traceback" not in log
    assert f"task {running} failed" not in log and "cancellation" not in log
    for session_id in (running, queued):
        assert any((first.storage / session_id).glob("video.*")), "the video was not kept"

    second = _restart(servers, first)
    assert status_of(second, done)["status"] == "completed"
    resumed = status_of(second, running)
    assert resumed["status"] in {"queued", "processing"}
    assert resumed["progress"] >= before["progress"], "progress went backwards"
    assert wait_for(second, running)["status"] == "completed"
    assert wait_for(second, queued)["status"] == "completed"
    reps = httpx.get(f"{second.url}{API}/results/{queued}").json()["data"]["workout"]
    assert abs(reps["total_reps"] - 8) <= 1
    assert httpx.get(f"{second.url}{API}/results/{running}").status_code == 200
    # A shutdown does not count towards the limit of interrupted analyses: a second one and
    # a third start later, the session is served as before.
    assert second.terminate() == -signal.SIGTERM
    third = _restart(servers, second)
    assert status_of(third, running)["status"] == "completed"


def test_a_session_interrupted_by_two_crashes_fails_on_the_third_start(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    doomed = _upload(first, clips["long"], analysis_type="workout")
    _analysing(first, doomed)
    first.kill()

    second = _restart(servers, first)
    # The first crash is forgiven: the analysis starts over from the saved video.
    _analysing(second, doomed)
    second.kill()

    third = _restart(servers, second)
    status = status_of(third, doomed)
    assert status["status"] == "failed"
    assert status["error"] == (
        "The analysis was interrupted twice (the server stopped while analysing this video); "
        "upload it again or contact support"
    )
    assert not (third.storage / doomed).exists(), "the video of the failed session was kept"
    assert httpx.get(f"{third.url}/health").json()["running"] == 0
    # The service itself is fine: the next video is analysed.
    after = _upload(third, clips["short"])
    assert wait_for(third, after)["status"] == "completed"


def test_a_session_accepted_just_before_a_crash_is_there_after_restart(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    busy = _upload(first, clips["long"])  # keeps the one worker busy: the rest stay queued
    accepted = [_upload(first, clips["short"]) for _ in range(3)]
    first.kill()  # the instant the last 202 arrived

    second = _restart(servers, first)
    for session_id in (busy, *accepted):
        assert status_of(second, session_id)["status"] in {"queued", "processing"}
    for session_id in accepted:
        assert wait_for(second, session_id)["status"] == "completed"


def test_a_second_server_on_the_same_storage_refuses_to_start(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    first = _server(servers, tmp_path)
    running = _upload(first, clips["long"])
    wait_for(first, running, {"processing"})
    code, output = run_refused(first.env, tmp_path / "second.log")
    assert code != 0, output
    assert first.process is not None
    expected = (
        f"STORAGE_DIR {first.storage.resolve()} is in use by another server "
        f"(pid {first.process.pid}); give each server its own STORAGE_DIR"
    )
    assert [line for line in output.splitlines() if expected in line], output
    assert "Traceback" not in output
    # The first server never noticed: its analysis runs on and completes.
    assert wait_for(first, running)["status"] == "completed"
    # Once it has stopped, the folder is free again.
    first.terminate()
    assert status_of(_restart(servers, first), running)["status"] == "completed"


def test_sigterm_is_not_held_up_by_open_event_streams(
    servers: list[Server], tmp_path: Path, clips: dict[str, Path]
) -> None:
    server = _server(servers, tmp_path)
    # One worker, four long analyses: a stream on each would hold uvicorn's shutdown until all
    # four had run (about 12 s) but for --timeout-graceful-shutdown 5.
    sessions = [_upload(server, clips["long"]) for _ in range(4)]
    wait_for(server, sessions[0], {"processing"})
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
    # Heartbeats keep a stream alive past any read timeout: the deadline is checked per line.
    deadline = time.monotonic() + 60
    try:
        with httpx.stream("GET", f"{server.url}{API}/events/{session_id}", timeout=30) as r:
            for _ in r.iter_lines():
                if time.monotonic() > deadline:
                    return
    except httpx.HTTPError:
        pass  # the server went away: that is the point
