"""The application's life cycle and configuration: start-up, expiry, shutdown, CORS, settings."""

from __future__ import annotations

import os
import threading
import time
import uuid
from pathlib import Path

import pytest
from pydantic import ValidationError

from config import Settings
from tests.conftest import API, make_client, stored_files, upload, wait_for


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
        wait_for(client, session_id)
        deadline = time.monotonic() + 10
        while client.get(f"{API}/status/{session_id}").status_code != 404:
            assert time.monotonic() < deadline, "the session never expired"
            time.sleep(0.1)
        assert stored_files(settings) == []
        assert client.get(f"{API}/results/{session_id}").status_code == 404


def test_shutdown_cancels_running_work_and_removes_unfinished_files(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", max_workers=1)
    with make_client(settings) as client:
        done = upload(client, clips["short"]).json()["sessionId"]
        wait_for(client, done)
        running = upload(client, clips["long"]).json()["sessionId"]
        upload(client, clips["long"])  # queued behind it
        wait_for(client, running, {"processing"})
        tasks = client.app.state.tasks  # type: ignore[attr-defined]
        started = time.monotonic()
    assert time.monotonic() - started < 3, "shutdown waited for the analysis to finish"
    assert tasks.counts() == {"running": 0, "queued": 0}
    # Only the completed session's artifacts remain.
    assert {p.parent.name for p in stored_files(settings)} == {done}


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


def test_analysis_threads_yield_the_cpu_to_the_event_loop(tmp_path: Path) -> None:
    with make_client(Settings(storage_dir=tmp_path)) as client:
        tasks = client.app.state.tasks  # type: ignore[attr-defined]

        def own_priority() -> int:
            return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

        tasks.submit_task("probe", own_priority)
        assert tasks.wait("probe", timeout=5)
        assert tasks.get_task_status("probe")["result"] >= 10
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) < 10
