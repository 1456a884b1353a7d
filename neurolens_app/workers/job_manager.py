"""``JobManager``: starts engine jobs in ``EngineWorker`` threads and reports them to the window.

Panels call ``worker = context.jobs.create(make_job, title)``, connect the worker's signals, then ``worker.start()``
(as napari's ``create_worker``: created unstarted, so no event is emitted before its receivers are connected). The
status bar shows the progress and a Cancel button, errors open the error dialog, and engine ``Log`` events go to the
log. One job per ``slot`` runs at a time (e.g. one GPU job), held from ``create`` on; creating a second in a busy slot
raises ``RuntimeError`` so the panel can disable its action instead.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterator

from PySide6.QtCore import QObject, Signal, Slot

from engine.events import CancelToken, Event, Log
from neurolens_app.workers.engine_worker import EngineWorker

log = logging.getLogger("neurolens_app.jobs")
_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}


class JobManager(QObject):
    """Signals (all emitted in the GUI thread): ``progress(str title, object Progress)``,
    ``failed(str title, object exc, str traceback)``, ``finished(object worker)`` (see ``worker.outcome``:
    "result" / "errored" / "cancelled"), ``busy_changed(bool)``."""

    progress = Signal(str, object)
    failed = Signal(str, object, str)
    finished = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._active: dict[EngineWorker, str] = {}  # worker -> slot
        self._on_result: dict[EngineWorker, Callable[[Any], None] | None] = {}

    def create(self, make_job: Callable[[CancelToken], Iterator[Event]], title: str, *,
               on_result: Callable[[Any], None] | None = None, slot: str = "") -> EngineWorker:
        """An unstarted worker for ``make_job(cancel)``: connect its signals, then call ``worker.start()`` (or
        ``discard(worker)`` to give its slot back). ``on_result(value)`` runs in the GUI thread at the end."""
        if slot and slot in self._active.values():
            raise RuntimeError(f"a '{slot}' job is already running; cancel it first")
        worker = EngineWorker(make_job, title)
        self._active[worker] = slot
        self._on_result[worker] = on_result
        # bound slots of this QObject: queued to the GUI thread; ``sender()`` tells which worker
        worker.progress.connect(self._progress)
        worker.log.connect(self._log)
        worker.result.connect(self._result)
        worker.errored.connect(self._errored)
        worker.cancelled.connect(self._cancelled)
        worker.done.connect(self._done)
        log.info("started: %s", title)
        if len(self._active) == 1:
            self.busy_changed.emit(True)
        return worker

    def discard(self, worker: EngineWorker) -> None:
        """Forget a worker that was created but will not be started (its slot is free again)."""
        if worker in self._active and not worker.is_started:
            self._active.pop(worker, None)
            self._on_result.pop(worker, None)
            worker.deleteLater()
            if not self._active:
                self.busy_changed.emit(False)

    def active(self) -> list[EngineWorker]:
        return list(self._active)

    def slot_busy(self, slot: str) -> bool:
        """Whether a running job holds ``slot`` (e.g. the one device slot that training and reconstruction share)."""
        return slot in self._active.values()

    def cancel_all(self) -> None:
        for w in self._active:
            w.cancel()

    @Slot(object)
    def _progress(self, ev) -> None:
        self.progress.emit(self.sender().title, ev)

    @Slot(object)
    def _log(self, ev: Log) -> None:
        log.log(_LEVELS.get(ev.level, logging.INFO), ev.message)

    @Slot(object)
    def _result(self, value) -> None:
        cb = self._on_result.get(self.sender())
        if cb is not None:
            cb(value)

    @Slot(object, str)
    def _errored(self, exc, tb) -> None:
        title = self.sender().title
        log.error("%s failed: %s", title, exc)
        self.failed.emit(title, exc, tb)

    @Slot(str)
    def _cancelled(self, message: str) -> None:
        log.info("%s: %s", self.sender().title, message)

    @Slot()
    def _done(self) -> None:
        worker = self.sender()
        self._active.pop(worker, None)
        self._on_result.pop(worker, None)
        if worker.outcome == "result":
            log.info("finished: %s", worker.title)
        self.finished.emit(worker)
        if not self._active:
            self.busy_changed.emit(False)
