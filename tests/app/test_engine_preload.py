"""Preloading the engine libraries after the first subject is shown."""

from __future__ import annotations

import sys

from neurolens_app.workers.engine_preload import import_engine_libraries


def test_import_engine_libraries_reports_each_and_skips_missing(caplog):
    took = import_engine_libraries(("json", "torch", "neurolens_no_such_module"))
    assert set(took) == {"json", "torch"} and "torch" in sys.modules
    assert "neurolens_no_such_module" in caplog.text


def test_window_is_built_without_torch_work_in_the_gui_thread(qtbot, window):
    """Showing a preset in the Training panel must not validate it against the model classes (that imports torch)."""
    tp = window.panels["training"]
    assert tp.device.job is None and tp.form.config().model.kind  # a preset is shown, no device job yet


def test_window_preloads_once_after_the_first_subject(qtbot, loaded_window, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="neurolens_app")
    win = loaded_window
    assert win._engine_preloaded
    qtbot.waitUntil(lambda: "engine libraries loaded" in caplog.text, timeout=60000)
    assert "diffusers" in sys.modules and "peft" in sys.modules
    assert win.panels["training"].device.job is not None  # device detection waited for the engine, then ran


def test_preload_and_jobs_exclude_each_other():
    import threading

    from neurolens_app.workers import engine_preload as ep

    ep.job_started()
    try:
        assert ep.import_engine_libraries(("json",)) == {}  # skipped while a job runs
    finally:
        ep.job_finished()
    assert ep._begin_preload()  # a preload is running now...
    started = threading.Event()
    t = threading.Thread(target=lambda: (ep.job_started(), started.set(), ep.job_finished()))
    t.start()
    assert not started.wait(0.3)  # ...so a job waits for it
    ep._end_preload()
    assert started.wait(5)
    t.join(5)
    assert "json" in ep.import_engine_libraries(("json",))  # no job, no preload: it runs


def test_jobs_from_the_window_leave_a_core_for_the_event_loop(monkeypatch):
    from neurolens_app.workers import engine_preload as ep

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert [ep.gui_torch_threads(n) for n in (1, 2, 16)] == [1, 1, 15]
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's explicit choice wins
    assert ep.gui_torch_threads(16) == 4


def test_every_engine_job_runs_with_the_gui_thread_count(qtbot, monkeypatch):
    """Each job's worker thread sets torch's thread count when it starts (OpenMP applies it per thread)."""
    import torch

    from neurolens_app.workers import engine_preload as ep
    from neurolens_app.workers.engine_worker import EngineWorker

    monkeypatch.setattr(ep, "gui_torch_threads", lambda cpus=None: 1)
    torch.set_num_threads(2)
    seen = []
    import threading

    def job(cancel):
        seen.append((threading.get_ident(), torch.get_num_threads()))
        return None
        yield

    for _ in range(2):  # the second job too: no process-wide "already done" shortcut
        w = EngineWorker(job, "threads")
        w.start()
        qtbot.waitUntil(lambda w=w: w.outcome is not None, timeout=10000)
    assert [n for _, n in seen] == [1, 1]
    assert all(t != threading.get_ident() for t, _ in seen)  # in the jobs' worker threads


def test_a_job_never_imports_torch_for_the_thread_policy(monkeypatch):
    """Opening a subject runs as an engine job before the preload: it must not pay torch's import (GIL-held)."""
    from neurolens_app.workers import engine_preload as ep

    class NoTorch:
        def find_spec(self, name, path=None, target=None):
            if name == "torch":
                raise AssertionError("the thread policy imported torch")
            return None

    monkeypatch.delitem(sys.modules, "torch")  # as if torch were not loaded yet (restored afterwards)
    monkeypatch.setattr(sys, "meta_path", [NoTorch(), *sys.meta_path])
    ep.leave_a_core_for_the_gui()  # nothing to do, and no import


def test_model_reading_work_waits_for_the_engine(qtbot, monkeypatch, tmp_path):
    """Before the preload has imported torch, work queued with ``when_engine_ready`` waits; ``engine_loaded`` runs it."""
    from neurolens_app.context import AppContext
    from neurolens_app.state.settings import AppSettings

    ctx = AppContext(AppSettings(tmp_path / "s.ini"))
    monkeypatch.delitem(sys.modules, "torch")  # as before the preload (restored afterwards)
    ran = []
    ctx.when_engine_ready(lambda: ran.append("a"))
    ctx.when_engine_ready(lambda: ran.append("b"))
    assert ran == [] and not ctx.engine_ready
    ctx.engine_loaded.emit()
    assert ran == ["a", "b"] and ctx.engine_ready
    ctx.when_engine_ready(lambda: ran.append("c"))  # once ready: at once
    assert ran == ["a", "b", "c"]


def test_torch_is_imported_by_one_thread_while_other_workers_wait(monkeypatch):
    """The import waits for running pool jobs, and jobs starting meanwhile wait for it (a half-initialised torch seen
    from another thread failed one launch in three)."""
    import importlib
    import threading
    import time

    from neurolens_app.workers import engine_preload as ep

    monkeypatch.setitem(ep._STATE, "torch", False)  # as before the first import
    order = []
    real = importlib.import_module

    def slow_import(name, *a):
        if name == "torch":
            order.append("import-start")
            time.sleep(0.3)
            order.append("import-end")
        return real(name, *a)

    monkeypatch.setattr(ep.importlib, "import_module", slow_import)
    ep.short_job_started()  # a job is running in this thread
    importer = threading.Thread(target=ep.ensure_torch)
    importer.start()
    time.sleep(0.2)
    assert order == []  # the import waits for the running job
    ep.short_job_finished()
    time.sleep(0.1)
    job = threading.Thread(target=lambda: (ep.short_job_started(), order.append("job"), ep.short_job_finished()))
    job.start()
    importer.join(5)
    job.join(5)
    assert order == ["import-start", "import-end", "job"]
    assert ep._STATE["torch"] and ep.ensure_torch() is sys.modules["torch"]
