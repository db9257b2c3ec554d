"""The analysis engine in child processes, so that it never shares the server's GIL.

An analysis is Python and numpy between the native calls of decoding and pose inference: run in a
thread of the web process, it held the GIL a third of the time, and each request of the event
loop waited for it (status p99 went from 5.5 ms to 13 ms with two analyses running; README
"Performance"). `ProcessEngine.analyze` has the engine's signature and runs the same
`RailwayVideoGenerator.analyze` in a child process of the calling thread's own, which stays for the
thread's next analyses (with the pose models it has loaded):

- progress reports and the engine's log lines come back over a pipe and are handed to the
  caller's callback and to this process's loggers (so they carry the session's id), in the
  calling thread;
- a cancel reaches the child at once and stops it at its next frame; a child that has not
  stopped `_CANCEL_GRACE_S` later is killed, so a cancel never waits for a starved child;
- the result, or the engine's exception, comes back as the call's return or raise;
- a child that dies mid-analysis (a decoder crash, the kernel's OOM killer) fails that analysis
  with `AnalysisCrashed` and the server goes on; the next analysis gets a new child;
- a child runs under SCHED_IDLE and nice 10, with every thread it starts: it gets the CPU only
  when the server does not want it, while the calling thread keeps its priority, so a cancel or
  a shutdown is acted on promptly however busy the machine is;
- a child whose parent goes away (even by SIGKILL) exits: its end of the pipe closes.

The web process starts its children from a fork server that has imported the engine once
("forkserver": forking the many-threaded server itself is not safe); an RQ work horse, a
single-threaded process that has imported the engine already, forks them directly ("fork").
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from analysis.pose import silence_runtime_banner
from railway_video_generator import (
    AnalysisCancelled,
    AnalysisOptions,
    AnalysisResult,
    RailwayVideoGenerator,
)

logger = logging.getLogger(__name__)

CHILD_NICE = 10
"""The nice value of the analysis processes (with SCHED_IDLE, which alone would do)."""

_CANCEL_GRACE_S = 0.5
"""How long a cancelled child may take to stop by itself before it is killed."""

_POLL_S = 0.05
"""How often the calling thread looks at its cancel event while the child works."""

_PRELOAD = ["railway_video_generator", "analysis.pose", "analysis.pipeline"]
"""What the fork server imports once, so that each child starts in milliseconds."""


class AnalysisCrashed(RuntimeError):
    """The process of an analysis died before it answered (a crash, or killed from outside)."""


class _NeverStarted(Exception):
    """The child was gone before it took the job."""


class ProcessEngine:
    """`analyze` in a child process per calling thread; `close()` ends them all.

    Args:
        start_method: "forkserver" (the web process) or "fork" (a single-threaded process that
            has imported the engine, such as an RQ work horse).
    """

    def __init__(self, start_method: str = "forkserver") -> None:
        self._context = multiprocessing.get_context(start_method)
        if start_method == "forkserver":
            self._context.set_forkserver_preload(_PRELOAD)
        self._local = threading.local()
        self._children: set[_Child] = set()
        self._lock = threading.Lock()
        self._closed = False

    def analyze(
        self,
        video_path: str,
        analysis_type: str = "highlights",
        progress_callback: Callable[[int, str], None] | None = None,
        *,
        cancel_event: threading.Event | None = None,
        output_dir: str | None = None,
        options: AnalysisOptions | None = None,
    ) -> AnalysisResult:
        """As `RailwayVideoGenerator.analyze`, in this thread's child process.

        Raises:
            What the engine raises; AnalysisCrashed when the child died.
        """
        cancel_event = cancel_event or threading.Event()
        if cancel_event.is_set():
            raise AnalysisCancelled()
        job = (video_path, analysis_type, output_dir, options)
        for _ in range(2):
            child = self._child()
            try:
                child.send(job)
                return child.follow(progress_callback, cancel_event)
            except _NeverStarted:
                # It had died while it waited for work (its pipe was not closed yet when the
                # job went): a new child takes the job, once.
                self._forget(child)
                if cancel_event.is_set():
                    raise AnalysisCancelled() from None
            except BaseException:
                if not child.alive:
                    self._forget(child)
                raise
        raise AnalysisCrashed("the analysis process could not be started")

    def child_pids(self) -> list[int]:
        """The process ids of the children alive now."""
        with self._lock:
            return [child.pid for child in self._children if child.alive]

    def close(self) -> None:
        """End every child (those running an analysis are killed); later calls start none."""
        with self._lock:
            self._closed = True
            children, self._children = list(self._children), set()
        for child in children:
            child.close()

    def _child(self) -> _Child:
        child: _Child | None = getattr(self._local, "child", None)
        if child is not None and child.alive:
            return child
        with self._lock:
            if self._closed:
                raise AnalysisCancelled()  # the service is shutting down
            child = _Child(self._context)
            self._children.add(child)
        self._local.child = child
        return child

    def _forget(self, child: _Child) -> None:
        child.close()
        with self._lock:
            self._children.discard(child)
        if getattr(self._local, "child", None) is child:
            self._local.child = None


class _Child:
    """One child process and the calling side of its pipe."""

    def __init__(self, context: Any) -> None:
        self.conn, child_end = context.Pipe()
        self.process = context.Process(
            target=_serve, args=(child_end, self.conn), name="analysis", daemon=True
        )
        self.process.start()
        child_end.close()
        self.pid: int = self.process.pid
        self._dead = False

    @property
    def alive(self) -> bool:
        return not self._dead and self.process.is_alive()

    def send(self, job: tuple[Any, ...]) -> None:
        """Give the child a job. Raises _NeverStarted if it has died."""
        try:
            self.conn.send(("run", job))
        except OSError:
            self.close()
            raise _NeverStarted() from None

    def follow(
        self, progress: Callable[[int, str], None] | None, cancel_event: threading.Event
    ) -> AnalysisResult:
        """The answer to the job sent: its result, or the engine's exception raised."""
        try:
            kind, answer = self._follow(progress, cancel_event)
        except BaseException:
            # Anything but the child's own answer (a callback that raised, a crash, a
            # KeyboardInterrupt) leaves it in an unknown state: it does not serve again.
            self.close()
            raise
        if kind == "error":
            raise answer
        if kind == "cancelled":
            raise AnalysisCancelled()
        return answer

    def _follow(
        self, progress: Callable[[int, str], None] | None, cancel_event: threading.Event
    ) -> tuple[str, Any]:
        """The child's answer to the job: ("done", result), ("error", exception) or
        ("cancelled", None), passing on its progress and logs meanwhile."""
        cancelled_at: float | None = None
        started = False
        while True:
            if cancelled_at is None and cancel_event.is_set():
                cancelled_at = time.monotonic()
                self.conn.send(("cancel",))
            if cancelled_at is not None and time.monotonic() - cancelled_at > _CANCEL_GRACE_S:
                self.close(wait=0)
                raise AnalysisCancelled()
            if not self.conn.poll(_POLL_S):
                continue
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                self.close()
                if not started:
                    raise _NeverStarted() from None
                if cancelled_at is not None:
                    raise AnalysisCancelled() from None
                raise AnalysisCrashed(
                    f"the analysis process ended unexpectedly ({_how_it_ended(self.process)})"
                ) from None
            kind = message[0]
            if kind == "started":
                started = True
            elif kind == "progress":
                if progress is not None and cancelled_at is None:
                    progress(message[1], message[2])
            elif kind == "log":
                _, level, name, text = message
                logging.getLogger(name).log(level, "%s", text)
            elif kind in ("done", "error"):
                return kind, message[1]
            elif kind == "cancelled":
                return kind, None

    def close(self, wait: float = 0.2) -> None:
        """End the child, without waiting for it for long: a closed pipe makes an idle one exit;
        one still there `wait` seconds later (busy, frozen, or short of CPU) is killed. Once
        is enough: later calls do nothing."""
        if self._dead:
            return
        self._dead = True
        try:
            self.conn.close()
        except OSError:
            pass
        self.process.join(timeout=wait)
        if self.process.exitcode is None:
            _restore_priority(self.pid)
            self.process.kill()
            # Not joined: a killed process must still run to exit, and under SCHED_IDLE on a
            # busy machine that can take seconds (a test saw a cleanup wait 5 s for it). It
            # holds nobody up meanwhile; multiprocessing reaps it later.


