"""Fixtures shared by the service tests: settings on a temporary folder, a client whose lifespan
runs, and real clips written by OpenCV once per test run."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path, PurePath, PurePosixPath
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from analysis import models
from app import create_app
from blob_store import S3BlobStore
from config import Settings
from local_cluster import Cluster, bucket_keys
from tests.server import Server
from tests.synthetic import make_video

API = "/api/v1/video"
TERMINAL = {"completed", "failed", "cancelled"}
ANALYSIS_DEADLINE = 120.0
"""Seconds a test waits for an analysis before it fails. An analysis takes seconds, but it runs
at idle priority (engine_process.py), and `make test` runs two test files at once on two cores:
while the other one renders and analyses people at normal priority for up to a minute, it waits."""


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Give each operation of the schema-driven fuzz test (tests/test_fuzz.py) a node id of its
    own. Schemathesis 4.32 names its items `test[METHOD /path]` but builds them with the bare
    test name as `originalname`, from which pytest 9 makes the node id, so all ten share one.
    Run alone, each still runs; `make test`'s workers (pytest-xdist, `--dist loadfile`) hand
    out tests by node id and would run only the first of them, so a shared id stops the run."""
    for item in items:
        label = getattr(item, "operation_label", None)
        bare = f"{getattr(item.parent, 'nodeid', '')}::{getattr(item, 'originalname', '')}"
        if label and item.nodeid == bare:
            item._id = item.id.with_params(label)  # pytest's NodeId, with the params it lacked
    shared = sorted(nodeid for nodeid, n in Counter(i.nodeid for i in items).items() if n > 1)
    if shared:
        raise pytest.UsageError(f"tests that share a node id (only one would run): {shared}")


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


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """redis-server, an S3 server and one RQ worker, shared by the contract tests' distributed
    runs (one worker, as `max_workers=1` in the one-process runs; each test starts clean)."""
    started = Cluster(tmp_path_factory.mktemp("cluster"), workers=1)
    try:
        yield started.start()
    finally:
        started.stop()


@pytest.fixture
def mode() -> str:
    """Which deployment serves the test: "threads" (one process) unless a test module
    parametrizes it with "rq" too (see tests/test_api.py)."""
    return "threads"


@pytest.fixture
def make_settings(
    mode: str, tmp_path: Path, request: pytest.FixtureRequest
) -> Callable[..., Settings]:
    """Settings of the test's mode, on `tmp_path`; keyword arguments override fields. In "rq"
    mode, analyses run in the session's real RQ worker, and the test leaves nothing there."""
    storage = tmp_path / "storage"
    if mode == "threads":
        return lambda **overrides: Settings(**{"storage_dir": storage, **overrides})
    shared: Cluster = request.getfixturevalue("cluster")
    shared.reset()
    request.addfinalizer(shared.reset)
    return lambda **overrides: shared.settings(storage, **overrides)


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(max_workers=2)


class ClusterClient(TestClient):
    """A TestClient that, like a browser, follows a redirect to the S3 server (an artifact's
    presigned URL) over the network, where a TestClient would ask the app again."""

    def request(self, method: str, url: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        kwargs["follow_redirects"] = False
        response = super().request(method, url, **kwargs)
        location = response.headers.get("location", "")
        if response.status_code == 307 and location.startswith("http://127.0.0.1"):
            return httpx.request(method, location, timeout=30)
        return response


def make_client(settings: Settings) -> TestClient:
    if settings.distributed:
        return ClusterClient(create_app(settings))
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


def status_of(source: TestClient | Server, session_id: str) -> dict[str, Any]:
    """The status endpoint's answer about a session, from an in-process client or a server."""
    if isinstance(source, Server):
        return dict(httpx.get(f"{source.url}{API}/status/{session_id}", timeout=10).json())
    return dict(source.get(f"{API}/status/{session_id}").json())


def follow(
    source: TestClient | Server,
    session_id: str,
    until: Callable[[dict[str, Any]], bool],
    timeout: float = ANALYSIS_DEADLINE,
) -> list[dict[str, Any]]:
    """Poll the status endpoint (of a client's app or of a server) until `until(body)` holds;
    every body seen, in order. Fails after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    seen: list[dict[str, Any]] = []
    while True:
        seen.append(status_of(source, session_id))
        if until(seen[-1]):
            return seen
        if time.monotonic() > deadline:
            raise AssertionError(f"session stuck in {seen[-1]}")
        # 20 polls a second. Every 10 ms, the polls took the CPU from the analysis they wait
        # for, which runs at idle priority: test_api.py and test_app.py took 90 s (49 s of CPU)
        # then, 78 s (35 s) now.
        time.sleep(0.05)


def wait_for(
    source: TestClient | Server,
    session_id: str,
    statuses: set[str] = TERMINAL,
    timeout: float = ANALYSIS_DEADLINE,
) -> dict[str, Any]:
    """Poll the status endpoint until the session is in one of `statuses`."""
    return follow(source, session_id, lambda body: body.get("status") in statuses, timeout)[-1]


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


def stored_files(settings: Settings) -> list[PurePath]:
    """Every file of every session: under STORAGE_DIR (the session database aside) and, with
    BLOB_STORE=s3, in the bucket."""
    storage = Path(settings.storage_dir)
    files: list[PurePath] = [p for p in storage.rglob("*") if p.is_file() and p.parent != storage]
    if settings.blob_store == "s3":
        files += [
            PurePosixPath(key) for key in bucket_keys(S3BlobStore.from_settings(settings).client)
        ]
    return sorted(files, key=str)


def remove_stored(settings: Settings, session_id: str, name: str) -> None:
    """Delete one stored file of a session behind the service's back."""
    if settings.blob_store == "s3":
        S3BlobStore.from_settings(settings).delete(session_id, name)
    else:
        (Path(settings.storage_dir) / session_id / name).unlink()
