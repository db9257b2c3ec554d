"""A bounded pool of worker threads that runs analyses in the background.

`BackgroundTaskManager` wraps `concurrent.futures.ThreadPoolExecutor` and adds what the executor
lacks: a status per task id, cooperative cancellation of running work through a per-task
`threading.Event`, the queue position of waiting tasks, and a bounded memory of finished ones.
A task stopped by `cancel_task` ends `cancelled`; one stopped because the pool shut down ends
`interrupted` (nobody cancelled it: its owner may run it again after a restart).

A task counts as `running` from the moment a free worker is certain to take it, not from the
moment the thread gets scheduled: the counts of running and queued tasks are kept under the lock,
so `submit_task` followed by `get_task_status` answers the same thing every time.
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from logs import session_context

logger = logging.getLogger(__name__)


class TaskStatus(StrEnum):
    """Where a task is in the pool."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"


_FINISHED = frozenset(
    {TaskStatus.COMPLETED, TaskStatus.FAILED, TaskStatus.CANCELLED, TaskStatus.INTERRUPTED}
)


@dataclass
class _Task:
    session_id: str
    cancel_event: threading.Event
    status: TaskStatus
    future: Future[Any] | None = None
    # What the task reports once it stops because its event was set: the first reason given.
    stop_reason: TaskStatus | None = None
    result: Any = None
    error: str | None = None
    submitted_at: float = field(default_factory=time.time)
    started_at: float | None = None
    finished_at: float | None = None


