"""The distributed mode's own promises, on real servers: API processes (uvicorn, as the Procfile's
web line) sharing a real redis-server and a SeaweedFS bucket, RQ worker processes started with the
Procfile's worker line, and faults of each: a worker SIGKILLed whole or SIGTERMed mid-job, an API
process killed, Redis restarted, sessions expired, settings that cannot work."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_cluster import Cluster, WorkerProcess, free_port, procfile_command
from session_store import RedisSessionStore
from tests.conftest import API, follow, make_client, status_of, upload, wait_for
from tests.server import ROOT, Server, run_refused
from tests.synthetic import make_video


@pytest.fixture(scope="module")
def medium(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A clip long enough to be caught mid-analysis (a second or two of work on a quiet
    machine), short enough to run again after a fault."""
    return make_video(tmp_path_factory.mktemp("medium") / "medium.mp4", seconds=40, period=1.5)


def _add_worker(cluster: Cluster) -> WorkerProcess:
    """One more worker, serving its metrics (as every worker of this module does)."""
    return cluster.add_worker(WORKER_METRICS_PORT=str(free_port()))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two workers, each serving its metrics, on a Redis and a bucket of this module's own."""
    folder = tmp_path_factory.mktemp("distributed")
    started = Cluster(folder, workers=0).start()
    try:
        for _ in range(2):
            _add_worker(started)
        yield started
    finally:
        started.stop()


@pytest.fixture
def fresh(cluster: Cluster) -> Iterator[Cluster]:
    """The module's cluster, clean, with two live workers before and after the test."""
    cluster.reset()
    yield cluster
    for worker in list(cluster.workers):
        if worker.process is not None and worker.process.poll() is not None:
            cluster.workers.remove(worker)
    while len(cluster.workers) < 2:
        _add_worker(cluster)
    cluster.reset()


@pytest.fixture
def apis(fresh: Cluster, tmp_path: Path) -> Iterator[Callable[[int], list[Server]]]:
    """Start `n` API processes of the cluster, each on its own port and scratch folder."""
    started: list[Server] = []

    def start(n: int) -> list[Server]:
        for _ in range(n):
            index = len(started)
            env = fresh.env(tmp_path / f"api-{index}")
            server = Server(tmp_path / f"api-{index}", tmp_path / f"api-{index}.log", **env)
            started.append(server.start(timeout=60))
        return started[-n:]

    yield start
    for server in started:
        server.stop()


def _upload(server: Server, path: Path, **form: str) -> str:
    with open(path, "rb") as f:
        response = httpx.post(
            f"{server.url}{API}/upload", files={"video": (path.name, f)}, data=form, timeout=60
        )
    assert response.status_code == 202, response.text
    return str(response.json()["sessionId"])


def _analysing(body: dict[str, Any]) -> bool:
    return body.get("status") == "processing" and body.get("progress", 0) >= 5


def _events(server: Server, session_id: str, timeout: float = 60) -> list[dict[str, Any]]:
    """Every status event of the session's stream on `server`, until the stream ends."""
    deadline = time.monotonic() + timeout
    events = []
    with httpx.stream("GET", f"{server.url}{API}/events/{session_id}", timeout=30) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            assert time.monotonic() < deadline, "the stream did not end"
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
    return events


def _store(cluster: Cluster) -> RedisSessionStore:
    return RedisSessionStore(cluster.redis.client(), ttl_seconds=60)


def _busy_worker(cluster: Cluster, timeout: float = 30) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = [w for w in cluster.workers if w.horses()]
        if busy:
            return busy[0]
        time.sleep(0.05)
    raise AssertionError("no worker is running a job")


# -- replicas and workers ------------------------------------------------------------------------


def test_two_api_processes_share_every_session(
    apis: Callable[[int], list[Server]], fresh: Cluster, clips: dict[str, Path]
) -> None:
    a, b = apis(2)
    done = _upload(a, clips["reps"], analysis_type="full")
    # B follows, as Server-Sent Events, an analysis uploaded to A and run by a worker.
    events = _events(b, done)
    assert events[-1]["status"] == "completed" and events[-1]["progress"] == 100
    progress = [e["progress"] for e in events]
    assert progress == sorted(progress) and len(events) >= 3
    results = httpx.get(f"{b.url}{API}/results/{done}", timeout=10).json()
    assert results == httpx.get(f"{a.url}{API}/results/{done}", timeout=10).json()
    assert abs(results["data"]["workout"]["total_reps"] - 8) <= 1
    thumbnail_url = results["data"]["highlights"][0]["thumbnail_url"]
    redirect = httpx.get(b.url + thumbnail_url, timeout=10)
    assert redirect.status_code == 307
    thumbnail = httpx.get(b.url + thumbnail_url, timeout=10, follow_redirects=True)
    assert thumbnail.status_code == 200 and thumbnail.content[:3] == b"\xff\xd8\xff"

    # A cancel on B stops the analysis a worker runs for A's upload.
    running = _upload(a, clips["long"])
    follow(b, running, _analysing)
    cancelled = httpx.post(f"{b.url}{API}/cancel/{running}", timeout=10)
    assert cancelled.status_code == 200
    assert status_of(a, running)["status"] == "cancelled"
    assert httpx.post(f"{a.url}{API}/cancel/{running}", timeout=10).status_code == 409

    for session_id in (done, running):
        assert httpx.delete(f"{b.url}{API}/cleanup/{session_id}", timeout=10).status_code == 200
        assert httpx.get(f"{a.url}{API}/status/{session_id}", timeout=10).status_code == 404
    assert fresh.keys() == []


