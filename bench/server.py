"""The real server, started as `make run` starts it, for the benchmarks that go through HTTP.

`Server` runs `python -m uvicorn app:app` on a free loopback port with its own `STORAGE_DIR`, waits
for `/health`, reads the process's resources from `/proc` (RSS, open descriptors, threads, CPU
time) and stops it with SIGTERM, as a platform would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from tests.server import free_port, launch, wait_healthy

_START_TIMEOUT = 30.0
_STOP_TIMEOUT = 30.0
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def schedstat(pid: int, tid: int) -> tuple[float, float]:
    """(run, run-queue wait) seconds of one thread, from /proc/<pid>/task/<tid>/schedstat."""
    run_ns, wait_ns, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
    return int(run_ns) / 1e9, int(wait_ns) / 1e9


class Server:
    """A uvicorn process serving `app:app` on 127.0.0.1; use as a context manager.

    Args:
        max_workers: MAX_WORKERS of the service.
        env: more environment variables for the service.
    """

    def __init__(self, max_workers: int = 2, env: dict[str, str] | None = None) -> None:
        self.max_workers = max_workers
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._tmp = tempfile.TemporaryDirectory(prefix="bench-storage-")
        self.storage = Path(self._tmp.name)
        self._env = {
            **os.environ,
            "STORAGE_DIR": str(self.storage),
            "MAX_WORKERS": str(max_workers),
            # The 10-minute 720p clip is ~1.4 GB: above the service's default limit.
            "MAX_UPLOAD_MB": "4096",
            **(env or {}),
        }
        self._log = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in stop()
            prefix="bench-server-", suffix=".log", delete=False
        )
        self.log_path = Path(self._log.name)
        self.proc: subprocess.Popen[bytes] | None = None
        self.exit_code: int | None = None
        self.stop_seconds: float | None = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> Server:
        self.proc = launch(self.port, self._env, self._log, "--no-access-log")
        try:
            wait_healthy(self.proc, self.url, _START_TIMEOUT, self.log_tail)
        except RuntimeError:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """SIGTERM, then wait (bounded); SIGKILL only if it does not exit."""
        if self.proc is not None and self.proc.poll() is None:
            began = time.monotonic()
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
            self.stop_seconds = time.monotonic() - began
        if self.proc is not None:
            self.exit_code = self.proc.returncode
        self._log.close()
        # uvicorn re-raises the SIGTERM it handled, so -15 is a clean exit too; otherwise the
        # log stays for a look.
        if self.exit_code in (0, -signal.SIGTERM):
            self.log_path.unlink(missing_ok=True)
        self._tmp.cleanup()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        self._log.flush()
        text = self.log_path.read_text(errors="replace").splitlines()
        return "\n".join(text[-lines:])

    # -- resources, from /proc ---------------------------------------------------------------

    def resources(self) -> dict[str, Any]:
        """RSS (MB), open descriptors, threads and files in session folders under STORAGE_DIR
        (the session database beside them is not counted), right now."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
        files = sum(
            len(names) for folder, _, names in os.walk(self.storage) if Path(folder) != self.storage
        )
        return {
            "rss_mb": round(int(fields["VmRSS"].split()[0]) / 1024, 1),
            "fds": len(os.listdir(f"/proc/{self.pid}/fd")),
            "threads": int(fields["Threads"]),
            "storage_files": files,
        }

    def thread_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the event loop (the main thread) and of all other threads (the
        analysis workers, AnyIO's threads, the session writer). Python does not name OS threads,
        so /proc cannot tell those apart."""
        totals = {"loop": 0.0, "threads": 0.0}
        for tid in os.listdir(f"/proc/{self.pid}/task"):
            try:
                stat = Path(f"/proc/{self.pid}/task/{tid}/stat").read_text()
            except FileNotFoundError:
                continue  # the thread ended meanwhile
            parts = stat[stat.rindex(")") + 2 :].split()
            seconds = (int(parts[11]) + int(parts[12])) / _CLK_TCK
            totals["loop" if int(tid) == self.pid else "threads"] += seconds
        return totals

    def loop_schedstat(self) -> tuple[float, float]:
        """(seconds run, seconds spent runnable but waiting for a CPU) of the event loop's thread
        so far: the second is what other busy threads and processes cost it."""
        return schedstat(self.pid, self.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time of the server process (all its threads) so far."""
        stat = Path(f"/proc/{self.pid}/stat").read_text()
        parts = stat[stat.rindex(")") + 2 :].split()
        return (int(parts[11]) + int(parts[12])) / _CLK_TCK


def upload(
    client: httpx.Client, path: Path, analysis_type: str = "full", params: str = "{}"
) -> str:
    """Upload a video; returns the session id (raises on an error answer)."""
    with path.open("rb") as file:
        response = client.post(
            "/api/v1/video/upload",
            files={"video": (path.name, file, "video/mp4")},
            data={"analysis_type": analysis_type, "params": params},
        )
    response.raise_for_status()
    return str(response.json()["sessionId"])


def wait_done(client: httpx.Client, session_id: str, timeout: float, poll: float = 0.2) -> dict:
    """Poll status until the session ends; returns the last status (bounded by `timeout`)."""
    deadline = time.monotonic() + timeout
    while True:
        info = client.get(f"/api/v1/video/status/{session_id}").json()
        if info["status"] in ("completed", "failed", "cancelled"):
            return dict(info)
        if time.monotonic() > deadline:
            raise TimeoutError(f"session {session_id} still {info['status']} after {timeout} s")
        time.sleep(poll)