class BackgroundTaskManager:
    """Run callables on at most `max_workers` threads, by session id.

    Args:
        max_workers: how many tasks run at once.
        keep_finished: how many finished task records are remembered for `get_task_status`;
            older ones are forgotten so that records do not pile up forever.
        initializer: run once in each worker thread before its first task (for example to
            lower the thread's CPU priority).

    Raises:
        ValueError: `max_workers` or `keep_finished` is smaller than 1.
    """

    def __init__(
        self,
        max_workers: int = 2,
        keep_finished: int = 1000,
        initializer: Callable[[], object] | None = None,
    ) -> None:
        if max_workers < 1:
            raise ValueError("max_workers must be greater than 0")
        if keep_finished < 1:
            raise ValueError("keep_finished must be greater than 0")
        self.max_workers = max_workers
        self._keep_finished = keep_finished
        self._executor = ThreadPoolExecutor(
            max_workers, thread_name_prefix="analysis", initializer=initializer
        )
        self._lock = threading.Lock()
        self._tasks: dict[str, _Task] = {}
        self._queue: OrderedDict[str, None] = OrderedDict()  # waiting ids, oldest first
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._running = 0
        self._shutdown = False

    # Analyses run on this process's threads: a restart of the process interrupts them.
    in_process = True

    # -- submitting -------------------------------------------------------------------------

    def submit_analysis(
        self, session_id: str, analyse: Callable[[str, threading.Event], Any]
    ) -> None:
        """`TaskBackend.submit_analysis`: run `analyse(session_id, cancel_event)` on the pool,
        with the event `cancel_task` sets."""
        event = threading.Event()
        self.submit_task(session_id, analyse, session_id, event, cancel_event=event)

    def submit_task(
        self,
        session_id: str,
        fn: Callable[..., Any],
        *args: Any,
        cancel_event: threading.Event | None = None,
        **kwargs: Any,
    ) -> Future[Any]:
        """Schedule `fn(*args, **kwargs)` under `session_id`.

        Args:
            session_id: the task's id; an id whose task has finished may be reused.
            fn: the work. To be cancellable while running it should watch `cancel_event`.
            cancel_event: the event set by `cancel_task`; pass the same one to `fn`. A new one
                is made when omitted (the task can then only be cancelled while queued).

        Returns:
            The executor's future (its result is `fn`'s return value).

        Raises:
            RuntimeError: after `shutdown`.
            ValueError: a task with this id is still queued or running.
        """
        event = cancel_event if cancel_event is not None else threading.Event()
        with self._lock:
            if self._shutdown:
                raise RuntimeError("cannot submit a task after shutdown")
            current = self._tasks.get(session_id)
            if current is not None and current.status not in _FINISHED:
                raise ValueError(f"task {session_id} is already {current.status}")
            self._finished.pop(session_id, None)
            # A free worker will take this task at once: call it running now, so the status
            # does not depend on how fast the thread gets scheduled.
            free = self._running + len(self._queue) < self.max_workers
            task = _Task(session_id, event, TaskStatus.RUNNING if free else TaskStatus.QUEUED)
            if free:
                self._running += 1
            else:
                self._queue[session_id] = None
            self._tasks[session_id] = task
            # Run in a context bound to the session, so every log line of the task (the
            # failure logged below included) carries its id.
            task.future = self._executor.submit(
                session_context(session_id).run, self._run, task, fn, args, kwargs
            )
        return task.future

    def _run(self, task: _Task, fn: Callable[..., Any], args: Any, kwargs: Any) -> Any:
        with self._lock:
            if task.status == TaskStatus.QUEUED:
                self._queue.pop(task.session_id, None)
                task.status = TaskStatus.RUNNING
                self._running += 1
            task.started_at = time.time()
        status, result, error = TaskStatus.COMPLETED, None, None
        try:
            if task.cancel_event.is_set():
                status = task.stop_reason or TaskStatus.CANCELLED
                return None
            result = fn(*args, **kwargs)
            if task.cancel_event.is_set():
                status = task.stop_reason or TaskStatus.CANCELLED
            return result
        except BaseException as exc:
            if task.cancel_event.is_set():
                # Stopping because we asked it to is not a failure.
                status = task.stop_reason or TaskStatus.CANCELLED
                if status == TaskStatus.INTERRUPTED:
                    logger.info("task %s stopped for the shutdown", task.session_id)
                else:
                    logger.info("task %s stopped after cancellation", task.session_id)
            else:
                status, error = TaskStatus.FAILED, f"{type(exc).__name__}: {exc}"
                logger.exception("task %s failed", task.session_id)
            raise
        finally:
            with self._lock:
                self._running -= 1
                self._finish_locked(task, status, result, error)

    def _finish_locked(
        self, task: _Task, status: TaskStatus, result: Any = None, error: str | None = None
    ) -> None:
        task.status, task.result, task.error = status, result, error
        task.finished_at = time.time()
        if self._tasks.get(task.session_id) is not task:
            return  # forgotten (or replaced) while it ran
        self._finished[task.session_id] = None
        while len(self._finished) > self._keep_finished:
            old, _ = self._finished.popitem(last=False)
            self._tasks.pop(old, None)

    # -- cancelling -------------------------------------------------------------------------

    def cancel_task(self, session_id: str) -> bool:
        """Cancel a task, like `Future.cancel()` but also for running work.

        A queued task is dropped at once. A running task has its cancel event set and stops as
        soon as `fn` notices; it reports `cancelled` when it has returned.

        Returns:
            True when the task was queued or running; False when it is unknown or finished.
        """
        with self._lock:
            task = self._tasks.get(session_id)
            if task is None or task.status in _FINISHED:
                return False
            self._stop_locked(task, TaskStatus.CANCELLED)
            return True

    def _stop_locked(self, task: _Task, reason: TaskStatus) -> None:
        if task.stop_reason is None:
            task.stop_reason = reason
        task.cancel_event.set()
        if task.status == TaskStatus.QUEUED:
            assert task.future is not None
            # The executor has not started it; cancel() drops it from its queue.
            if task.future.cancel():
                self._queue.pop(task.session_id, None)
                self._finish_locked(task, task.stop_reason)

    def wait(self, session_id: str, timeout: float | None = None) -> bool:
        """Block until the task is finished; True when it is (or is unknown).

        `_run` records the outcome in its `finally`, before the executor resolves the future,
        so a resolved future means the status is final."""
        with self._lock:
            task = self._tasks.get(session_id)
        if task is None or task.future is None:
            return True
        try:
            task.future.exception(timeout=timeout)
        except TimeoutError:
            return False
        except CancelledError:
            pass  # dropped while queued: cancel_task recorded it
        return True

    # -- querying ---------------------------------------------------------------------------

    def get_task_status(self, session_id: str) -> dict[str, Any]:
        """A snapshot: `status`, plus `result` when completed, `error` when failed,
        `queue_position` (1-based) when queued, and the timestamps. `status` is "not_found" for
        an unknown id."""
        with self._lock:
            task = self._tasks.get(session_id)
            if task is None:
                return {"session_id": session_id, "status": "not_found"}
            info: dict[str, Any] = {
                "session_id": session_id,
                "status": task.status.value,
                "submitted_at": task.submitted_at,
                "started_at": task.started_at,
                "finished_at": task.finished_at,
            }
            if task.status == TaskStatus.QUEUED:
                info["queue_position"] = list(self._queue).index(session_id) + 1
            elif task.status == TaskStatus.COMPLETED:
                info["result"] = task.result
            elif task.status == TaskStatus.FAILED:
                info["error"] = task.error
            return info

    def queue_position(self, session_id: str) -> int | None:
        """1-based place among the waiting tasks, or None when not waiting."""
        with self._lock:
            if session_id not in self._queue:
                return None
            return list(self._queue).index(session_id) + 1

    def counts(self) -> dict[str, int]:
        """How many tasks are running and queued right now."""
        with self._lock:
            return {"running": self._running, "queued": len(self._queue)}

    def forget(self, session_id: str) -> None:
        """Drop the record of a finished task (a running one is kept until it ends)."""
        with self._lock:
            task = self._tasks.get(session_id)
            if task is not None and task.status in _FINISHED:
                del self._tasks[session_id]
                self._finished.pop(session_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._tasks)

    # -- stopping ---------------------------------------------------------------------------

    def shutdown(
        self, wait: bool = True, cancel_pending: bool = True, timeout: float | None = None
    ) -> bool:
        """Stop accepting tasks.

        Args:
            wait: return once every worker has finished (or `timeout` has passed).
            cancel_pending: drop the queued tasks and ask the running ones to stop; they end
                `interrupted`, not `cancelled`.
            timeout: with `wait`, the most seconds to wait; None waits as long as it takes.

        Returns:
            False when `timeout` passed with a task still running; True otherwise.
        """
        with self._lock:
            self._shutdown = True
            if cancel_pending:
                for task in list(self._tasks.values()):
                    if task.status not in _FINISHED:
                        self._stop_locked(task, TaskStatus.INTERRUPTED)
            futures = [
                t.future
                for t in self._tasks.values()
                if t.status not in _FINISHED and t.future is not None
            ]
        # Not `cancel_futures`: the executor would also drop a task counted as running that no
        # thread has picked up yet, and its record would stay `running` for ever. Queued ones are
        # dropped above; the rest see their event at once and finish through `_run`.
        if not wait or timeout is None:
            self._executor.shutdown(wait=wait)
            return True
        self._executor.shutdown(wait=False)
        _, not_done = concurrent.futures.wait(futures, timeout)
        return not not_done
