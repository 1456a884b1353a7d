"""EngineWorker and ShortJob: results, errors, cooperative cancel, and no thread left behind."""

from __future__ import annotations

import time

import pytest

from engine.errors import DataError
from engine.events import Log, Metric, Progress, Started
from neurolens_app.workers import EngineWorker, running_threads, submit
from neurolens_app.workers.job_manager import JobManager


def _job(cancel, n=5, delay=0.0, fail_at=None):
    yield Started(job="test")
    for i in range(n):
        cancel.raise_if_set()
        if fail_at == i:
            raise DataError("/data/file.h5", key="betas", expected="2-D", found="1-D")
        time.sleep(delay)
        yield Progress(i + 1, n)
        yield Metric("loss", 1.0 / (i + 1), step=i)
    yield Log("done", "info")
    return {"n": n}


def test_worker_emits_events_and_result(qtbot):
    w = EngineWorker(lambda c: _job(c), "ok")
    events, metrics = [], []
    w.event.connect(events.append)
    w.metric.connect(metrics.append)
    with qtbot.waitSignal(w.result, timeout=10000) as sig:
        w.start()
    assert sig.args == [{"n": 5}]
    qtbot.waitUntil(lambda: not running_threads(), timeout=10000)
    assert isinstance(events[0], Started) and len(metrics) == 5
    assert any(isinstance(e, Progress) and e.step == 5 for e in events)  # the last progress is never dropped


def test_worker_cancel_stops_at_next_step(qtbot):
    w = EngineWorker(lambda c: _job(c, n=500, delay=0.01), "slow")
    got = []
    w.progress.connect(got.append)
    with qtbot.waitSignal(w.cancelled, timeout=10000):
        w.start()
        qtbot.waitUntil(lambda: len(got) > 0, timeout=10000)
        w.cancel()
    qtbot.waitUntil(lambda: not running_threads(), timeout=10000)
    assert w.outcome == "cancelled" and got[-1].step < 500


def test_worker_error_carries_exception_and_traceback(qtbot):
    w = EngineWorker(lambda c: _job(c, fail_at=2), "bad")
    with qtbot.waitSignal(w.errored, timeout=10000) as sig:
        w.start()
    exc, tb = sig.args
    assert isinstance(exc, DataError) and "key 'betas'" in str(exc) and "Traceback" in tb
    qtbot.waitUntil(lambda: not running_threads(), timeout=10000)


def test_job_manager_slots_and_callbacks_run_in_gui_thread(qtbot):
    import threading

    mgr = JobManager()
    seen = {}
    w = mgr.create(lambda c: _job(c, n=50, delay=0.005), "slot job",
                   on_result=lambda v: seen.update(v=v, main=threading.current_thread() is threading.main_thread()),
                   slot="gpu")
    with pytest.raises(RuntimeError, match="already running"):
        mgr.create(lambda c: _job(c), "second", slot="gpu")  # the slot is held from creation on
    with qtbot.waitSignal(mgr.finished, timeout=10000):
        w.start()
    assert w.outcome == "result" and seen == {"v": {"n": 50}, "main": True}
    assert not mgr.active()


def test_short_job_result_and_error(qtbot):
    res, errs = [], []
    submit(lambda: 41 + 1, on_result=res.append)
    submit(lambda: [][1], on_error=lambda e, tb: errs.append(e))
    qtbot.waitUntil(lambda: bool(res and errs), timeout=5000)
    assert res == [42] and isinstance(errs[0], IndexError)


def test_a_worker_is_created_unstarted_so_a_late_connection_gets_the_first_event(qtbot):
    """As napari's ``create_worker``: nothing runs before ``start()``, so a signal connected after creation (however
    long after) receives the job's very first event, and a discarded worker frees its slot without running."""
    mgr = JobManager()
    ran = []

    def job(cancel):
        ran.append(True)
        yield Started(job="first")
        yield Progress(1, 1)

    w = mgr.create(job, "unstarted", slot="gpu")
    qtbot.wait(200)  # a thread started at creation would have emitted its events by now
    assert not ran and not running_threads() and mgr.slot_busy("gpu")
    events = []
    w.event.connect(events.append)
    with qtbot.waitSignal(mgr.finished, timeout=10000):
        w.start()
        with pytest.raises(RuntimeError, match="started already"):
            w.start()
    assert isinstance(events[0], Started) and events[0].job == "first"

    idle = mgr.create(job, "never started", slot="gpu")
    assert mgr.slot_busy("gpu")
    with qtbot.waitSignal(mgr.busy_changed, timeout=1000) as sig:
        mgr.discard(idle)
    assert sig.args == [False] and not mgr.slot_busy("gpu") and len(ran) == 1
