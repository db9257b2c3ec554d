"""The distributed mode on one machine: `make run-cluster` (`python -m local_cluster`), and the
tests' real servers.

Debian's `redis-server`, SeaweedFS (`weed mini`, from the dev requirements) as the S3 server,
RQ workers started with the Procfile's `worker:` line and the API with its `web:` line, each on
a free loopback port, in a folder of its own. Every start and stop has a deadline. `make
run-cluster` starts two workers and the API and stops everything on Ctrl-C: the API and the
workers first (a worker hands its job back), then the S3 server and Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath
from typing import Any

import httpx

from config import Settings

ROOT = Path(__file__).resolve().parent

BUCKET = "videos"
ACCESS_KEY = "test-access-key"
SECRET_KEY = "test-secret-key"
# Short enough that a dead worker's job is back within seconds, long enough that a busy machine
# does not take a live worker for a dead one.
FAST_RECOVERY = {
    "WORKER_HEARTBEAT_SECONDS": "1",
    "WORKER_LOST_SECONDS": "4",
    "JOB_SWEEP_SECONDS": "0.5",
}


def free_port() -> int:
    """A TCP port free on the loopback interface right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _deadline(condition: Callable[[], bool], timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > end:
            raise RuntimeError(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.05)


def _stop(process: subprocess.Popen[bytes] | None, sig: int = signal.SIGTERM) -> None:
    if process is None or process.poll() is not None:
        return
    process.send_signal(sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def procfile_command(kind: str) -> list[str]:
    """The Procfile's command for `kind` (web, worker), as argv; `python` is this interpreter."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, _, command = line.partition(":")
        if name.strip() == kind:
            argv = shlex.split(command)
            if argv[0] == "python":
                argv[0] = sys.executable
            return argv
    raise LookupError(f"the Procfile has no {kind}: line")


class RedisServer:
    """Debian's redis-server with an append-only file, so that a restart keeps the data."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed: apt-get install redis-server")
        self.folder.mkdir(parents=True, exist_ok=True)
        command = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir"]
        command += [str(self.folder), "--appendonly", "yes", "--save", ""]
        with open(self.folder / "redis.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, process_group=0
            )
        client = self.client()
        try:
            _deadline(lambda: _pings(client), 10, f"redis-server on port {self.port}")
        finally:
            client.close()
        return self

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url, socket_timeout=5)

    def stop(self) -> None:
        _stop(self.process)


def _pings(client: Any) -> bool:
    import redis

    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


class S3Server:
    """SeaweedFS `weed mini` with its S3 gateway on a free port, every other port free too."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> S3Server:
        weed = Path(sys.executable).parent / "weed"
        if not weed.is_file():
            raise RuntimeError(f"{weed} is missing: pip install -r requirements-dev.txt")
        data = self.folder / "data"
        data.mkdir(parents=True, exist_ok=True)
        identity = {
            "name": "test",
            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
        }
        config = self.folder / "s3.json"
        config.write_text(json.dumps({"identities": [identity]}))
        ports = {
            "-master.port": free_port(),
            "-master.port.grpc": free_port(),
            "-volume.port": free_port(),
            "-volume.port.grpc": free_port(),
            "-filer.port": free_port(),
            "-filer.port.grpc": free_port(),
            "-s3.port.grpc": free_port(),
            "-admin.port": free_port(),
            "-admin.port.grpc": free_port(),
        }
        # Its log files and its unix sockets go in its folder, not in /tmp (their default).
        command = [str(weed), f"-logdir={self.folder}", "mini", "-dir", str(data)]
        command += ["-s3.localSocket", str(self.folder / "s3.sock")]
        command += ["-filer.localSocket", str(self.folder / "filer.sock"), "-ip", "127.0.0.1"]
        command += ["-ip.bind", "127.0.0.1", "-s3.port", str(self.port), "-s3.config", str(config)]
        command += ["-admin.ui=false", "-webdav=false", "-master.telemetry=false"]
        command += ["-s3.port.iceberg", "0", "-s3.port.lance", "0"]
        for flag, port in ports.items():
            command += [flag, str(port)]
        with open(self.folder / "weed.log", "ab") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, process_group=0
            )
        _deadline(self._answers, 30, f"weed mini's S3 on port {self.port}")
        client = self.client()
        _deadline(lambda: _bucket_made(client), 30, "creating the bucket")
        return self

    def _answers(self) -> bool:
        if self.process is not None and self.process.poll() is not None:
            log = (self.folder / "weed.log").read_text()[-2000:]
            raise RuntimeError(f"weed mini exited with {self.process.returncode}: {log}")
        try:
            httpx.get(self.url, timeout=1)
        except httpx.HTTPError:
            return False
        return True

    def client(self) -> Any:
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            region_name="us-east-1",
            config=Config(s3={"addressing_style": "path"}),
        )

    def stop(self) -> None:
        _stop(self.process)


def _bucket_made(client: Any) -> bool:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        client.create_bucket(Bucket=BUCKET)
    except ClientError as exc:
        return exc.response["Error"]["Code"] in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}
    except BotoCoreError:
        return False
    return True


def bucket_keys(client: Any) -> list[str]:
    """Every object key in the bucket."""
    listing = client.list_objects_v2(Bucket=BUCKET)
    return sorted(item["Key"] for item in listing.get("Contents", ()))


class WorkerProcess:
    """One RQ worker, started with the Procfile's worker line."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.env = env
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> WorkerProcess:
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(
                procfile_command("worker"),
                cwd=ROOT,
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,  # a Ctrl-C is the launcher's to pass on, in order
            )
        _deadline(self._ready, 60, f"the worker ({self.log.name})")
        return self

    def _ready(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise RuntimeError(f"worker exited with {self.process.returncode}: {self.tail()}")
        return f"ready (pid {self.process.pid})" in self.log.read_text(errors="replace")

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]

    def horses(self) -> list[int]:
        """The work horses (children) of this worker right now."""
        try:
            children = Path(f"/proc/{self.pid}/task/{self.pid}/children").read_text()
        except FileNotFoundError:
            return []
        return [int(pid) for pid in children.split()]

    def kill_whole(self) -> list[int]:
        """SIGKILL the worker and its work horse (which runs in a process group of its own, so
        the group of the parent does not reach it); returns the pids killed."""
        victims = [self.pid, *self.horses()]
        for pid in victims:
            os.kill(pid, signal.SIGKILL)
        assert self.process is not None
        self.process.wait(10)
        return victims

    def terminate(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)

    def stop(self) -> None:
        horses = self.horses() if self.process is not None else []
        _stop(self.process)
        for pid in horses:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


class Cluster:
    """redis-server, weed mini and `workers` RQ workers for one test (or one test session)."""

    def __init__(self, folder: Path, workers: int = 1, **env: str) -> None:
        self.folder = folder
        self.redis = RedisServer(folder / "redis")
        self.s3 = S3Server(folder / "s3")
        self.worker_count = workers
        self.extra_env = env
        self.workers: list[WorkerProcess] = []

    def start(self) -> Cluster:
        self.redis.start()
        self.s3.start()
        for _ in range(self.worker_count):
            self.add_worker()
        return self

    def env(self, storage: Path, **extra: str) -> dict[str, str]:
        """The environment of a web or worker process of this cluster."""
        return {
            **os.environ,
            "TASK_BACKEND": "rq",
            "STATE_STORE": "redis",
            "BLOB_STORE": "s3",
            "REDIS_URL": self.redis.url,
            "S3_ENDPOINT_URL": self.s3.url,
            "S3_BUCKET": BUCKET,
            "S3_ACCESS_KEY_ID": ACCESS_KEY,
            "S3_SECRET_ACCESS_KEY": SECRET_KEY,
            "STORAGE_DIR": str(storage),
            **FAST_RECOVERY,
            **self.extra_env,
            **extra,
        }

    def add_worker(self, **extra: str) -> WorkerProcess:
        index = len(self.workers)
        scratch = self.folder / f"worker-{index}"
        worker = WorkerProcess(self.env(scratch, **extra), self.folder / f"worker-{index}.log")
        self.workers.append(worker)
        return worker.start()

    def settings(self, storage: Path, **overrides: Any) -> Settings:
        """Settings of an in-process API of this cluster."""
        fields: dict[str, Any] = {
            "task_backend": "rq",
            "state_store": "redis",
            "blob_store": "s3",
            "redis_url": self.redis.url,
            "s3_endpoint_url": self.s3.url,
            "s3_bucket": BUCKET,
            "s3_access_key_id": ACCESS_KEY,
            "s3_secret_access_key": SECRET_KEY,
            "storage_dir": storage,
            **{name.lower(): value for name, value in FAST_RECOVERY.items()},
        }
        return Settings(**{**fields, **overrides})

    def keys(self) -> list[PurePosixPath]:
        """Every object in the bucket."""
        return [PurePosixPath(key) for key in bucket_keys(self.s3.client())]

    def reset(self) -> None:
        """Leave nothing of the last test: its sessions (so their running jobs stop by
        themselves), waiting jobs, and objects; fails if a job does not stop."""
        from rq import Queue
        from rq.command import send_stop_job_command
        from rq.exceptions import InvalidJobOperation, NoSuchJobError

        import task_backend

        client = self.redis.client()
        for key in client.scan_iter("video:*"):
            client.delete(key)
        queue = Queue(task_backend.QUEUE, connection=client)
        queue.empty()
        registry = queue.started_job_registry

        def idle() -> bool:
            return registry.get_job_count(cleanup=False) == 0

        try:
            _deadline(idle, 5, "the running jobs to stop by themselves")
        except RuntimeError:
            for job_id in registry.get_job_ids(cleanup=False):
                try:
                    send_stop_job_command(client, job_id)
                except (InvalidJobOperation, NoSuchJobError):
                    pass
            _deadline(idle, 10, "the running jobs to stop")
        s3 = self.s3.client()
        for key in bucket_keys(s3):
            s3.delete_object(Bucket=BUCKET, Key=key)
        client.close()

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.s3.stop()
        self.redis.stop()


def main() -> None:
    """`make run-cluster`: Redis, an S3 server, two workers and the API, until Ctrl-C."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8000, help="the API's port")
    parser.add_argument("--workers", type=int, default=2, help="how many RQ workers")
    parser.add_argument("--folder", type=Path, help="where the servers keep their data")
    options = parser.parse_args()
    folder = options.folder or Path(tempfile.mkdtemp(prefix="run-cluster-"))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    cluster = Cluster(folder, workers=0)
    api: subprocess.Popen[bytes] | None = None
    try:
        print(f"starting in {folder}", flush=True)
        cluster.start()
        print(f"redis-server on {cluster.redis.url}, S3 on {cluster.s3.url}", flush=True)
        for index in range(options.workers):
            worker = cluster.add_worker()
            print(f"worker {index + 1} (pid {worker.pid}), log {worker.log}", flush=True)
        command = [a.replace("$PORT", str(options.port)) for a in procfile_command("web")]
        command[command.index("0.0.0.0")] = "127.0.0.1"
        if command[0] == "uvicorn":
            command[:1] = [sys.executable, "-m", "uvicorn"]
        with open(folder / "api.log", "ab") as log:
            api = subprocess.Popen(
                command,
                cwd=ROOT,
                env=cluster.env(folder / "api"),
                stdout=log,
                stderr=subprocess.STDOUT,
                process_group=0,
            )
        url = f"http://127.0.0.1:{options.port}"
        _deadline(lambda: _healthy(api, url), 60, f"the API on {url}")
        print(f"ready: {url}/ (API log {folder / 'api.log'}); Ctrl-C stops everything", flush=True)
        stop.wait()
    finally:
        print("stopping", flush=True)
        _stop(api)
        cluster.stop()
        print("stopped", flush=True)


def _healthy(process: subprocess.Popen[bytes], url: str) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the API exited with {process.returncode}")
    try:
        return httpx.get(f"{url}/health", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


if __name__ == "__main__":
    main()
