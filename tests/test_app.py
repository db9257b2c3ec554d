"""The application's life cycle and configuration: start-up, expiry, shutdown, CORS, settings."""

from __future__ import annotations

import os
import sqlite3
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from config import ConfigurationError, Settings, load_settings
from session_manager import SessionManager, SessionStatus
from tests.conftest import API, make_client, running_and_queued, stored_files, upload, wait_for
from tests.server import run_refused


def test_settings_come_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MAX_WORKERS", "3")
    monkeypatch.setenv("MAX_UPLOAD_MB", "7")
    monkeypatch.setenv("STORAGE_DIR", str(tmp_path))
    monkeypatch.setenv("SESSION_TTL_HOURS", "0.5")
    monkeypatch.setenv("CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("PORT", "9000")
    settings = Settings()
    assert settings.max_workers == 3
    assert settings.max_upload_bytes == 7 * 1024 * 1024
    assert settings.storage_dir == tmp_path
    assert settings.session_ttl_seconds == 1800
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.port == 9000


def test_defaults_match_the_specification(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MAX_WORKERS", "MAX_UPLOAD_MB", "SESSION_TTL_HOURS", "MAX_QUEUED"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.max_workers == 2
    assert settings.max_upload_mb == 500
    assert settings.session_ttl_hours == 24
    assert settings.max_queued == 20


@pytest.mark.parametrize(
    ("name", "value"), [("MAX_WORKERS", "0"), ("MAX_UPLOAD_MB", "-1"), ("PORT", "70000")]
)
def test_out_of_range_settings_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ValidationError):
        Settings()


def test_start_up_removes_orphaned_session_folders_only(tmp_path: Path) -> None:
    storage = tmp_path / "storage"
    orphan = storage / str(uuid.uuid4())
    orphan.mkdir(parents=True)
    (orphan / "video.mp4").write_bytes(b"left over from a crash")
    unrelated = storage / "keep-me"
    unrelated.mkdir()
    with make_client(Settings(storage_dir=storage)):
        assert not orphan.exists()
        assert unrelated.exists()


def test_expired_sessions_are_swept_with_their_files(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(
        storage_dir=tmp_path / "storage",
        session_ttl_hours=1 / 3600,  # one second
        cleanup_interval_seconds=0.2,
    )
    with make_client(settings) as client:
        session_id = upload(client, clips["short"]).json()["sessionId"]
        # (Not waiting for "completed" first: on a loaded machine the session may complete and
        # expire between two polls.)
        # An analysis the sweep catches still running stops, then removes what it wrote.
        deadline = time.monotonic() + 60
        while (
            client.get(f"{API}/status/{session_id}").status_code != 404
            or stored_files(settings) != []
        ):
            assert time.monotonic() < deadline, f"not swept: {stored_files(settings)}"
            time.sleep(0.1)
        assert client.get(f"{API}/results/{session_id}").status_code == 404


def test_shutdown_hands_running_and_queued_work_back_to_the_next_start(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", max_workers=1)
    with make_client(settings) as client:
        done = upload(client, clips["short"]).json()["sessionId"]
        wait_for(client, done)
        running, queued = running_and_queued(client, clips)
        tasks = client.app.state.tasks  # type: ignore[attr-defined]
        started = time.monotonic()
    assert time.monotonic() - started < 3, "shutdown waited for the analysis to finish"
    assert tasks.counts() == {"running": 0, "queued": 0}
    # Stopped for the shutdown: neither cancelled nor failed, in the pool or in the store.
    assert tasks.get_task_status(running)["status"] == "interrupted"
    stored = SessionManager(Path(settings.storage_dir) / "sessions.sqlite3")
    for session_id in (running, queued):
        session = stored.get_session(session_id)
        assert session is not None
        assert session.status is SessionStatus.QUEUED
        assert session.message == "Queued again after a server restart"
        assert session.interruptions == 0  # a shutdown is not a crash
        assert Path(session.video_path).is_file()
    stored.close()

    with make_client(settings) as client:
        for session_id in (running, queued):
            assert wait_for(client, session_id)["status"] == "completed"
        assert client.get(f"{API}/results/{running}").status_code == 200
    assert {p.parent.name for p in stored_files(settings)} == {done, running, queued}
    assert all(p.suffix == ".jpg" for p in stored_files(settings))


def test_cors_allows_the_configured_origins(tmp_path: Path) -> None:
    settings = Settings(storage_dir=tmp_path, cors_origins=["https://app.example"])
    with make_client(settings) as client:
        allowed = client.options(
            f"{API}/status/x",
            headers={"Origin": "https://app.example", "Access-Control-Request-Method": "GET"},
        )
        assert allowed.headers["access-control-allow-origin"] == "https://app.example"
        refused = client.get("/health", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in refused.headers


def test_a_bad_setting_stops_start_up_with_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "STORAGE_DIR": str(tmp_path / "storage"), "MAX_WORKERS": "0"}
    code, output = run_refused(env, tmp_path / "server.log")
    assert code != 0, output
    assert "configuration error: MAX_WORKERS must be at least 1 (got 0)" in output.splitlines()
    assert "Traceback" not in output


@pytest.mark.parametrize(
    ("env", "line"),
    [
        ({"PORT": "70000"}, "PORT must be at most 65535 (got 70000)"),
        ({"MAX_UPLOAD_MB": "lots"}, "MAX_UPLOAD_MB must be a whole number (got lots)"),
        ({"SESSION_TTL_HOURS": "0"}, "SESSION_TTL_HOURS must be greater than 0 (got 0)"),
        (
            {"MAX_WORKERS": "0", "MAX_QUEUED": "-1"},
            "MAX_WORKERS must be at least 1 (got 0); MAX_QUEUED must be at least 0 (got -1)",
        ),
    ],
)
def test_a_configuration_error_names_the_variable_and_the_rule(
    monkeypatch: pytest.MonkeyPatch, env: dict[str, str], line: str
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(ConfigurationError) as error:
        load_settings()
    assert str(error.value) == line


def test_a_database_that_refuses_writes_makes_health_degraded_until_it_recovers(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage")
    db = Path(settings.storage_dir) / "sessions.sqlite3"
    with make_client(settings) as client:
        done = upload(client, clips["short"]).json()["sessionId"]
        wait_for(client, done)
        assert client.get("/health").json()["status"] == "healthy"
        # Another connection holds the write lock (a backup tool, a stray sqlite3 shell): a
        # real fault of the database, not a mock of the store.
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")
        try:
            assert client.delete(f"{API}/cleanup/{done}").status_code == 200
            assert client.get("/health").json()["status"] == "degraded"
            # A new session could not be saved: refused before its body is read.
            refused = upload(client, clips["short"])
            assert refused.status_code == 503, refused.text
            assert "cannot save new sessions" in refused.json()["detail"]
            assert stored_files(settings) == []
        finally:
            blocker.rollback()
            blocker.close()
        deadline = time.monotonic() + 10
        while client.get("/health").json()["status"] != "healthy":
            assert time.monotonic() < deadline, "health never recovered"
            time.sleep(0.05)
        # The change made during the fault was kept and written once it cleared.
        with sqlite3.connect(db) as reader:
            assert reader.execute("SELECT id FROM sessions").fetchall() == []
        assert upload(client, clips["short"]).status_code == 202


def test_uploads_are_refused_with_503_once_shutdown_has_begun(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage")
    with make_client(settings) as client:
        # What the lifespan runs on SIGTERM; requests still in flight then get this answer.
        client.app.state.service.shutdown()  # type: ignore[attr-defined]
        refused = upload(client, clips["short"])
        assert refused.status_code == 503
        assert refused.json() == {"detail": "The server is shutting down; try again shortly"}
        assert stored_files(settings) == []


def test_a_session_whose_video_vanished_fails_at_start_and_leaves_nothing(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", max_workers=1)
    with make_client(settings) as client:
        running, queued = running_and_queued(client, clips)
    folder = Path(settings.storage_dir) / queued
    for video in folder.glob("video.*"):
        video.unlink()
    (folder / "leftover.jpg").write_bytes(b"partial")
    with make_client(settings) as client:
        status = client.get(f"{API}/status/{queued}").json()
        assert status["status"] == "failed"
        assert "lost" in status["error"]
        assert not folder.exists()
        assert wait_for(client, running)["status"] == "completed"
