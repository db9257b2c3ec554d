"""The analyses run in child processes (engine_process.py): out of the server's GIL, at idle
priority, each child dying alone, none outliving the server."""

from __future__ import annotations

import logging
import os
import signal
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest

from config import Settings
from engine_process import ProcessEngine
from railway_video_generator import AnalysisCancelled, InvalidVideo, RailwayVideoGenerator
from tests.conftest import API, follow, make_client, stored_files, upload, wait_for
from tests.server import free_port, launch, wait_healthy, wait_until


def _stat(pid: int, tid: int) -> list[str]:
    """/proc/<pid>/task/<tid>/stat's fields, numbered from 1 as proc(5) numbers them."""
    text = Path(f"/proc/{pid}/task/{tid}/stat").read_text()
    return ["", text[: text.index(" (")], "comm", *text[text.rindex(")") + 2 :].split()]


def _threads(pid: int) -> list[int]:
    return [int(tid) for tid in os.listdir(f"/proc/{pid}/task")]


def _alive(pid: int) -> bool:
    try:
        return _stat(pid, pid)[3] != "Z"
    except FileNotFoundError:
        return False


def _descendants(pid: int) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                parent = int(_stat(int(entry), int(entry))[4])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found: set[int] = set()
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


def test_analyses_run_in_idle_child_processes_with_the_in_process_result(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    with make_client(Settings(storage_dir=tmp_path, max_workers=1)) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        session_id = upload(client, clips["reps"], analysis_type="workout").json()["sessionId"]
        assert wait_for(client, session_id)["status"] == "completed"
        served = client.get(f"{API}/results/{session_id}").json()["data"]["workout"]
        (child,) = engine.child_pids()
        assert child != os.getpid()
        # Every thread of the child (the engine's decoding and motion threads were started from
        # its main thread and inherit its policy) is SCHED_IDLE (5) at nice 10 or more ...
        for tid in _threads(child):
            fields = _stat(child, tid)
            assert int(fields[41]) == os.SCHED_IDLE and int(fields[19]) >= 10, fields
        # ... while the server keeps its own priority.
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
        assert os.getpriority(os.PRIO_PROCESS, 0) < 10
    here = RailwayVideoGenerator().analyze(str(clips["reps"]), "workout").workout
    assert here is not None
    assert here.total_reps >= 1
    assert served["total_reps"] == here.total_reps
    assert [(s["kind"], s["reps"], s["rep_times"]) for s in served["segments"]] == [
        (s.kind, s.reps, s.rep_times) for s in here.segments
    ]
    # The service stopped its child when it shut down.
    wait_until(lambda: not _alive(child), 5, "the child exits with the service")


def test_a_child_that_dies_fails_only_its_own_session(
    tmp_path: Path, clips: dict[str, Path]
) -> None:
    settings = Settings(storage_dir=tmp_path, max_workers=1)
    with make_client(settings) as client:
        engine = client.app.state.service.engine  # type: ignore[attr-defined]
        doomed = upload(client, clips["long"]).json()["sessionId"]
        # Killed once its child has reported progress: it has started the job. (One that dies
        # before taking its job is replaced, and the job runs: test below.)
        follow(client, doomed, lambda body: body["progress"] > 1)
        (child,) = engine.child_pids()
        os.kill(child, signal.SIGKILL)
        failed = wait_for(client, doomed)
        assert failed["status"] == "failed"
        assert failed["error"] == (
            "The analysis stopped: the analysis process ended unexpectedly (killed by SIGKILL)"
        )
        assert not [p for p in stored_files(settings) if doomed in str(p)]
        # The server goes on, with a new child.
        after = upload(client, clips["short"]).json()["sessionId"]
        assert wait_for(client, after)["status"] == "completed"
        assert engine.child_pids() and engine.child_pids() != [child]


def test_a_cancel_kills_a_child_that_cannot_stop(clips: dict[str, Path]) -> None:
    engine = ProcessEngine()
    cancel = threading.Event()
    started = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            engine.analyze(
                str(clips["long"]), "workout", lambda *_: started.set(), cancel_event=cancel
            )
        except BaseException as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    try:
        assert started.wait(30), "no progress from the child"
        (child,) = engine.child_pids()
        os.kill(child, signal.SIGSTOP)  # frozen: it cannot see the cancel
        asked = time.monotonic()
        cancel.set()
        thread.join(10)
        took = time.monotonic() - asked
        assert not thread.is_alive()
        assert len(outcome) == 1 and isinstance(outcome[0], AnalysisCancelled)
        assert took < 2.0, f"cancel took {took:.2f} s"
        wait_until(lambda: not _alive(child), 5, "the frozen child is killed")
        assert engine.child_pids() == []
    finally:
        cancel.set()
        thread.join(10)
        engine.close()


def test_the_engines_errors_and_logs_come_back(
    tmp_path: Path, clips: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    engine = ProcessEngine()
    try:
        # The engine's log lines are logged here, by the calling thread, under their own names
        # (so they carry the session's context in the server's logs).
        result = engine.analyze(str(clips["short"]), "highlights")
        assert result.video.duration == pytest.approx(3.0, abs=0.1)
        decoded = [r for r in caplog.records if r.name == "analysis.pipeline"]
        assert decoded and decoded[0].getMessage().startswith("decoded ")
        assert decoded[0].thread == threading.get_ident()
        not_a_video = tmp_path / "notes.mp4"
        not_a_video.write_bytes(b"not a video at all" * 100)
        with pytest.raises(InvalidVideo):
            engine.analyze(str(not_a_video), "workout")
        # A failed analysis leaves its child serving ...
        (child,) = engine.child_pids()
        with pytest.raises(InvalidVideo):
            engine.analyze(str(not_a_video), "workout")
        assert engine.child_pids() == [child]
        # ... and one that died while it waited for work is replaced, unnoticed.
        os.kill(child, signal.SIGKILL)
        wait_until(lambda: not _alive(child), 5, "the killed child is gone")
        with pytest.raises(InvalidVideo):
            engine.analyze(str(not_a_video), "workout")
        (replacement,) = engine.child_pids()
        assert replacement != child
    finally:
        engine.close()


def test_children_do_not_outlive_a_killed_server(tmp_path: Path, clips: dict[str, Path]) -> None:
    port = free_port()
    env = {**os.environ, "STORAGE_DIR": str(tmp_path / "storage"), "MAX_WORKERS": "1"}
    url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile(prefix="server-", suffix=".log") as log:
        server = launch(port, env, log)
        try:
            wait_healthy(server, url, 30, lambda: Path(log.name).read_text()[-2000:])
            with open(clips["long"], "rb") as video:
                answer = httpx.post(f"{url}{API}/upload", files={"video": video}, timeout=30)
            session_id = answer.json()["sessionId"]
            wait_until(
                lambda: httpx.get(f"{url}{API}/status/{session_id}").json()["status"]
                == "processing",
                30,
                "the analysis starts",
            )
            family = _descendants(server.pid)
            assert len(family) >= 2, family  # the fork server and the analysis's process
            server.kill()
            server.wait(10)
            wait_until(lambda: not any(map(_alive, family)), 10, "the children exit")
        finally:
            if server.poll() is None:
                server.kill()
                server.wait(10)