def _how_it_ended(process: Any) -> str:
    process.join(timeout=1)
    code = process.exitcode
    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit status {code}"


# -- the child ------------------------------------------------------------------------------------


def _serve(conn: Connection, parents_end: Connection) -> None:
    """The child's main: run the jobs that come down the pipe, one at a time, for ever.

    A reader thread owns the receiving side: it queues jobs, sets the cancel event, and ends the
    process when the pipe closes (the parent closed it, or died)."""
    parents_end.close()  # a forked child has it too; kept, the pipe would never close
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _lower_priority()
    # The pose runtime's one-off line on stderr would be the only log line that is not JSON.
    silence_runtime_banner()
    send_lock = threading.Lock()

    def send(message: tuple[Any, ...]) -> None:
        with send_lock:
            conn.send(message)

    _log_through(send)
    jobs: queue.SimpleQueue[tuple[Any, ...]] = queue.SimpleQueue()
    cancel = threading.Event()

    def read() -> None:
        try:
            while True:
                message = conn.recv()
                if message[0] == "cancel":
                    cancel.set()
                else:
                    jobs.put(message[1])
        except (EOFError, OSError):
            pass
        os._exit(0)  # the parent is gone or done with us: nobody to answer

    threading.Thread(target=read, name="pipe", daemon=True).start()
    engine = RailwayVideoGenerator()
    while True:
        video_path, analysis_type, output_dir, options = jobs.get()
        cancel.clear()  # a cancel that came after the previous job had ended
        send(("started",))
        try:
            result = engine.analyze(
                video_path,
                analysis_type,
                lambda percent, text: send(("progress", percent, text)),
                cancel_event=cancel,
                output_dir=output_dir,
                options=options,
            )
        except AnalysisCancelled:
            send(("cancelled",))
        except BaseException as exc:  # every error goes to the caller, which raises it
            send(("error", _portable(exc)))
        else:
            send(("done", result))


