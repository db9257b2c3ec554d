"""Hostile input, overload and access: every case a clear 4xx, the server still serving, nothing
left on disk, no server path or internal error text in any answer."""

from __future__ import annotations

import random
import resource
import signal
import socket
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from fastapi.testclient import TestClient

from config import Settings
from tests.conftest import API, TERMINAL, join_all, make_client, stored_files, upload, wait_for
from tests.server import Server
from tests.synthetic import make_video


def _audio_only_mp4(path: Path) -> Path:
    """A real MP4 with one AAC stream and no video: it sniffs as MP4 and cannot be analysed."""
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("aac", rate=44100)
        samples = np.zeros((1, 1024), dtype=np.float32)
        for i in range(20):
            frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
            frame.sample_rate = 44100
            frame.pts = i * 1024
            frame.time_base = Fraction(1, 44100)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad")
    good = make_video(folder / "good.mp4", seconds=2)
    data = good.read_bytes()
    files = {
        "text.mp4": b"Not a video at all.\n" * 50,
        "image.jpg": b"\xff\xd8\xff\xe0\x00\x10JFIF" + bytes(2000),
        # Starts with "G" like an MPEG-TS sync byte, and OpenCV would decode it as a video.
        "animation.gif": b"GIF89a\x01\x00\x01\x00\x80\x00\x00" + bytes(2000),
        "text_starting_with_g.mp4": b"Good morning! " * 100,
        "document.mp4": b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n" + bytes(2000),
        "empty.mp4": b"",
        "truncated.mp4": data[: len(data) // 2],
        "header_only.mp4": data[:64],
        "random.mp4": random.Random(1).randbytes(50_000),
        "garbage_after_header.avi": b"RIFF\x00\x00\x00\x00AVI LIST" + bytes(5000),
    }
    paths = {}
    for name, content in files.items():
        paths[name] = folder / name
        paths[name].write_bytes(content)
    paths["audio_only.mp4"] = _audio_only_mp4(folder / "audio_only.mp4")
    return paths


BAD = {
    "text.mp4": 415,
    "image.jpg": 415,
    "animation.gif": 415,
    "text_starting_with_g.mp4": 415,
    "document.mp4": 415,
    "random.mp4": 415,
    "empty.mp4": 422,
    "truncated.mp4": 422,
    "header_only.mp4": 422,
    "garbage_after_header.avi": 422,
    "audio_only.mp4": 422,
}


@pytest.mark.parametrize(("name", "expected"), sorted(BAD.items()))
def test_bad_files_get_a_clear_4xx_and_leave_nothing(
    client: TestClient, settings: Settings, bad_files: dict[str, Path], name: str, expected: int
) -> None:
    response = upload(client, bad_files[name])
    assert response.status_code == expected, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail
    assert str(settings.storage_dir) not in response.text
    assert "Traceback" not in response.text
    assert stored_files(settings) == []
    assert len(client.app.state.sessions) == 0  # type: ignore[attr-defined]
    assert client.get("/health").status_code == 200


def test_two_files_are_refused(client: TestClient, settings: Settings, clips: dict) -> None:
    data = clips["short"].read_bytes()
    response = client.post(
        f"{API}/upload", files=[("video", ("a.mp4", data)), ("video", ("b.mp4", data))]
    )
    assert response.status_code == 422
    assert "exactly one file" in response.json()["detail"]
    assert stored_files(settings) == []


@pytest.mark.parametrize(
    "name",
    [
        "../../../etc/passwd",
        "..\\..\\windows\\system32\\x.mp4",
        "nul\x00byte.mp4",
        "тренировка 🏋️ дня.mp4",
        "x" * 5000 + ".mp4",
        "/absolute/path.mp4",
        "",
    ],
)
def test_any_client_file_name_is_harmless(
    client: TestClient, settings: Settings, clips: dict, name: str
) -> None:
    response = upload(client, clips["short"], name=name)
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    assert wait_for(client, session_id)["status"] == "completed"
    # Everything stored lives in the session's own folder under server-made names.
    storage = Path(settings.storage_dir)
    for path in stored_files(settings):
        assert path.parent == storage / session_id
        assert path.name.startswith("highlight_")


def test_a_huge_form_part_header_is_refused(client: TestClient, clips: dict) -> None:
    response = upload(client, clips["short"], name="y" * 100_000 + ".mp4")
    assert response.status_code == 422


def test_a_body_that_is_not_multipart_is_422(client: TestClient) -> None:
    for headers, body in [
        ({"content-type": "application/json"}, b'{"video": "x"}'),
        ({"content-type": "multipart/form-data"}, b"no boundary"),
        ({"content-type": "multipart/form-data; boundary=abc"}, b"--abc\r\nbroken"),
        ({}, b""),
    ]:
        response = client.post(f"{API}/upload", content=body, headers=headers)
        assert response.status_code == 422, (headers, response.text)
        assert isinstance(response.json()["detail"], str)


def _send_until_answered(server: Server, head: bytes, total: int) -> tuple[int, bytes]:
    """Stream a request of `total` body bytes to a real server; stop when it answers or closes.
    Returns how many body bytes went out and what came back."""
    sent = 0
    deadline = time.monotonic() + 30
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(head)
        chunk = bytes(65536)
        sock.setblocking(False)
        answer = b""
        while sent < total:
            assert time.monotonic() < deadline, f"no answer after {sent} bytes"
            try:
                answer += sock.recv(65536)
                if answer:
                    break
            except BlockingIOError:
                pass
            except OSError:
                break
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.001)
            except OSError:
                break  # the server closed the connection
        sock.setblocking(True)
        try:
            answer += sock.recv(65536)
        except OSError:
            pass
    return sent, answer


