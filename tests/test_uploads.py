"""Uploads cannot be used to exhaust the server: bodies at once, stalled bodies, bodies that end
early or go on after their form, the disk's free space, and the length of the video.

Most cases need a real server (uvicorn in a subprocess) and raw bytes on a socket: only there can
a client stall, hang up, or send more than its form; the in-process client cannot.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from config import Settings
from tests.conftest import API, make_client, stored_files, upload
from tests.raw_http import chunked, exchange, multipart, request_head
from tests.server import Server, wait_until
from tests.synthetic import make_video

MiB = 1024 * 1024
# The start of a real MP4 (an ftyp box), so the first bytes pass as a video container.
MP4_HEAD = b"\x00\x00\x00\x18ftypmp42" + bytes(1000)
PART_HEAD = (
    b'--b0undary\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n'
    b"Content-Type: application/octet-stream\r\n\r\n"
)


def leftovers(storage: Path) -> list[Path]:
    """Session folders and anything in them (files at the top, like the database, aside)."""
    return sorted(p for p in storage.rglob("*") if p.is_dir() or p.parent != storage)


def session_folders(storage: Path) -> list[Path]:
    return [p for p in storage.iterdir() if p.is_dir()]


def zeros(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    for _ in range(total // size):
        yield bytes(size)


StartServer = Callable[..., Server]


@pytest.fixture
def server_with(tmp_path: Path) -> Iterator[StartServer]:
    """Start a real server with the given environment; stopped at the end of the test."""
    servers: list[Server] = []

    def start(**env: str) -> Server:
        server = Server(tmp_path / "storage", tmp_path / "server.log", **env)
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


# -- bodies at once ------------------------------------------------------------------------------


def test_more_uploads_at_once_than_allowed_get_429_before_their_bodies_are_read(
    server_with: StartServer, clips: dict[str, Path]
) -> None:
    server = server_with(MAX_CONCURRENT_UPLOADS="2")
    size = 100 * MiB
    held = []
    for _ in range(2):  # two uploads that take their time: they hold both places
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
        sock.sendall(request_head("POST", f"{API}/upload", length=size) + PART_HEAD + MP4_HEAD)
        held.append(sock)
    try:
        wait_until(lambda: len(session_folders(server.storage)) == 2, 10, "two uploads under way")
        for path in (f"{API}/upload", "/analyze/workout"):  # one count for both kinds
            started = time.monotonic()
            sent, answer = exchange(
                server.port, request_head("POST", path, length=size), zeros(size)
            )
            assert answer.status == 429, answer
            assert int(answer.headers["retry-after"]) > 0
            assert "Too many uploads" in answer.json()["detail"]
            assert answer.closed, "the unread body must not keep the connection"
            assert sent < 20 * MiB, f"{sent} bytes of a refused body were read"
            assert time.monotonic() - started < 5
            # Refused before its folder was made: only the two held uploads have one.
            assert len(session_folders(server.storage)) == 2
    finally:
        for sock in held:
            sock.close()
    # Hanging up frees the places and removes what the two had written.
    wait_until(lambda: leftovers(server.storage) == [], 10, "the hung-up uploads removed")
    with open(clips["short"], "rb") as f:
        accepted = httpx.post(f"{server.url}{API}/upload", files={"video": f}, timeout=30)
    assert accepted.status_code == 202, accepted.text


# -- stalled bodies -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sent_before_stalling", [b"", PART_HEAD + MP4_HEAD], ids=["nothing", "part of the file"]
)
def test_an_upload_that_stalls_is_cut_off_with_408_and_leaves_nothing(
    server_with: StartServer, sent_before_stalling: bytes
) -> None:
    server = server_with(UPLOAD_IDLE_SECONDS="1")
    started = time.monotonic()
    head = request_head("POST", f"{API}/upload", length=10 * MiB)
    _, answer = exchange(server.port, head, [sent_before_stalling] if sent_before_stalling else [])
    elapsed = time.monotonic() - started
    assert answer.status == 408, answer
    assert answer.json() == {"detail": "The upload stalled: nothing arrived for 1 seconds"}
    assert answer.closed
    assert 0.9 < elapsed < 10, f"cut off after {elapsed:.1f} s"
    assert leftovers(server.storage) == []
    assert httpx.get(f"{server.url}/health").json()["sessions"] == 0


# -- bodies that end early or go on after the form -----------------------------------------------


def test_a_body_without_its_closing_boundary_is_422_and_leaves_nothing(
    client: TestClient, settings: Settings, clips: dict[str, Path]
) -> None:
    # A whole, valid video, but the form around it never ends: the file may be cut short too.
    body = multipart({"analysis_type": "workout"}, clips["short"].read_bytes())
    truncated = body[: -len(b"\r\n--b0undary--\r\n")]
    response = client.post(
        f"{API}/upload",
        content=truncated,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 422, response.text
    assert "ended before its closing boundary" in response.json()["detail"]
    assert response.headers["connection"] == "close"
    assert stored_files(settings) == []
    assert leftovers(Path(settings.storage_dir)) == []
    assert len(client.app.state.sessions) == 0  # type: ignore[attr-defined]


def test_a_short_epilogue_after_the_closing_boundary_is_ignored(
    client: TestClient, clips: dict[str, Path]
) -> None:
    body = multipart({}, clips["short"].read_bytes()) + b"an epilogue RFC 2046 allows\r\n"
    response = client.post(
        f"{API}/upload",
        content=body,
        headers={"content-type": "multipart/form-data; boundary=b0undary"},
    )
    assert response.status_code == 202, response.text


def test_bytes_after_the_closing_boundary_are_not_read_beyond_a_small_bound(
    server_with: StartServer, clips: dict[str, Path]
) -> None:
    server = server_with(MAX_UPLOAD_MB="1")
    form = multipart({}, clips["short"].read_bytes())
    assert len(form) < MiB
    # Chunked, so that no Content-Length says up front how much follows the form.
    head = request_head("POST", f"{API}/upload", length=None) + chunked(form)
    epilogue = (chunked(bytes(64 * 1024)) for _ in range(200 * 16))  # 200 MB
    sent, answer = exchange(server.port, head, epilogue)
    assert answer.status == 422, answer
    assert "after the end of the multipart/form-data body" in answer.json()["detail"]
    assert answer.closed
    assert sent < 10 * MiB, f"the server read {sent} bytes after a form of {len(form)}"
    assert leftovers(server.storage) == []


# -- free disk space -----------------------------------------------------------------------------


def _free_mib(folder: Path) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free // MiB
    # Not a skip: a run on a disk this full would prove nothing about the reserve, silently.
    assert free >= 1024, f"only {free} MiB free here: the reserve tests need 1 GiB"
    return free


def test_a_declared_size_that_would_not_fit_above_the_reserve_is_507_at_once(
    server_with: StartServer, tmp_path: Path, clips: dict[str, Path]
) -> None:
    # A real configuration: a reserve that leaves 256 MiB usable on this disk.
    reserve = _free_mib(tmp_path / "storage") - 256
    server = server_with(DISK_RESERVE_MB=str(reserve), MAX_UPLOAD_MB="2000")
    size = 512 * MiB
    sent, answer = exchange(
        server.port, request_head("POST", f"{API}/upload", length=size), zeros(size)
    )
    assert answer.status == 507, answer
    assert "disk space" in answer.json()["detail"]
    assert answer.closed
    assert sent < 20 * MiB, f"{sent} bytes of a body that could not fit were read"
    assert leftovers(server.storage) == []
    # What fits is still accepted.
    with open(clips["short"], "rb") as f:
        accepted = httpx.post(f"{server.url}{API}/upload", files={"video": f}, timeout=30)
    assert accepted.status_code == 202, accepted.text


def test_an_upload_is_cut_off_with_507_when_free_space_falls_to_the_reserve(
    server_with: StartServer, tmp_path: Path
) -> None:
    reserve = _free_mib(tmp_path / "storage") - 64
    server = server_with(DISK_RESERVE_MB=str(reserve), MAX_UPLOAD_MB="2000")
    # No Content-Length: only the writes themselves can notice the disk filling up.
    head = request_head("POST", f"{API}/upload", length=None) + chunked(PART_HEAD + MP4_HEAD)
    body = (chunked(bytes(64 * 1024)) for _ in range(1024 * 16))  # 1 GiB
    sent, answer = exchange(server.port, head, body, timeout=60)
    assert answer.status == 507, answer
    assert "disk space" in answer.json()["detail"]
    assert answer.closed
    # About 64 MiB fit above the reserve; other programs writing here can only make it less.
    assert sent < 512 * MiB
    assert leftovers(server.storage) == []


# -- the length of the video ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def ninety_one_minutes(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real 91-minute video: one small frame a second keeps it under 1 MB."""
    folder = tmp_path_factory.mktemp("long")
    return make_video(folder / "91min.mp4", seconds=91 * 60, fps=1, size=(64, 48))


def test_a_video_longer_than_max_video_minutes_is_422_naming_the_limit(
    client: TestClient, settings: Settings, ninety_one_minutes: Path
) -> None:
    assert settings.max_video_minutes == 90  # the default
    response = upload(client, ninety_one_minutes)
    assert response.status_code == 422, response.text
    assert response.json() == {
        "detail": "The video is too long: 91.0 minutes; the limit is 90 minutes"
    }
    assert leftovers(Path(settings.storage_dir)) == []
    assert len(client.app.state.sessions) == 0  # type: ignore[attr-defined]


def test_max_video_minutes_is_a_setting_for_uploads_and_synchronous_analyses(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", max_video_minutes=0.1)  # 6 s
    with make_client(settings) as client:
        assert upload(client, clips["short"]).status_code == 202  # 3 s
        refused = upload(client, clips["reps"])  # 8 s
        assert refused.status_code == 422
        assert "the limit is 0.1 minutes" in refused.json()["detail"]
        with open(clips["reps"], "rb") as f:
            sync = client.post("/analyze/workout", files={"video": f})
        assert sync.status_code == 422 and "too long" in sync.json()["detail"]
