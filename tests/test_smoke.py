"""`python -m smoke` (what `make smoke` runs) against real uvicorn servers: it passes on the
service and leaves nothing behind, and it fails with a clear line on a server with a broken
route, or without the key a server asks for."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import smoke
from tests.server import ROOT, Server, free_port

API_KEY = "smoke-test-key"
# Every step the smoke test prints when it passes, in order.
STEPS = [
    "health",
    "happy path: upload (full)",
    "happy path: event stream to completed",
    "happy path: results",
    "happy path: thumbnail is a JPEG",
    "happy path: cleanup",
    "happy path: status after cleanup",
    "cancellation: upload (long clip)",
    "errors: results before completion",
    "cancellation: status reaches processing",
    "cancellation: cancel",
    "cancellation: cancel again",
    "cancellation: results",
    "cancellation: cleanup",
    "errors: unknown session",
    "errors: not a video",
    "errors: truncated video",
]
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


def run_smoke(url: str, api_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m smoke URL` as `make smoke` runs it: the key, if any, in API_KEY."""
    env = {k: v for k, v in os.environ.items() if k != "API_KEY"}
    if api_key:
        env["API_KEY"] = api_key
    return subprocess.run(
        [sys.executable, "-m", "smoke", url],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def session_folders(storage: Path) -> list[Path]:
    return [p for p in storage.iterdir() if p.is_dir() and _UUID.fullmatch(p.name)]


def stored_sessions(server: Server) -> int:
    return int(httpx.get(f"{server.url}/health", timeout=5).json()["sessions"])


@pytest.fixture(scope="module")
def keyed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("smoke")
    server = Server(folder / "storage", folder / "server.log", MAX_WORKERS="2", API_KEY=API_KEY)
    server.start()
    yield server
    server.stop()


def test_smoke_passes_against_the_live_service_and_leaves_nothing_behind(
    keyed_server: Server,
) -> None:
    result = run_smoke(keyed_server.url, API_KEY)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    passed = [line[6:].split("  ")[0].strip() for line in lines if line.startswith("  ok  ")]
    assert passed == STEPS, result.stdout
    # Each line says the status and the latency of its step.
    for line in lines[1:-1]:
        assert re.search(r"  \d{3} +\d+\.\d ms  (GET|POST|DELETE) /", line), line
    assert lines[-1].startswith("smoke test passed: 17 steps in ")
    assert session_folders(keyed_server.storage) == []
    assert stored_sessions(keyed_server) == 0


def test_smoke_without_the_key_the_server_asks_for_fails_at_the_first_guarded_step(
    keyed_server: Server,
) -> None:
    result = run_smoke(keyed_server.url)
    assert result.returncode == 1
    assert "FAIL  happy path: upload (full)" in result.stdout
    assert f"request:  POST {keyed_server.url}/api/v1/video/upload" in result.stdout
    assert "problem:  expected 202, got 401" in result.stdout
    assert "Invalid or missing API key" in result.stdout
    assert result.stdout.splitlines()[-1].startswith("smoke test FAILED at 'happy path: upload")


def test_smoke_names_the_step_request_status_and_body_of_a_broken_route_and_still_cleans_up(
    tmp_path: Path,
) -> None:
    server = Server(tmp_path / "storage", tmp_path / "server.log", app="tests.broken_app:app")
    server.start()
    try:
        result = run_smoke(server.url)
        assert result.returncode == 1, result.stdout
        out = result.stdout
        assert "  ok  happy path: event stream to completed" in out
        failure = out[out.index("FAIL  ") :]
        session_id = _UUID.search(failure)
        assert session_id is not None, failure
        assert failure.startswith("FAIL  happy path: results\n"), failure
        assert f"request:  GET {server.url}/api/v1/video/results/{session_id[0]}" in failure
        assert "problem:  expected 200, got 500" in failure
        assert re.search(r"status:   500 after \d+\.\d ms", failure)
        assert 'body:     {"detail":"Internal server error"}' in failure
        # The session the failure left behind was cleaned up on the way out.
        assert f"cleanup of session {session_id[0]} left by the failure: 200" in failure
        assert session_folders(server.storage) == []
        assert stored_sessions(server) == 0
    finally:
        server.stop()


def test_smoke_fails_at_health_when_nothing_answers() -> None:
    result = run_smoke(f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 1
    assert "FAIL  health" in result.stdout
    assert "problem:  no answer: ConnectionRefusedError" in result.stdout


def test_smoke_refuses_a_url_that_is_not_http() -> None:
    with pytest.raises(SystemExit) as exited:
        smoke.main(["ftp://example.com"])
    assert exited.value.code == 2