@pytest.fixture
def small_server(tmp_path: Path) -> Iterator[Server]:
    server = Server(tmp_path / "storage", tmp_path / "server.log", MAX_UPLOAD_MB="1")
    yield server.start()
    server.stop()


def test_oversized_chunked_upload_is_cut_off_while_streaming(small_server: Server) -> None:
    # No Content-Length: the limit can only be enforced while the bytes arrive.
    part = (
        b'--b\r\nContent-Disposition: form-data; name="video"; filename="v.mp4"\r\n\r\n'
        b"\x00\x00\x00\x18ftypmp42"
    )
    head = (
        b"POST /api/v1/video/upload HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    head += f"{len(part):x}\r\n".encode() + part + b"\r\n"
    # 200 MB in chunks of 64 KiB, framed as HTTP chunks by hand.
    frame = f"{65536:x}\r\n".encode()
    sent = 0
    with socket.create_connection(("127.0.0.1", small_server.port), timeout=10) as sock:
        sock.sendall(head)
        try:
            for _ in range(200 * 16):
                sock.sendall(frame + bytes(65536) + b"\r\n")
                sent += 65536
        except OSError:
            pass  # the server stopped reading and closed the connection
        answer = sock.recv(65536)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert sent < 50 * 1024 * 1024, f"the server read {sent} bytes of a body over the limit"
    # Nothing in a session folder (the database and the lock live at the top).
    assert [
        p
        for p in small_server.storage.rglob("*")
        if p.is_file() and p.parent != small_server.storage
    ] == []


def test_oversized_declared_upload_is_refused_before_reading(small_server: Server) -> None:
    head = (
        b"POST /api/v1/video/upload HTTP/1.1\r\nHost: x\r\n"
        b"Content-Type: multipart/form-data; boundary=b\r\n"
        + f"Content-Length: {200 * 1024 * 1024}\r\n\r\n".encode()
    )
    sent, answer = _send_until_answered(small_server, head, 200 * 1024 * 1024)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"the limit is 1 MB" in answer
    assert sent < 10 * 1024 * 1024


def test_a_full_disk_is_507_and_removes_the_partial_file(tmp_path: Path, clips: dict) -> None:
    settings = Settings(storage_dir=tmp_path / "storage")
    big = make_video(tmp_path / "big.mp4", seconds=20, size=(640, 360))
    assert big.stat().st_size > 2 * 1024 * 1024
    with make_client(settings) as client:
        # A file-size limit makes the kernel refuse writes past 1 MB, as a full disk would.
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024 * 1024, hard))
        try:
            response = upload(client, big)
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
            signal.signal(signal.SIGXFSZ, previous)
        assert response.status_code == 507
        assert "disk space" in response.json()["detail"]
        assert stored_files(settings) == []
        assert upload(client, clips["short"]).status_code == 202


