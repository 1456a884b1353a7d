"""``EngineWorker``: runs one engine job (a generator of ``engine.events`` events) in its own QThread.

The worker is a QObject moved to a QThread whose stack is 8 MB (OpenBLAS overflows the 512 KB default of Qt threads
on macOS). Each event is re-emitted as a Qt signal (queued to the GUI thread); the worker never touches a widget.
Cancel is cooperative: ``cancel()`` sets the job's ``CancelToken``, the job raises ``Cancelled`` at its next step.

A worker is created unstarted, as napari's ``create_worker``: connect its signals, then ``start()``; no event can be
emitted before the receivers are connected.
"""

from __future__ import annotations

import time
import traceback
from typing import Any, Callable, Iterator

from PySide6.QtCore import QCoreApplication, QObject, QThread, Signal, Slot

from engine.errors import Cancelled
from engine.events import CancelToken, Event, Log, Metric, Preview, Progress

STACK_SIZE = 8 * 1024 * 1024
_PROGRESS_INTERVAL_S = 0.02  # at most 50 progress signals per second; the last one is always sent

# Threads started by ``EngineWorker.start`` that have not finished yet (also keeps the Python wrappers alive).
_THREADS: dict[QThread, "EngineWorker"] = {}


class EngineWorker(QObject):
    """Runs ``make_job(cancel)`` and re-emits its events as signals.

    Parameters
    ----------
    make_job : callable
        ``make_job(cancel: CancelToken) -> Iterator[Event]``; the generator's return value is the job's result.
    title : str
        Shown in the status bar while the job runs.

    Signals
    -------
    event(object)      every event, in order (``Progress`` throttled to 50 Hz)
    progress(object)   ``Progress`` events
    metric(object)     ``Metric`` events
    log(object)        ``Log`` events
    preview(object)    ``Preview`` events
    result(object)     the job's return value, when it ends normally
    errored(object, str)  the exception and its formatted traceback
    cancelled(str)     the job stopped on its cancel token
    done()             always last, after one of result / errored / cancelled
    """

    event = Signal(object)
    progress = Signal(object)
    metric = Signal(object)
    log = Signal(object)
    preview = Signal(object)
    result = Signal(object)
    errored = Signal(object, str)
    cancelled = Signal(str)
    done = Signal()

    def __init__(self, make_job: Callable[[CancelToken], Iterator[Event]], title: str = "job") -> None:
        super().__init__()
        self.make_job = make_job
        self.title = title
        self.token = CancelToken()
        self.outcome: str | None = None  # "result", "errored" or "cancelled" once done
        self.is_started = False

    def cancel(self) -> None:
        """Ask the job to stop at its next step boundary (thread-safe)."""
        self.token.set()

    def start(self) -> QThread:
        """Move the worker to a new 8 MB-stack QThread and start it. Connect the worker's signals before calling this.

        The thread quits when the worker is done; both are deleted afterwards. ``running_threads()`` lists the threads
        still alive.
        """
        if self.is_started:
            raise RuntimeError(f"worker '{self.title}' was started already")
        self.is_started = True
        thread = QThread()
        thread.setObjectName(f"EngineWorker:{self.title}")
        thread.setStackSize(STACK_SIZE)
        self.moveToThread(thread)
        thread.started.connect(self.run)
        self.done.connect(thread.quit)
        thread.finished.connect(_reaper().reap)  # a QObject slot: runs in the GUI thread
        _THREADS[thread] = self  # keeps both Python wrappers alive until the thread ends
        thread.start()
        return thread

    @Slot()
    def run(self) -> None:
        last_progress = 0.0
        pending: Progress | None = None
        from neurolens_app.workers.engine_preload import (ensure_torch, job_finished, job_started,
                                                          leave_a_core_for_the_gui)

        job_started()  # never import torch's submodules concurrently with the start-up preload
        try:
            ensure_torch()  # imported once, by one thread (engine jobs use torch)
            leave_a_core_for_the_gui()
            job = self.make_job(self.token)
            while True:
                try:
                    ev = next(job)
                except StopIteration as stop:
                    value: Any = stop.value
                    break
                if isinstance(ev, Progress):
                    now = time.perf_counter()
                    if now - last_progress < _PROGRESS_INTERVAL_S and ev.step != ev.total:
                        pending = ev
                        continue
                    last_progress, pending = now, None
                elif pending is not None:
                    self._emit(pending)
                    pending = None
                self._emit(ev)
            if pending is not None:
                self._emit(pending)
            self.outcome = "result"
            self.result.emit(value)
        except Cancelled as exc:
            self.outcome = "cancelled"
            self.cancelled.emit(str(exc))
        except BaseException as exc:  # noqa: BLE001 - every failure goes to the GUI's error dialog
            self.outcome = "errored"
            self.errored.emit(exc, "".join(traceback.format_exception(exc)))
        finally:
            job_finished()
            self.done.emit()

    def _emit(self, ev: Event) -> None:
        self.event.emit(ev)
        if isinstance(ev, Progress):
            self.progress.emit(ev)
        elif isinstance(ev, Metric):
            self.metric.emit(ev)
        elif isinstance(ev, Log):
            self.log.emit(ev)
        elif isinstance(ev, Preview):
            self.preview.emit(ev)


class _Reaper(QObject):
    """Lives in the GUI thread; forgets and deletes a worker and its thread once the thread has finished."""

    @Slot()
    def reap(self) -> None:
        thread = self.sender()
        worker = _THREADS.pop(thread, None)
        if worker is not None:
            worker.deleteLater()
        if thread is not None:
            thread.deleteLater()


_REAPER: _Reaper | None = None


def _reaper() -> _Reaper:
    global _REAPER
    if _REAPER is None:
        _REAPER = _Reaper()
    return _REAPER


def running_threads() -> list[QThread]:
    """Worker threads started by ``EngineWorker.start`` that have not finished."""
    return [t for t in _THREADS if not t.isFinished()]


def wait_for_threads(timeout_s: float = 10.0, cancel: bool = True) -> bool:
    """Cancel the running jobs (optionally) and wait for their threads; True when none is left (quit, tests)."""
    if cancel:
        for worker in list(_THREADS.values()):
            worker.cancel()
    deadline = time.perf_counter() + timeout_s
    while _THREADS and time.perf_counter() < deadline:
        for t in list(_THREADS):
            t.wait(20)
        QCoreApplication.processEvents()  # delivers ``finished`` so the registry empties
    return not running_threads()
