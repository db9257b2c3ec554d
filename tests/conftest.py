"""Fixtures shared by the service tests: settings on a temporary folder, a client whose lifespan
runs, and real clips written by OpenCV once per test run."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from analysis import models
from app import create_app
from config import Settings
from tests.synthetic import make_video

API = "/api/v1/video"
TERMINAL = {"completed", "failed", "cancelled"}


@pytest.fixture(scope="session")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Real videos, written once: short ones for the happy paths, a long one to cancel."""
    folder = tmp_path_factory.mktemp("clips")
    return {
        # 8 s of a block bobbing once a second: 8 repetitions.
        "reps": make_video(folder / "reps.mp4", seconds=8, period=1.0),
        "short": make_video(folder / "short.mp4", seconds=3, period=1.0),
        # Long enough (about 3 s of analysis) to be caught and cancelled mid-way.
        "long": make_video(folder / "long.mp4", seconds=120, period=1.5),
    }


@pytest.fixture(scope="session")
def demo() -> Path:
    """Real footage: PyPI sports2d's demo clip (`make footage`), checked by its sha256. A man on
    a box does two jumping jacks (arms up at frames ~24 and ~58), then walks and jumps down,
    while a woman walks past behind him."""
    path = models.footage_dir() / "demo.mp4"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make footage`")
    assert models.sha256_of(path) == models.FOOTAGE["demo.mp4"].sha256
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(storage_dir=tmp_path / "storage", max_workers=2)


def make_client(settings: Settings) -> TestClient:
    return TestClient(create_app(settings))


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with make_client(settings) as c:
        yield c


def upload(client: TestClient, path: Path, name: str | None = None, **form: str) -> Any:
    """POST a file to the upload endpoint as curl -F would (octet-stream)."""
    with open(path, "rb") as f:
        files = {"video": (name or path.name, f, "application/octet-stream")}
        return client.post(f"{API}/upload", files=files, data=form)


def follow(
    client: TestClient,
    session_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 60,
) -> list[dict[str, Any]]:
    """Poll the status endpoint until `until(body)` holds; every body seen, in order. Fails
    after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        seen.append(client.get(f"{API}/status/{session_id}").json())
        if until(seen[-1]):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"session stuck in {seen[-1]}")
        time.sleep(0.01)


def wait_for(
    client: TestClient, session_id: str, statuses: set[str] = TERMINAL, timeout: float = 60
) -> dict[str, Any]:
    """Poll the status endpoint until the session is in one of `statuses`."""
    return follow(client, session_id, lambda body: body.get("status") in statuses, timeout)[-1]


def running_and_queued(client: TestClient, clips: dict[str, Path]) -> tuple[str, str]:
    """With one worker: a long analysis under way and a short one waiting behind it."""
    running = upload(client, clips["long"]).json()["sessionId"]
    queued = upload(client, clips["short"]).json()["sessionId"]
    wait_for(client, running, {"processing"})
    return running, queued


def join_all(threads: Iterable[threading.Thread], timeout: float = 60) -> None:
    """Join every thread; fail (instead of hanging) if one still runs after `timeout` s."""
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
        assert not thread.is_alive(), f"{thread.name} still running after {timeout} s"


def stored_files(settings: Settings) -> list[Path]:
    """Every file of every session under STORAGE_DIR (the session database aside)."""
    storage = Path(settings.storage_dir)
    return sorted(p for p in storage.rglob("*") if p.is_file() and p.parent != storage)