def test_a_full_queue_answers_429_and_accepts_again_when_it_drains(
    tmp_path: Path, clips: dict
) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", max_workers=1, max_queued=2)
    with make_client(settings) as client:
        running = upload(client, clips["long"]).json()["sessionId"]
        queued = [upload(client, clips["short"]).json()["sessionId"] for _ in range(2)]
        refused = upload(client, clips["short"])
        assert refused.status_code == 429
        assert int(refused.headers["retry-after"]) > 0
        assert "try again" in refused.json()["detail"]
        assert stored_files(settings) and all(
            p.parent.name in {running, *queued} for p in stored_files(settings)
        )
        client.post(f"{API}/cancel/{queued[0]}")
        assert upload(client, clips["short"]).status_code == 202
        client.post(f"{API}/cancel/{running}")


def test_api_key_guards_the_api_but_not_health(tmp_path: Path, clips: dict) -> None:
    settings = Settings(storage_dir=tmp_path / "storage", api_key="s3cret-key")
    with make_client(settings) as client:
        assert client.get("/health").status_code == 200
        for headers in ({}, {"X-API-Key": "wrong"}, {"X-API-Key": "s3cret-key "}):
            response = client.get(f"{API}/status/x", headers=headers)
            assert response.status_code == 401
            assert response.json() == {"detail": "Invalid or missing API key"}
            with open(clips["short"], "rb") as f:
                refused = client.post("/analyze/workout", files={"video": f}, headers=headers)
            assert refused.status_code == 401
        assert client.get(f"{API}/status/x", headers={"X-API-Key": "s3cret-key"}).status_code == 404
        with open(clips["short"], "rb") as f:
            accepted = client.post(
                f"{API}/upload", files={"video": f}, headers={"X-API-Key": "s3cret-key"}
            )
        assert accepted.status_code == 202


def test_racing_uploads_cancels_and_cleanups_leave_a_consistent_state(
    tmp_path: Path, clips: dict
) -> None:
    # 30 bodies at once: more than MAX_CONCURRENT_UPLOADS allows by default (see test_uploads).
    settings = Settings(
        storage_dir=tmp_path / "storage", max_workers=2, max_queued=40, max_concurrent_uploads=30
    )
    rng = random.Random(7)
    with make_client(settings) as client:
        ids: list[str] = []
        lock = threading.Lock()
        errors: list[str] = []

        def user(seed: int) -> None:
            r = random.Random(seed)
            response = upload(client, clips["short" if r.random() < 0.7 else "reps"])
            if response.status_code != 202:
                errors.append(f"upload {response.status_code} {response.text}")
                return
            session_id = response.json()["sessionId"]
            with lock:
                ids.append(session_id)
            action = r.choice(["cancel", "cleanup", "both", "nothing"])
            if action in ("cancel", "both"):
                code = client.post(f"{API}/cancel/{session_id}").status_code
                if code not in (200, 409, 404):
                    errors.append(f"cancel {code}")
            if action in ("cleanup", "both"):
                code = client.delete(f"{API}/cleanup/{session_id}").status_code
                if code not in (200, 404):
                    errors.append(f"cleanup {code}")

        threads = [threading.Thread(target=user, args=(rng.random(),)) for _ in range(30)]
        for t in threads:
            t.start()
        join_all(threads, timeout=120)
        assert errors == []
        assert len(ids) == 30
        sessions = client.app.state.sessions  # type: ignore[attr-defined]
        tasks = client.app.state.tasks  # type: ignore[attr-defined]
        for session_id in ids:
            if sessions.get_session(session_id) is not None:
                wait_for(client, session_id, TERMINAL)
        assert tasks.counts() == {"running": 0, "queued": 0}
        remaining = {s.id: s for s in sessions.list_sessions()}
        assert all(s.status.value in TERMINAL for s in remaining.values())
        # No file without a session, and files only for completed sessions.
        storage = Path(settings.storage_dir)
        folders = {p.name for p in storage.iterdir() if p.is_dir()}
        completed = {i for i, s in remaining.items() if s.status.value == "completed"}
        assert folders <= completed
        for path in stored_files(settings):
            assert path.parent.name in completed


