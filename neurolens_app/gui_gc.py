"""Python's cyclic garbage collector, run in the GUI thread only.

The collector runs in whichever thread happens to allocate when a generation's threshold is crossed. If it then frees
a Qt object caught in a reference cycle (a closed window, a menu, a dialog) from a worker thread, Qt destroys a widget
outside the GUI thread: shiboken deadlocks waiting for the GIL inside ``gc`` (seen: decoder fine-tuning hung while
loading its generator) or Qt crashes. Automatic collection is therefore turned off and the same generational
thresholds are checked on a timer in the GUI thread, as pyqtgraph's ``GarbageCollector`` does. Worker threads still
free everything that is not in a cycle at once (reference counting is unaffected).
"""

from __future__ import annotations

import gc

from PySide6.QtCore import QObject, QTimer

CHECK_INTERVAL_MS = 500


class GuiThreadCollector(QObject):
    """Disables automatic collection; ``check()`` on a GUI-thread timer collects what the thresholds call for."""

    def __init__(self, parent: QObject | None = None, interval_ms: int = CHECK_INTERVAL_MS) -> None:
        super().__init__(parent)
        self.threshold = gc.get_threshold()
        self._was_enabled = gc.isenabled()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> int:
        """Collect the generations whose allocation counts passed their thresholds; returns objects freed."""
        c0, c1, c2 = gc.get_count()
        t0, t1, t2 = self.threshold
        freed = 0
        if c0 > t0:
            freed += gc.collect(0)
            if c1 > t1:
                freed += gc.collect(1)
                if c2 > t2:
                    freed += gc.collect(2)
        return freed

    def uninstall(self) -> None:
        """Stop the timer and give collection back to the interpreter (as it was before)."""
        self.timer.stop()
        if self._was_enabled:
            gc.enable()


def install_gui_collector(app: QObject) -> GuiThreadCollector:
    """The application's collector (one per QApplication; created on first call, in the GUI thread)."""
    existing = app.findChild(GuiThreadCollector)
    return existing if existing is not None else GuiThreadCollector(app)