def _portable(exc: BaseException) -> BaseException:
    """`exc` if it survives pickling, else a RuntimeError with its type and text."""
    try:
        return pickle.loads(pickle.dumps(exc))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _lower_priority() -> None:
    """SCHED_IDLE and CHILD_NICE for this process's thread; the threads it starts inherit them."""
    if not sys.platform.startswith("linux"):
        return
    try:
        os.setpriority(os.PRIO_PROCESS, 0, max(CHILD_NICE, os.getpriority(os.PRIO_PROCESS, 0)))
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass  # still isolated from the server's GIL; only sharing the CPU more evenly


def _restore_priority(pid: int) -> None:
    """Give a child about to be killed the normal policy back, so that it gets the CPU to exit
    at once. Only a privileged process may (CAP_SYS_NICE); elsewhere it exits when the CPU is
    free."""
    if not sys.platform.startswith("linux"):
        return
    try:
        threads = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return
    for tid in threads:
        try:
            os.sched_setscheduler(int(tid), os.SCHED_OTHER, os.sched_param(0))
        except OSError:
            return


class _PipeHandler(logging.Handler):
    def __init__(self, send: Callable[[tuple[Any, ...]], None]) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
            if record.exc_info:
                text += "\n" + logging.Formatter().formatException(record.exc_info)
            self._send(("log", record.levelno, record.name, text))
        except Exception:
            self.handleError(record)


def _log_through(send: Callable[[tuple[Any, ...]], None]) -> None:
    """Every log record of the child goes to the parent, which logs it as its own."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(_PipeHandler(send))
    root.setLevel(logging.INFO)
