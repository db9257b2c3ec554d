"""The task pool: the specification's script, cancellation, failures, shutdown, bounded memory."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import pytest

from task_manager import BackgroundTaskManager
from tests.conftest import join_all

SPEC_SCRIPT = """
import time
task_manager = BackgroundTaskManager(max_workers=2)
def dummy_task():
    time.sleep(2)
    return {"result": "success"}
session_id = "test-123"
task_manager.submit_task(session_id, dummy_task)
assert task_manager.get_task_status(session_id)["status"] == "running"
time.sleep(3)
assert task_manager.get_task_status(session_id)["status"] == "completed"
"""


def test_specification_script_passes_every_time() -> None:
    # Eight copies at once (each with its own pool) stress the scheduling the script relies on.
    errors: list[BaseException] = []

    def run() -> None:
        try:
            exec(SPEC_SCRIPT, {"BackgroundTaskManager": BackgroundTaskManager})
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(8)]
    for t in threads:
        t.start()
    join_all(threads)
    assert errors == []


def _blocker() -> tuple[threading.Event, Any]:
    release = threading.Event()

    def block() -> str:
        release.wait(10)
        return "released"

    return release, block


def test_status_reports_result_when_completed() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    tasks.submit_task("a", lambda x: x * 2, 21)
    assert tasks.wait("a", timeout=5)
    status = tasks.get_task_status("a")
    assert status["status"] == "completed"
    assert status["result"] == 42
    assert tasks.get_task_status("unknown")["status"] == "not_found"
    tasks.shutdown()


def test_tasks_beyond_the_workers_are_queued_in_order() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    release, block = _blocker()
    tasks.submit_task("first", block)
    tasks.submit_task("second", block)
    tasks.submit_task("third", block)
    assert tasks.get_task_status("first")["status"] == "running"
    assert tasks.get_task_status("second")["queue_position"] == 1
    assert tasks.get_task_status("third")["queue_position"] == 2
    assert tasks.counts() == {"running": 1, "queued": 2}
    release.set()
    for name in ("first", "second", "third"):
        assert tasks.wait(name, timeout=5)
        assert tasks.get_task_status(name)["status"] == "completed"
    assert tasks.counts() == {"running": 0, "queued": 0}
    tasks.shutdown()


def test_cancelling_a_queued_task_drops_it_without_running_it() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    release, block = _blocker()
    ran = threading.Event()
    tasks.submit_task("busy", block)
    tasks.submit_task("waiting", ran.set)
    assert tasks.cancel_task("waiting") is True
    assert tasks.get_task_status("waiting")["status"] == "cancelled"
    assert tasks.counts()["queued"] == 0
    release.set()
    assert tasks.wait("busy", timeout=5)
    tasks.shutdown()
    assert not ran.is_set()


def test_cancelling_a_running_task_stops_it_and_frees_the_worker_within_a_second() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    event = threading.Event()
    iterations = []

    def cooperative(stop: threading.Event) -> None:
        # Like the analysis: checks its stop event every few milliseconds of work.
        while not stop.is_set():
            iterations.append(1)
            time.sleep(0.005)

    tasks.submit_task("long", cooperative, event, cancel_event=event)
    time.sleep(0.1)
    assert tasks.get_task_status("long")["status"] == "running"
    started = time.monotonic()
    assert tasks.cancel_task("long") is True
    assert tasks.wait("long", timeout=1.0)
    assert time.monotonic() - started < 1.0
    assert tasks.get_task_status("long")["status"] == "cancelled"
    # The single worker is free again.
    tasks.submit_task("next", lambda: "ok")
    assert tasks.wait("next", timeout=1.0)
    assert tasks.get_task_status("next")["result"] == "ok"
    tasks.shutdown()


def test_a_task_that_stops_by_raising_after_cancel_is_cancelled_not_failed() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    event = threading.Event()

    def raises_when_stopped(stop: threading.Event) -> None:
        stop.wait(5)
        raise InterruptedError("stopped")

    tasks.submit_task("t", raises_when_stopped, event, cancel_event=event)
    tasks.cancel_task("t")
    assert tasks.wait("t", timeout=2)
    assert tasks.get_task_status("t")["status"] == "cancelled"
    tasks.shutdown()


def test_finished_tasks_cannot_be_cancelled() -> None:
    tasks = BackgroundTaskManager()
    tasks.submit_task("done", lambda: None)
    assert tasks.wait("done", timeout=5)
    assert tasks.cancel_task("done") is False
    assert tasks.cancel_task("never-submitted") is False
    assert tasks.get_task_status("done")["status"] == "completed"
    tasks.shutdown()


def test_a_failing_task_is_failed_with_its_error_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tasks = BackgroundTaskManager()

    def broken() -> None:
        raise ValueError("the video had no frames")

    with caplog.at_level(logging.ERROR, logger="task_manager"):
        tasks.submit_task("bad", broken)
        assert tasks.wait("bad", timeout=5)
    status = tasks.get_task_status("bad")
    assert status["status"] == "failed"
    assert "the video had no frames" in status["error"]
    assert "result" not in status
    record = next(r for r in caplog.records if "bad" in r.getMessage())
    assert record.exc_info is not None  # logged with its traceback, not swallowed
    tasks.shutdown()


def test_same_id_cannot_run_twice_at_once_but_may_be_reused_after() -> None:
    tasks = BackgroundTaskManager()
    release, block = _blocker()
    tasks.submit_task("x", block)
    with pytest.raises(ValueError):
        tasks.submit_task("x", block)
    release.set()
    assert tasks.wait("x", timeout=5)
    tasks.submit_task("x", lambda: "again")
    assert tasks.wait("x", timeout=5)
    assert tasks.get_task_status("x")["result"] == "again"
    tasks.shutdown()


def test_bad_worker_count_is_refused() -> None:
    with pytest.raises(ValueError):
        BackgroundTaskManager(max_workers=0)
    with pytest.raises(ValueError):
        BackgroundTaskManager(max_workers=-3)


def test_shutdown_interrupts_pending_and_running_and_refuses_new_tasks(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="task_manager")
    tasks = BackgroundTaskManager(max_workers=1)
    event, began = threading.Event(), threading.Event()

    def run_until_stopped(stop: threading.Event) -> None:
        began.set()
        stop.wait(10)
        raise RuntimeError("stopped")  # as the engine does: it raises when told to stop

    tasks.submit_task("running", run_until_stopped, event, cancel_event=event)
    tasks.submit_task("pending", lambda: "never")
    assert began.wait(5)
    started = time.monotonic()
    tasks.shutdown(wait=True, cancel_pending=True)
    assert time.monotonic() - started < 2
    # Nobody cancelled them and nothing failed: the pool stopped under them.
    assert tasks.get_task_status("running")["status"] == "interrupted"
    assert tasks.get_task_status("pending")["status"] == "interrupted"
    assert "stopped for the shutdown" in caplog.text
    assert "cancel" not in caplog.text and "failed" not in caplog.text
    with pytest.raises(RuntimeError):
        tasks.submit_task("late", lambda: None)


def test_shutdown_right_after_submit_leaves_no_task_counted_as_running() -> None:
    # The first task counts as running before a thread has picked it up.
    for _ in range(20):
        tasks = BackgroundTaskManager(max_workers=2)
        tasks.submit_task("a", lambda: None)
        tasks.submit_task("b", lambda: None)
        tasks.shutdown(wait=True, cancel_pending=True)
        assert tasks.counts() == {"running": 0, "queued": 0}
        assert {tasks.get_task_status(t)["status"] for t in "ab"} <= {"completed", "interrupted"}


def test_a_task_cancelled_before_the_shutdown_stays_cancelled() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    event = threading.Event()
    tasks.submit_task("t", lambda stop: stop.wait(10), event, cancel_event=event)
    tasks.submit_task("queued", lambda: "never")
    assert tasks.cancel_task("queued")
    tasks.shutdown(wait=True, cancel_pending=True)
    assert tasks.get_task_status("queued")["status"] == "cancelled"
    assert tasks.get_task_status("t")["status"] == "interrupted"


def test_shutdown_waits_no_longer_than_its_timeout() -> None:
    tasks = BackgroundTaskManager(max_workers=1)
    release, began = threading.Event(), threading.Event()

    def stubborn() -> None:  # ignores its stop event
        began.set()
        release.wait(10)

    tasks.submit_task("stubborn", stubborn)
    assert began.wait(5)
    started = time.monotonic()
    assert tasks.shutdown(wait=True, cancel_pending=True, timeout=0.3) is False
    assert 0.3 <= time.monotonic() - started < 2
    release.set()
    assert tasks.wait("stubborn", timeout=5)
    assert tasks.get_task_status("stubborn")["status"] == "interrupted"


def test_finished_records_do_not_accumulate() -> None:
    tasks = BackgroundTaskManager(max_workers=2, keep_finished=50)
    for i in range(3000):
        tasks.submit_task(f"t{i}", int)
    assert tasks.wait("t2999", timeout=30)
    tasks.shutdown()
    assert len(tasks) <= 50
    assert tasks.get_task_status("t2999")["status"] == "completed"
    assert tasks.get_task_status("t0")["status"] == "not_found"


def test_forget_drops_a_finished_record() -> None:
    tasks = BackgroundTaskManager()
    tasks.submit_task("gone", int)
    assert tasks.wait("gone", timeout=5)
    tasks.forget("gone")
    assert tasks.get_task_status("gone")["status"] == "not_found"
    tasks.shutdown()


def test_initializer_runs_in_every_worker_thread_before_its_tasks() -> None:
    prepared: set[int] = set()
    tasks = BackgroundTaskManager(
        max_workers=2, initializer=lambda: prepared.add(threading.get_ident())
    )

    def was_prepared() -> bool:
        return threading.get_ident() in prepared

    release, block = _blocker()
    tasks.submit_task("a", block)
    tasks.submit_task("b", was_prepared)
    assert tasks.wait("b", timeout=5)
    assert tasks.get_task_status("b")["result"] is True
    release.set()
    tasks.shutdown()
    assert len(prepared) == 2
