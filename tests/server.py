"""Run the real service (uvicorn, as `make run` does) in a subprocess on a free loopback port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import IO

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def launch(
    port: int, env: dict[str, str], log: IO[bytes], *extra: str, app: str = "app:app"
) -> subprocess.Popen[bytes]:
    """Start `uvicorn app:app` (or another `app`) on 127.0.0.1:`port` as `make run` and the
    Procfile do."""
    command = [sys.executable, "-m", "uvicorn", app, "--host", "127.0.0.1"]
    # As in the Procfile: open event streams must not hold a shutdown forever.
    command += ["--port", str(port), "--timeout-graceful-shutdown", "5", *extra]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_healthy(
    process: subprocess.Popen[bytes], url: str, timeout: float, log_tail: Callable[[], str]
) -> None:
    """Return once `url`/health answers 200; raise RuntimeError (with the log's tail) if the
    process exits or `timeout` passes first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited with {process.returncode}: {log_tail()}")
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"server not healthy after {timeout:.0f} s: {log_tail()}")


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Poll `condition` until it holds; AssertionError naming `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout:.1f} s"
        time.sleep(0.02)


def run_refused(env: dict[str, str], log: Path, timeout: float = 30) -> tuple[int, str]:
    """Start a server that is expected to refuse to start; returns its exit code and its output.
    Fails if it is still running after `timeout` seconds."""
    with open(log, "wb") as out:
        process = launch(free_port(), env, out)
        try:
            code = process.wait(timeout)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(10)
    return code, log.read_text()


class Server:
    """A uvicorn process serving `app:app` (or `app`); `start`, `kill`, `terminate`, `url`."""

    def __init__(self, storage: Path, log: Path, app: str = "app:app", **env: str) -> None:
        self.storage = storage
        self.log = log
        self.app = app
        self.env = {**os.environ, "STORAGE_DIR": str(storage), **env}
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> Server:
        with open(self.log, "ab") as log:
            self.process = launch(self.port, self.env, log, app=self.app)
        wait_healthy(self.process, self.url, timeout, lambda: self.log.read_text()[-2000:])
        return self

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs, as in a crash or an out-of-memory kill."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def terminate(self, timeout: float = 15) -> int:
        """SIGTERM, as a platform sends on redeploy; returns the exit code."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