def _pyav_clip(path: Path, fmt: str, codec: str, seconds: float = 2.0) -> Path:
    """A clip of a moving block in `fmt` with `codec`, written by PyAV."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream(codec, rate=25)
        stream.width, stream.height, stream.pix_fmt = 160, 120, "yuv420p"
        for i in range(int(seconds * 25)):
            image = np.full((120, 160, 3), 60, dtype=np.uint8)
            image[40:80, (i * 4) % 120 : (i * 4) % 120 + 40] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path


@pytest.mark.parametrize(
    ("name", "fmt", "codec"),
    [
        ("clip.mp4", "mp4", "libx264"),
        ("clip.mov", "mov", "mpeg4"),
        ("clip.mkv", "matroska", "mpeg4"),
        ("clip.webm", "webm", "libvpx"),
        ("clip.ts", "mpegts", "mpeg2video"),
        ("clip.mpg", "mpeg", "mpeg2video"),
        ("clip.avi", "avi", "mpeg4"),
        ("clip.flv", "flv", "flv"),
        ("clip.wmv", "asf", "wmv2"),
    ],
)
def test_every_container_we_name_is_accepted_and_analysed(
    client: TestClient, tmp_path: Path, name: str, fmt: str, codec: str
) -> None:
    path = _pyav_clip(tmp_path / name, fmt, codec)
    # Named and typed as nothing in particular: the bytes decide.
    response = upload(client, path, name="upload.bin", analysis_type="full")
    assert response.status_code == 202, response.text
    status = wait_for(client, response.json()["sessionId"])
    assert status["status"] == "completed", status


def _corrupt_tail(source: Path, target: Path) -> Path:
    """`source` with random bytes over its second half, container header and index intact: it
    opens and decodes at upload, and breaks half-way through the analysis."""
    data = bytearray(source.read_bytes())
    start, end = len(data) // 2, len(data) - 4096  # AVI keeps its index at the very end
    data[start:end] = random.Random(3).randbytes(end - start)
    target.write_bytes(bytes(data))
    return target


def test_a_video_that_breaks_mid_analysis_fails_readably_and_is_cleaned(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    source = make_video(tmp_path / "source.avi", seconds=8, fourcc="MJPG")
    broken = _corrupt_tail(source, tmp_path / "broken.avi")
    response = upload(client, broken, analysis_type="workout")
    assert response.status_code == 202, response.text
    session_id = response.json()["sessionId"]
    status = wait_for(client, session_id)
    assert status["status"] == "failed", status
    assert "corrupt" in status["error"] or "truncated" in status["error"], status["error"]
    assert str(settings.storage_dir) not in status["error"]
    results = client.get(f"{API}/results/{session_id}")
    assert results.status_code == 400
    assert status["error"] in results.json()["detail"]
    assert stored_files(settings) == []
