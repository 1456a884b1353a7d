"""``IdleQueue``: queued GUI tasks run in order, one per event-loop turn, so a due timer runs between them."""

from __future__ import annotations

import time

from PySide6.QtCore import QTimer

from neurolens_app.workers.idle_queue import IdleQueue


def test_tasks_run_in_order_with_other_timers_between_them(qtbot):
    q = IdleQueue()
    log: list[str] = []

    def task(name):
        def run():
            time.sleep(0.02)  # 20 ms of GUI work each
            log.append(name)
        return run

    probe = QTimer()
    probe.setInterval(5)
    probe.timeout.connect(lambda: log.append("tick"))
    probe.start()
    for name in "abc":
        q.add(task(name))
    assert q.pending() == 3 and log == []  # nothing runs inside add()
    qtbot.waitUntil(lambda: q.pending() == 0 and "c" in log, timeout=5000)
    probe.stop()
    work = [x for x in log if x != "tick"]
    assert work == ["a", "b", "c"]
    first, last = log.index("a"), log.index("c")
    assert "tick" in log[first:last]  # the due 5 ms timer ran between the tasks, not after all of them


def test_a_failing_task_does_not_stop_the_queue(qtbot, caplog):
    q = IdleQueue()
    done = []
    q.add(lambda: 1 / 0)
    q.add(lambda: done.append(True))
    qtbot.waitUntil(lambda: done == [True], timeout=5000)
    assert "queued GUI task failed" in caplog.text
