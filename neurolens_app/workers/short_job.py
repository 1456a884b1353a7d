"""``ShortJob``: a small function (read a file, build a thumbnail, a histogram) run in the global QThreadPool.

The result or the error comes back as a signal in the GUI thread. Short jobs cannot be cancelled midway; a job whose
receiver no longer wants the result simply has ``discard()`` called and its result is dropped.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, QThreadPool, Signal, Slot

from neurolens_app.workers.engine_worker import STACK_SIZE

log = logging.getLogger(__name__)
_LIVE: dict = {}  # ShortJob -> _Receiver


class _Signals(QObject):
    result = Signal(object)
    errored = Signal(object, str)
    done = Signal()


class ShortJob(QRunnable):
    """Runs ``fn(*args, **kwargs)`` in a pool thread. Signals live on ``self.signals`` (created in the GUI thread)."""

    def __init__(self, fn: Callable[..., Any], *args, **kwargs) -> None:
        super().__init__()
        self.setAutoDelete(False)
        self.fn, self.args, self.kwargs = fn, args, kwargs
        self.signals = _Signals()
        self.discarded = False

    def discard(self) -> None:
        self.discarded = True

    def run(self) -> None:
        from neurolens_app.workers.engine_preload import short_job_finished, short_job_started

        short_job_started()  # never while torch is being imported (engine_preload.ensure_torch)
        try:
            value = self.fn(*self.args, **self.kwargs)
            if not self.discarded:
                self._emit(self.signals.result, value)
        except BaseException as exc:  # noqa: BLE001 - reported to the GUI
            text = "".join(traceback.format_exception(exc))
            log.warning("short job %s failed: %s\n%s", getattr(self.fn, "__name__", self.fn), exc, text)
            if not self.discarded:
                self._emit(self.signals.errored, exc, text)
        finally:
            short_job_finished()
            self._emit(self.signals.done)

    def _emit(self, signal, *args) -> None:
        # A job can outlive its window (an import still running when the window closes): its signal object is then
        # deleted with the window's objects, and there is nobody left to tell.
        try:
            signal.emit(*args)
        except RuntimeError:
            self.discarded = True


class _Receiver(QObject):
    """Created in the GUI thread, so the job's signals reach the callbacks there (queued connections)."""

    def __init__(self, job: "ShortJob", on_result, on_error) -> None:
        super().__init__()
        self.job, self.on_result, self.on_error = job, on_result, on_error
        job.signals.result.connect(self._result)
        job.signals.errored.connect(self._errored)
        job.signals.done.connect(self._done)

    @Slot(object)
    def _result(self, value) -> None:
        if self.on_result is not None and not self.job.discarded:
            self.on_result(value)

    @Slot(object, str)
    def _errored(self, exc, tb) -> None:
        if self.on_error is not None and not self.job.discarded:
            self.on_error(exc, tb)

    @Slot()
    def _done(self) -> None:
        _LIVE.pop(self.job, None)


def pool() -> QThreadPool:
    p = QThreadPool.globalInstance()
    if p.stackSize() < STACK_SIZE:
        p.setStackSize(STACK_SIZE)
    return p


def submit(fn: Callable[..., Any], *args, on_result: Callable[[Any], None] | None = None,
           on_error: Callable[[BaseException, str], None] | None = None, **kwargs) -> ShortJob:
    """Run ``fn(*args, **kwargs)`` in the pool; ``on_result(value)`` / ``on_error(exc, tb)`` run in the GUI thread."""
    job = ShortJob(fn, *args, **kwargs)
    _LIVE[job] = _Receiver(job, on_result, on_error)  # both kept alive until the job is done
    pool().start(job)
    return job


def wait_for_short_jobs(timeout_ms: int = 10000) -> bool:
    """Wait until the pool is idle and the last results are delivered (quit, tests)."""
    from PySide6.QtCore import QCoreApplication

    ok = pool().waitForDone(timeout_ms)
    QCoreApplication.processEvents()
    return ok
