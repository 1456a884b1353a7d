"""``IdleQueue``: small GUI-thread tasks run one per event-loop turn, in the order they were queued.

Why: when a subject opens, every panel has a few milliseconds of follow-up work (thumbnails, run listings, preset
sizing). Scheduled together with ``QTimer.singleShot(0, ...)`` they all fall due at the same instant and run back to
back, before any other timer, input event or repaint — one long stall made of short pieces. Here the next task is
scheduled only when the previous one has finished, so whatever fell due meanwhile runs between them.
"""

from __future__ import annotations

import logging
from collections import deque
from typing import Callable

from PySide6.QtCore import QObject, QTimer

log = logging.getLogger(__name__)


class IdleQueue(QObject):
    """``add(fn)`` queues ``fn`` (a GUI-thread callable); tasks run one per event-loop turn."""

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._tasks: deque[Callable[[], None]] = deque()
        self._armed = False

    def add(self, fn: Callable[[], None]) -> None:
        self._tasks.append(fn)
        self._arm()

    def pending(self) -> int:
        return len(self._tasks)

    def _arm(self) -> None:
        if not self._armed and self._tasks:
            self._armed = True
            QTimer.singleShot(0, self, self._run_one)

    def _run_one(self) -> None:
        self._armed = False
        if not self._tasks:
            return
        fn = self._tasks.popleft()
        try:
            fn()
        except Exception:  # noqa: BLE001 - one failing task must not stop the others
            log.exception("a queued GUI task failed")
        finally:
            self._arm()