def test_two_workers_run_two_videos_at_once(
    apis: Callable[[int], list[Server]], fresh: Cluster, medium: Path
) -> None:
    (api,) = apis(1)
    first = _upload(api, medium, analysis_type="workout")
    second = _upload(api, medium, analysis_type="workout")
    deadline = time.monotonic() + 60
    while not all(status_of(api, s)["status"] == "processing" for s in (first, second)):
        assert time.monotonic() < deadline, "the two videos never ran at the same time"
        time.sleep(0.05)
    for session_id in (first, second):
        assert wait_for(api, session_id, timeout=120)["status"] == "completed"
    # Every local trace of the analyses is gone: the videos they fetched, the artifacts they
    # wrote before uploading them.
    for worker in fresh.workers:
        scratch = Path(worker.env["STORAGE_DIR"])
        assert not scratch.exists() or list(scratch.iterdir()) == [], worker.log


def test_a_worker_killed_whole_mid_job_hands_it_to_the_other_worker(
    apis: Callable[[int], list[Server]], fresh: Cluster, medium: Path
) -> None:
    (api,) = apis(1)
    session_id = _upload(api, medium, analysis_type="full")
    follow(api, session_id, _analysing)
    victim = _busy_worker(fresh)
    killed_at = time.monotonic()
    assert len(victim.kill_whole()) == 2  # the worker and its work horse
    final = wait_for(api, session_id, timeout=90)
    assert final["status"] == "completed", final
    assert time.monotonic() - killed_at < 90
    session = _store(fresh).get_session(session_id)
    assert session is not None and session.interruptions == 1
    results = httpx.get(f"{api.url}{API}/results/{session_id}", timeout=10).json()
    assert results["data"]["highlights"] and fresh.keys()
    assert httpx.delete(f"{api.url}{API}/cleanup/{session_id}", timeout=10).status_code == 200
    assert fresh.keys() == []


def test_a_job_whose_workers_keep_dying_fails_after_two_retries(
    apis: Callable[[int], list[Server]], fresh: Cluster, medium: Path
) -> None:
    (api,) = apis(1)
    session_id = _upload(api, medium, analysis_type="workout")
    for attempt in range(3):
        follow(api, session_id, _analysing, timeout=90)
        _busy_worker(fresh).kill_whole()
        if attempt < 2:
            _add_worker(fresh)  # so that one always waits for the job
    final = wait_for(api, session_id, timeout=90)
    assert final["status"] == "failed"
    assert final["error"] == (
        "The analysis was interrupted 3 times (the worker analysing this video stopped each "
        "time); upload it again or contact support"
    )
    assert fresh.keys() == []


def test_a_worker_given_sigterm_hands_its_job_back_at_once(
    apis: Callable[[int], list[Server]], fresh: Cluster, medium: Path
) -> None:
    (api,) = apis(1)
    session_id = _upload(api, medium, analysis_type="workout")
    follow(api, session_id, _analysing)
    victim = _busy_worker(fresh)
    stopped_at = time.monotonic()
    victim.terminate()  # what a Railway redeploy sends
    assert victim.process is not None
    assert victim.process.wait(15) == 0, victim.tail()
    # Well inside Railway's draining time (railway.worker.json): no SIGKILL mid-job.
    assert time.monotonic() - stopped_at < 10
    assert "handed back to the queue" in victim.tail()
    # The other worker takes it over straight away and completes it.
    final = wait_for(api, session_id, timeout=90)
    assert final["status"] == "completed", final
    session = _store(fresh).get_session(session_id)
    assert session is not None and session.interruptions == 0  # a hand-back is no crash


