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
    assert tp._device_job is None and tp.form.config().model.kind  # a preset is shown, no device job yet


def test_window_preloads_once_after_the_first_subject(qtbot, loaded_window, caplog):
    import logging

    caplog.set_level(logging.INFO, logger="neurolens_app")
    win = loaded_window
    assert win._engine_preloaded
    qtbot.waitUntil(lambda: "engine libraries loaded" in caplog.text, timeout=60000)
    assert "diffusers" in sys.modules and "peft" in sys.modules
    assert win.panels["training"]._device_job is not None  # device detection waited for the engine, then ran
