"""Cyclic garbage is collected in the GUI thread only: a Qt object freed by a collection in a worker thread
deadlocked decoder fine-tuning (shiboken waiting for the GIL inside gc)."""

from __future__ import annotations

import gc
import threading

from PySide6.QtWidgets import QMenu

from neurolens_app.app import create_application
from neurolens_app.gui_gc import GuiThreadCollector, install_gui_collector


class _Cycle:
    def __init__(self):
        self.me = self


def test_worker_threads_never_collect_and_the_gui_thread_does(qapp):
    collector = install_gui_collector(qapp)
    assert install_gui_collector(qapp) is collector and not gc.isenabled()
    threads_that_collected: list[str] = []

    def record(phase, info):
        if phase == "start":
            threads_that_collected.append(threading.current_thread().name)

    gc.callbacks.append(record)
    try:
        menu = QMenu()
        menu.cycle = _Cycle()
        menu.cycle.menu = menu  # a widget kept alive only by a reference cycle, as a closed window's
        del menu

        def allocate():  # far past every generation's threshold, as a training loop does
            for _ in range(20 * collector.threshold[0] * collector.threshold[1]):
                _Cycle()

        worker = threading.Thread(target=allocate, name="worker")
        worker.start()
        worker.join()
        assert "worker" not in threads_that_collected
        assert collector.check() > 0
        assert threads_that_collected and set(threads_that_collected) == {threading.main_thread().name}
    finally:
        gc.callbacks.remove(record)


def test_the_application_installs_one_collector_and_uninstall_restores_collection(qapp):
    assert create_application() is qapp
    assert len(qapp.findChildren(GuiThreadCollector)) == 1
    own = GuiThreadCollector()  # a second one, not the app's: restores what it found (disabled) when removed
    own.uninstall()
    assert not gc.isenabled()