def test_a_full_queue_is_429_with_retry_after(
    fresh: Cluster, tmp_path: Path, medium: Path, clips: dict[str, Path]
) -> None:
    with make_client(fresh.settings(tmp_path / "storage", max_queued=1)) as client:
        running = [upload(client, medium).json()["sessionId"] for _ in range(2)]
        for session_id in running:
            wait_for(client, session_id, {"processing"})
        waiting = upload(client, clips["short"])
        assert waiting.status_code == 202
        assert (
            client.get(f"{API}/status/{waiting.json()['sessionId']}").json()["queuePosition"] == 1
        )
        refused = upload(client, clips["short"])
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "10"
        assert refused.json() == {
            "detail": "Too many videos are waiting for analysis; try again later"
        }
        assert len(client.app.state.sessions) == 3  # type: ignore[attr-defined]


def test_a_killed_api_process_loses_nothing(
    apis: Callable[[int], list[Server]], clips: dict[str, Path]
) -> None:
    a, b = apis(2)
    accepted = [_upload(a, clips["short"]) for _ in range(2)]
    a.kill()  # the instant the last 202 arrived
    for session_id in accepted:
        assert wait_for(b, session_id, timeout=90)["status"] == "completed"


def test_the_service_recovers_when_redis_restarts_while_idle(
    apis: Callable[[int], list[Server]], fresh: Cluster, clips: dict[str, Path]
) -> None:
    (api,) = apis(1)
    before = _upload(api, clips["short"])
    wait_for(api, before)
    fresh.redis.stop()
    down = httpx.get(f"{api.url}{API}/status/{before}", timeout=10)
    assert down.status_code == 503
    assert down.json() == {
        "detail": "The service cannot reach its session store right now; try again shortly"
    }
    assert httpx.get(f"{api.url}/health", timeout=10).json()["status"] == "degraded"
    assert httpx.get(f"{api.url}/metrics", timeout=10).status_code == 200
    fresh.redis.start()  # same port, same append-only file
    assert wait_for(api, before)["status"] == "completed"
    after = _upload(api, clips["short"])
    assert wait_for(api, after, timeout=90)["status"] == "completed"
    assert httpx.get(f"{api.url}/health", timeout=10).json()["status"] == "healthy"


def test_expiry_removes_the_bucket_objects(
    fresh: Cluster, tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = fresh.settings(tmp_path / "storage", session_ttl_hours=1)
    with make_client(settings) as client:
        kept = upload(client, clips["short"]).json()["sessionId"]
        dropped = upload(client, clips["short"]).json()["sessionId"]
        for session_id in (kept, dropped):
            assert wait_for(client, session_id)["status"] == "completed"
        assert {key.parts[0] for key in fresh.keys()} == {kept, dropped}
        service = client.app.state.service  # type: ignore[attr-defined]
        # One session's hash is already gone, as when Redis expires it before any sweep.
        fresh.redis.client().delete(RedisSessionStore.key(dropped))
        assert service.expire(now=time.time() + 2 * 3600) == 2
        assert fresh.keys() == []
        assert client.get(f"{API}/status/{kept}").status_code == 404
        assert len(client.app.state.sessions) == 0  # type: ignore[attr-defined]


def test_workers_serve_the_metrics_of_their_analyses(
    apis: Callable[[int], list[Server]], fresh: Cluster, clips: dict[str, Path]
) -> None:
    (api,) = apis(1)
    session_id = _upload(api, clips["short"], analysis_type="workout")
    assert wait_for(api, session_id)["status"] == "completed"
    pattern = re.compile(
        r'^video_analyses_total\{analysis_type="workout",outcome="completed"\} (\S+)$', re.M
    )
    total = 0.0
    for worker in fresh.workers:
        port = worker.env["WORKER_METRICS_PORT"]
        text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        total += sum(float(v) for v in pattern.findall(text))
    assert total >= 1


def test_worker_metrics_folders_go_with_their_worker_even_one_killed_outright(
    fresh: Cluster,
) -> None:
    def folders(worker: WorkerProcess) -> list[Path]:
        return list(Path(tempfile.gettempdir()).glob(f"worker-metrics-{worker.pid}-*"))

    stopped, killed = fresh.workers
    assert len(folders(stopped)) == len(folders(killed)) == 1
    stopped.terminate()
    assert stopped.process is not None and stopped.process.wait(15) == 0, stopped.tail()
    assert folders(stopped) == []
    killed.kill_whole()
    assert len(folders(killed)) == 1  # nobody left to remove it ...
    replacement = _add_worker(fresh)
    assert folders(killed) == []  # ... until the next worker starts
    assert len(folders(replacement)) == 1


# -- start-up --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"TASK_BACKEND": "rq"},
            "configuration error: TASK_BACKEND=rq needs STATE_STORE=redis: workers in other "
            "processes must see the sessions",
        ),
        (
            {"TASK_BACKEND": "rq", "STATE_STORE": "redis", "BLOB_STORE": "s3"},
            "configuration error: REDIS_URL must be set when STATE_STORE=redis",
        ),
        (
            {"STATE_STORE": "redis"},
            "configuration error: TASK_BACKEND=threads runs with STATE_STORE=sqlite and "
            "BLOB_STORE=local: unset STATE_STORE and BLOB_STORE, or set TASK_BACKEND=rq",
        ),
    ],
)
def test_settings_that_cannot_work_stop_the_api_with_one_line(
    tmp_path: Path, env: dict[str, str], line: str
) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("S3_", "REDIS_"))}
    code, output = run_refused(
        {**clean, "STORAGE_DIR": str(tmp_path / "s"), **env}, tmp_path / "api.log"
    )
    assert code != 0
    assert line in output.splitlines(), output
    assert "Traceback" not in output


