"""Structured logs: with LOG_FORMAT=json every line a real server writes is one JSON object (its
own and uvicorn's), the lines carrying a session's id tell that session's whole life, and an
analysis's exception is in the log with its session id, never in an answer."""

from __future__ import annotations

import json
import logging
import re
import signal
import sys
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from config import Settings
from logs import JsonFormatter
from tests.conftest import API, make_client, wait_for
from tests.server import Server
from tests.synthetic import make_video

# FFmpeg inside OpenCV prints its complaints about a broken file from C, straight to stderr
# (e.g. "[mjpeg @ 0x55d0c2a1b000] overread 8"): the one kind of line Python logging cannot
# format. The README says how to silence them (OPENCV_FFMPEG_LOGLEVEL=-8).
FFMPEG_LINE = re.compile(r"\[[\w ,.-]+ @ 0x[0-9a-f]+\] ")


@pytest.fixture
def json_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(
        tmp_path / "storage", tmp_path / "server.log", LOG_FORMAT="json", MAX_WORKERS="1"
    )
    server.start()
    yield server
    server.stop()


def _upload(
    server: Server, path: Path, headers: dict[str, str] | None = None, **form: str
) -> httpx.Response:
    with open(path, "rb") as f:
        return httpx.post(
            f"{server.url}{API}/upload",
            files={"video": (path.name, f)},
            data=form,
            headers=headers,
            timeout=30,
        )


def _entries(log: Path) -> list[dict[str, Any]]:
    """Every line of the log as a JSON object; a line that is neither JSON nor FFmpeg's fails."""
    entries = []
    for line in log.read_text().splitlines():
        if FFMPEG_LINE.match(line):
            continue
        entry = json.loads(line)
        assert isinstance(entry, dict), line
        entries.append(entry)
    return entries


def test_json_lines_tell_a_session_s_whole_life_and_a_failure_s_traceback(
    json_server: Server, clips: dict[str, Path], tmp_path: Path
) -> None:
    response = _upload(
        json_server,
        clips["reps"],
        headers={"X-Request-ID": "upload-42"},
        analysis_type="full",
        params='{"segment_seconds": 1}',
    )
    assert response.status_code == 202
    assert response.headers["x-request-id"] == "upload-42"
    session_id = response.json()["sessionId"]
    assert wait_for(json_server, session_id)["status"] == "completed"
    assert httpx.get(f"{json_server.url}{API}/results/{session_id}").status_code == 200
    assert httpx.delete(f"{json_server.url}{API}/cleanup/{session_id}").status_code == 200

    # A video that opens at upload and breaks half-way through its analysis.
    source = make_video(tmp_path / "source.avi", seconds=8, fourcc="MJPG")
    cut = tmp_path / "cut.avi"
    cut.write_bytes(source.read_bytes()[: source.stat().st_size // 2])
    failing = _upload(json_server, cut, analysis_type="workout").json()["sessionId"]
    status = wait_for(json_server, failing)
    assert status["status"] == "failed"
    results = httpx.get(f"{json_server.url}{API}/results/{failing}")
    assert results.status_code == 400
    for answer in (json.dumps(status), results.text):
        for internal in ("Traceback", "VideoDecodeError", ".py", str(json_server.storage)):
            assert internal not in answer
    # uvicorn re-raises SIGTERM once its shutdown is done.
    assert json_server.terminate() in (0, -signal.SIGTERM)

    entries = _entries(json_server.log)
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
        assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)
    # uvicorn's own lines went through the same formatter, from the first to the last.
    assert entries[0]["logger"].startswith("uvicorn")
    assert "Started server process" in entries[0]["message"]
    assert any(e["message"] == "Application shutdown complete." for e in entries[-3:])

    life = [e for e in entries if e.get("session_id") == session_id]
    events = [e["event"] for e in life if "event" in e]
    assert events == [
        "upload_accepted",
        "analysis_started",
        "analysis_progress",
        "analysis_progress",
        "analysis_progress",
        "analysis_completed",
        "session_cleanup",
    ]
    # One line per milestone passed (25, 50, 75 %), not one per segment.
    progress = [e["progress"] for e in life if e.get("event") == "analysis_progress"]
    assert progress == sorted(progress)
    assert all(m <= p < m + 25 for p, m in zip(progress, (25, 50, 75), strict=True)), progress
    accepted = next(e for e in life if e.get("event") == "upload_accepted")
    assert accepted["request_id"] == "upload-42"
    assert accepted["bytes"] == clips["reps"].stat().st_size
    completed = next(e for e in life if e.get("event") == "analysis_completed")
    assert completed["duration_s"] > 0 and completed["realtime_factor"] > 0
    # The requests that touched it are found by the same search.
    requests = [e["message"] for e in life if e["logger"] == "uvicorn.access"]
    assert any(f"GET {API}/results/{session_id}" in m for m in requests)
    assert any(f"DELETE {API}/cleanup/{session_id}" in m for m in requests)

    failure = [e for e in entries if e.get("session_id") == failing]
    ended = next(e for e in failure if e.get("event") == "analysis_failed")
    assert ended["level"] == "error" and "VideoDecodeError" in ended["error"]
    traceback = next(e for e in failure if "exc_info" in e)
    assert traceback["exc_info"].startswith("Traceback (most recent call last)")
    assert "VideoDecodeError: the video stops at" in traceback["exc_info"]


def test_a_request_id_is_echoed_or_made_up(tmp_path: Path) -> None:
    with make_client(Settings(storage_dir=tmp_path / "storage")) as client:
        given = client.get("/health", headers={"X-Request-ID": "edge-7f3a.1"})
        assert given.headers["x-request-id"] == "edge-7f3a.1"
        made = [client.get("/health").headers["x-request-id"] for _ in range(2)]
        forged = client.get("/health", headers={"X-Request-ID": 'x" "level": "error'})
    assert all(re.fullmatch(r"[0-9a-f]{32}", r) for r in made) and made[0] != made[1]
    assert re.fullmatch(r"[0-9a-f]{32}", forged.headers["x-request-id"])


def test_the_json_formatter_renders_context_extras_and_exceptions() -> None:
    try:
        raise ValueError("bad frame")
    except ValueError:
        record = logging.LogRecord(
            "engine", logging.ERROR, __file__, 1, "failed at %d", (3,), sys.exc_info()
        )
    record.__dict__.update({"session_id": "s-1", "where": Path("/x"), "progress": 50})
    entry = json.loads(JsonFormatter().format(record))
    assert entry["message"] == "failed at 3"
    assert entry["level"] == "error" and entry["logger"] == "engine"
    assert entry["session_id"] == "s-1" and entry["progress"] == 50 and entry["where"] == "/x"
    assert "request_id" not in entry
    assert entry["exc_info"].endswith("ValueError: bad frame")


def test_log_settings_are_read_case_insensitively_and_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LOG_FORMAT", "JSON")
    monkeypatch.setenv("LOG_LEVEL", "debug")
    settings = Settings()
    assert (settings.log_format, settings.log_level) == ("json", "DEBUG")
    monkeypatch.setenv("LOG_FORMAT", "xml")
    with pytest.raises(ValidationError):
        Settings()