def test_a_redis_out_of_reach_stops_the_api_and_the_worker_with_one_line(
    fresh: Cluster, tmp_path: Path
) -> None:
    closed = free_port()
    env = fresh.env(tmp_path / "s", REDIS_URL=f"redis://:secret@127.0.0.1:{closed}/0")
    expected = f"cannot reach Redis at REDIS_URL (127.0.0.1:{closed}/0)"
    code, output = run_refused(env, tmp_path / "api.log")
    assert code != 0 and "Traceback" not in output and "secret" not in output
    assert [line for line in output.splitlines() if line.endswith(expected)], output
    worker = subprocess.run(
        procfile_command("worker"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 1
    assert worker.stderr.strip().splitlines()[-1] == expected
    assert "Traceback" not in worker.stderr


def test_a_bucket_that_refuses_the_key_stops_the_worker_with_one_line(
    fresh: Cluster, tmp_path: Path
) -> None:
    env = fresh.env(tmp_path / "s", S3_SECRET_ACCESS_KEY="wrong")
    worker = subprocess.run(
        procfile_command("worker"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert worker.returncode == 1
    assert worker.stderr.strip().splitlines()[-1] == (
        f"cannot use S3_BUCKET videos at S3_ENDPOINT_URL {fresh.s3.url}: the credentials are "
        "refused (S3_ACCESS_KEY_ID, S3_SECRET_ACCESS_KEY)"
    )


# -- make run-cluster ------------------------------------------------------------------------------


def test_run_cluster_serves_an_upload_and_ctrl_c_stops_everything(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    recipe = (ROOT / "Makefile").read_text().split("\nrun-cluster:", 1)[1].splitlines()[1]
    assert recipe.strip() == "$(PY) -m local_cluster --port $(PORT)"
    port = free_port()
    launcher = subprocess.Popen(
        [sys.executable, "-m", "local_cluster", "--port", str(port), "--folder", str(tmp_path)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    lines: list[str] = []
    try:
        assert launcher.stdout is not None
        deadline = time.monotonic() + 120
        while not (lines and lines[-1].startswith("ready:")):
            assert time.monotonic() < deadline and launcher.poll() is None, lines
            lines.append(launcher.stdout.readline().strip())
        pids = [int(p) for p in re.findall(r"\(pid (\d+)\)", "\n".join(lines))]
        assert len(pids) == 2  # two workers
        api = Server(tmp_path, tmp_path / "unused.log")
        api.port = port
        session_id = _upload(api, clips["short"])
        assert wait_for(api, session_id, timeout=90)["status"] == "completed"
        os.killpg(launcher.pid, signal.SIGINT)  # Ctrl-C
        output, _ = launcher.communicate(timeout=60)
        assert launcher.returncode == 0, output
        assert output.strip().endswith("stopped")
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(10)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"worker {pid} still running"
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
    # The S3 server's log files and sockets are in the cluster's folder, not in /tmp.
    (s3_port,) = re.findall(r"S3 on http://127\.0\.0\.1:(\d+)", "\n".join(lines))
    assert not Path(tempfile.gettempdir(), f"seaweedfs-s3-{s3_port}.sock").exists()
    assert list(tmp_path.rglob("weed.*.log.INFO.*")), "weed mini wrote its log elsewhere"


def test_the_railway_worker_service_starts_the_procfile_worker_line() -> None:
    config = json.loads((ROOT / "railway.worker.json").read_text())
    assert config["deploy"]["startCommand"] == " ".join(procfile_command("worker")).replace(
        sys.executable, "python"
    )
    # The hand-back takes well under a second; the rest is room for a slow machine.
    assert config["deploy"]["drainingSeconds"] >= 10
    assert "healthcheckPath" not in config["deploy"]  # a worker serves no HTTP health check
