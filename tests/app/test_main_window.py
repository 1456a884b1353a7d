"""The main window end to end (offscreen): open subjects, overlays, hover/click, trials, errors, export, settings."""

from __future__ import annotations

import re
import threading
import xml.etree.ElementTree as ET

import numpy as np
import pytest
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage

from neurolens_app.overlay_sources import NOISE_CEILING, ROI_LABELS, TRIAL_BETAS, truth_overlay_name


def test_open_subject_fills_panels_and_overlays(loaded_window, surface_subject_path):
    win = loaded_window
    s = win.context.subject.subject
    assert s.n_voxels > 1000 and win.windowTitle().endswith("[SIMULATION]")
    assert win.panels["data"].simulation.isVisibleTo(win)
    assert win.panels["trials"].model.rowCount() == s.n_trials
    assert str(surface_subject_path) in win.settings.recent_subjects()
    assert "opened surface-test" in win.panels["log"].text.toPlainText()  # logging handler -> Log panel
    ov = win.context.overlays
    assert ov.current == ROI_LABELS
    # the unavailable overlays are listed, disabled, with the reason as tooltip
    box = win.brain.overlay_model
    items = {box.item(i).data(Qt.ItemDataRole.UserRole): box.item(i) for i in range(box.rowCount())}
    assert not items[TRIAL_BETAS].isEnabled() and "select a trial" in items[TRIAL_BETAS].toolTip()
    assert not items["Encoding accuracy"].isEnabled()
    img = win.brain.flatmap.overlay_item.image
    assert img is not None and img.ndim == 3  # categorical overlay drawn as RGBA
    # switch through every available overlay; each one draws an image over the cortex
    for name in [n for n in ov.names() if ov.get(n).available]:
        ov.set_current(name)
        img = win.brain.flatmap.overlay_item.image
        assert img is not None and (img[..., 3] > 0).any(), name
    assert ov.get(truth_overlay_name("prf_x")).available


def test_display_controls_change_the_map(loaded_window):
    win = loaded_window
    ov = win.context.overlays
    ov.set_current(NOISE_CEILING)
    brain = win.brain
    brain.vmax.setValue(0.5)
    assert ov.get(NOISE_CEILING).display.limits[1] == pytest.approx(0.5)
    assert brain.flatmap.colorbar.levels()[1] == pytest.approx(0.5)
    brain.cmap.setCurrentIndex(brain.cmap.findData("RdBu_r"))
    assert ov.get(NOISE_CEILING).display.cmap == "RdBu_r"
    before = np.isfinite(brain.flatmap.scalar_image).sum()
    brain.threshold.setValue(0.6)
    after = np.isfinite(brain.flatmap.scalar_image).sum()
    assert 0 < after < before
    brain.opacity.setValue(40)
    assert brain.flatmap.overlay_item.opacity() == pytest.approx(0.4)


def test_hover_and_click_a_voxel(qtbot, loaded_window):
    win = loaded_window
    fm = win.brain.flatmap
    s = win.context.subject.subject
    voxel = int(np.argmax(s.voxels.noise_ceiling))
    pos = fm.mapFromScene(fm.scene_pos_of_voxel(voxel))
    qtbot.mouseMove(fm.viewport(), type(pos)(1, 1))  # a real move, even if the cursor already sat on the target
    qtbot.wait(50)
    qtbot.mouseMove(fm.viewport(), pos)
    qtbot.waitUntil(lambda: re.search(r"voxel \d+", win.statusBar().currentMessage()) is not None, timeout=5000)
    msg = win.statusBar().currentMessage()
    hovered = int(re.search(r"voxel (\d+)", msg).group(1))
    assert "vertex" in msg and "ROI labels:" in msg
    assert fm.vertex_of_voxel(hovered) >= 0
    qtbot.mouseClick(fm.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: win.context.subject.voxel >= 0, timeout=5000)
    v = win.context.subject.voxel
    assert v == hovered
    assert f"Voxel {v}" in win.brain.inspector.header.text()
    x, y = win.brain.inspector.response.listDataItems()[0].getData()
    assert len(x) == int((s.trials.split == 0).sum())


def test_selecting_a_trial_shows_its_betas(qtbot, loaded_window):
    win = loaded_window
    trials = win.panels["trials"]
    trials.split.setCurrentText("test")
    assert trials.model.rowCount() == 30
    idx = trials.model.index(4)
    assert trials.model.data(idx, Qt.ItemDataRole.DecorationRole) is not None
    trials.view.setCurrentIndex(idx)
    t = trials.model.trial_at(4)
    assert win.context.subject.trial == t
    ov = win.context.overlays
    ov.set_current(TRIAL_BETAS)
    np.testing.assert_allclose(ov.get(TRIAL_BETAS).values, np.asarray(win.context.subject.subject.betas[t]))
    win.act_next_trial.trigger()
    assert win.context.subject.trial == t + 1


def test_engine_error_shows_dialog_and_app_keeps_running(qtbot, window, surface_subject_path, tmp_path):
    missing = tmp_path / "nowhere.nlsubj"
    with qtbot.waitSignal(window.error_shown, timeout=20000) as sig:
        window.open_subject(str(missing))
    dlg = sig.args[0]
    assert str(missing) in dlg.message and "no such file" in dlg.message
    assert dlg.isVisible() and not dlg.details.isVisible()
    dlg.details_button.click()
    assert dlg.details.isVisible() and "Traceback" in dlg.details.toPlainText()
    dlg.close()
    with qtbot.waitSignal(window.subject_loaded, timeout=20000):
        window.open_subject(str(surface_subject_path))  # the app still works


def test_unhandled_exception_in_a_thread_is_caught(qtbot, window):
    from neurolens_app.app import ExceptionHook, ExceptionRelay

    relay = ExceptionRelay()
    relay.raised.connect(window.show_error)
    hook = ExceptionHook(relay)
    try:
        with qtbot.waitSignal(window.error_shown, timeout=5000) as sig:
            t = threading.Thread(target=lambda: 1 / 0, name="bad-thread")
            t.start()
            t.join()
        assert "division by zero" in sig.args[0].message
    finally:
        hook.uninstall()
    assert window.isVisible()


def test_export_png_and_svg_at_requested_size(loaded_window, tmp_path):
    win = loaded_window
    png = win.export_figure(tmp_path / "view.png", 900, 420)
    img = QImage(str(png))
    assert (img.width(), img.height()) == (900, 420)
    # the map is in the figure, not just the background
    arr = np.frombuffer(img.constBits(), np.uint8).reshape(420, img.bytesPerLine() // 4, 4)
    assert len(np.unique(arr[..., :3].reshape(-1, 3), axis=0)) > 50
    svg = win.export_figure(tmp_path / "view.svg", 1200, 600)
    root = ET.parse(svg).getroot()
    assert root.get("viewBox").split()[2:] == ["1200", "600"]
    assert root.get("width").startswith("1200") or root.get("width").endswith("mm")
    assert win.export_figure(tmp_path / "view.gif", 10, 10) is None  # unsupported: error dialog, no crash
    assert win.error_dialogs


def test_settings_remember_theme_recent_and_layout(qtbot, loaded_window, settings, surface_subject_path):
    from neurolens_app.main_window import MainWindow

    win = loaded_window
    win.act_theme.trigger()
    assert settings.theme == "dark"
    win.docks["log"].hide()
    win.close()
    win2 = MainWindow(settings)
    qtbot.addWidget(win2)
    assert win2.act_theme.isChecked()
    assert not win2.docks["log"].isVisibleTo(win2)
    assert win2.settings.recent_subjects()[0] == str(surface_subject_path)
    assert win2.recent_menu.actions()[0].toolTip() == str(surface_subject_path)
    win2.set_theme("light")


def test_dialogs_shortcuts_about_and_panel_registry(qtbot, loaded_window):
    from PySide6.QtWidgets import QLabel

    from neurolens_app.panels import PanelSpec, panel_specs

    win = loaded_window
    win.show_shortcuts()
    names = [win._shortcuts.table.item(r, 0).text() for r in range(win._shortcuts.table.rowCount())]
    assert "Open subject" in names and "Keyboard shortcuts" in names
    win.show_about()
    text = win._about.text.toPlainText()
    assert "neurolens" in text and "SIMULATION" in text and "Provenance" in text
    assert {s.name for s in panel_specs()} >= {"data", "brain", "trials", "log"}
    dock = win.add_panel(PanelSpec("extra", "Extra", lambda ctx: QLabel("extra"), area="right",
                                   tabify_with="brain"))
    assert win.panels["extra"].text() == "extra" and dock.objectName() == "dock-extra"
    ov = win.context.overlays
    win.brain.set_overlay("External map", np.arange(ov.get(ROI_LABELS).values.size, dtype=float), select=True)
    assert ov.current == "External map" and win.brain.overlay_box.currentText() == "External map"


def test_run_folder_adds_encoding_overlay_and_routing_reason(qtbot, loaded_window, tmp_path):
    from engine.models.encoding import EncodingMaps
    from neurolens_app.overlay_sources import ENCODING, ROUTING_DOMINANT

    win = loaded_window
    n = win.context.subject.subject.n_voxels
    r = np.linspace(-0.1, 0.6, n).astype(np.float32)
    EncodingMaps(test_r=r, test_r2=r ** 2, noise_ceiling=np.full(n, 0.7, np.float32), normalized_r=r / 0.7,
                 alpha=np.ones(n, np.float32), meta={}).save(tmp_path / "runs" / "encode-1")
    win.settings.set_value("folders/runs", str(tmp_path / "runs"))
    data = win.panels["data"]
    data.refresh_runs()
    assert data.runs.count() == 1
    data.runs.setCurrentRow(0)
    ov = win.context.overlays
    # the maps are read after the engine preload (torch, diffusers): ~17 s on a loaded 2-core machine
    qtbot.waitUntil(lambda: ov.get(ENCODING).available, timeout=60000)
    assert "no trained model" in ov.get(ROUTING_DOMINANT).reason
    ov.set_current(ENCODING)
    np.testing.assert_allclose(ov.get(ENCODING).values, r)
    assert np.nanmax(win.brain.flatmap.scalar_image) > 0.5


def test_categorical_overlay_with_opacity_from_outside(loaded_window):
    win = loaded_window
    n = win.context.subject.subject.n_voxels
    labels = np.arange(n) % 3
    weight = np.linspace(0.2, 1.0, n)
    win.brain.set_overlay("MoE routing: dominant expert", labels, kind="categorical",
                          categories=["expert 0", "expert 1", "expert 2"], alpha=weight, select=True)
    rgba = win.brain.flatmap.overlay_item.image
    alpha = rgba[..., 3][rgba[..., 3] > 0]
    assert alpha.min() < 100 and alpha.max() > 200  # routing weight drawn as opacity
    assert win.brain.flatmap.legend.isVisible() and not win.brain.flatmap.colorbar.isVisible()


def test_demo_subject_opens_labelled_as_simulation(qtbot, window, demo_subject_path, tmp_path, monkeypatch):
    import os

    from engine.data.demo import default_demo_path

    cache = os.environ.get("NEUROLENS_CACHE_DIR")
    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    target = default_demo_path(1)
    target.parent.mkdir(parents=True)
    target.symlink_to(demo_subject_path, target_is_directory=True)  # the session's demo: no second creation
    with qtbot.waitSignal(window.subject_loaded, timeout=60000) as sig:
        window.act_demo.trigger()
    if cache:
        monkeypatch.setenv("NEUROLENS_CACHE_DIR", cache)  # the flatmap raster cache
    s = sig.args[0]
    assert s.is_simulation and "SIMULATION" in window.windowTitle()
    assert window.panels["data"].simulation.isVisibleTo(window)
    ov = window.context.overlays
    truths = [n for n in ov.names() if n.startswith("True ") and ov.get(n).available]
    assert truths and all("(simulation)" in n for n in truths)
    window.brain.load_mesh()
    qtbot.waitUntil(lambda: window.brain.is_drawn, timeout=60000)
    assert "SIMULATION" in window.brain.flatmap.title.text


def test_voxel_inspector_shows_the_selected_runs_encoding_tuning(qtbot, loaded_window, tmp_path):
    """A real `encode` run: clicking a voxel shows its model-predicted response per stimulus category."""
    from engine.events import drive
    from engine.models.encoding_job import encode_job

    win = loaded_window
    subject = win.context.subject.subject
    drive(encode_job(subject, tmp_path / "runs" / "encode-1", embedder="demo", cache_dir=tmp_path / "cache"))
    win.settings.set_value("folders/runs", str(tmp_path / "runs"))
    data = win.panels["data"]
    data.refresh_runs()
    data.runs.setCurrentRow(0)
    sources = win.context.sources
    qtbot.waitUntil(lambda: sources.run_data.get("encoding_tuning") is not None, timeout=30000)
    assert sources.run_data["encoding_categories"] == list(subject.stimuli.categories)
    win.context.subject.set_voxel(5)
    insp = win.brain.inspector
    assert insp.tuning.isVisible()
    assert "Encoding model" in insp.tuning.titleLabel.text
    bars = [i for i in insp.tuning.items if type(i).__name__ == "BarGraphItem"]
    lengths = bars[0].opts["width"]  # horizontal bars: one row per category, every category named
    np.testing.assert_allclose(lengths, sources.run_data["encoding_tuning"][5], rtol=1e-6)
    names = [label for _, label in insp.tuning.getAxis("left")._tickLevels[0]]
    assert names == list(subject.stimuli.categories)


def test_voxel_inspector_keeps_a_text_line_per_category_beside_the_routing_plot(qtbot, demo_subject):
    """In the dock's usual size with a MoE run's routing shown too, the twelve category names do not overlap."""
    from PySide6.QtGui import QFontMetrics

    from neurolens_app.widgets.voxel_inspector import VoxelInspectorWidget

    subject = demo_subject
    insp = VoxelInspectorWidget()
    qtbot.addWidget(insp)
    insp.resize(300, 480)
    insp.show()
    insp.show_voxel(subject, 5, {"routing": np.full((subject.n_voxels, 2), 0.5, np.float32)})
    assert insp.routing.isVisible() and insp.tuning.titleLabel.text == "Category tuning (truth)"
    line = QFontMetrics(insp.tuning.getAxis("left").font()).height()
    n = len(subject.stimuli.categories)
    qtbot.waitUntil(lambda: insp.tuning.getViewBox().sceneBoundingRect().height() >= n * line, timeout=5000)


def test_open_subject_folder_action_opens_a_folder_subject(qtbot, window, surface_subject_path, monkeypatch):
    from PySide6.QtWidgets import QFileDialog

    # the folder picker is the boundary: the user picks the native subject folder
    monkeypatch.setattr(QFileDialog, "getExistingDirectory", staticmethod(lambda *a, **k: str(surface_subject_path)))
    assert window.act_open_folder in window.menuBar().actions()[0].menu().actions()
    with qtbot.waitSignal(window.subject_loaded, timeout=30000):
        window.act_open_folder.trigger()
    assert window.context.subject.subject.path == surface_subject_path
    assert window.windowTitle().startswith(window.context.subject.subject.name)  # the platform adds " — NeuroLens"


def test_a_subject_without_a_surface_mapping_says_so_on_the_flatmap(qtbot, window, tmp_path):
    import dataclasses

    from engine.data.native import write_subject
    from neurolens_app.panels.brain import NO_SURFACE
    from tests.helpers import make_tiny_subject

    subject = make_tiny_subject()
    v = subject.voxels
    subject.voxels = dataclasses.replace(v, hemi=np.full_like(v.hemi, -1), vertex=np.full_like(v.vertex, -1))
    path = write_subject(subject, tmp_path / "nosurf.nlsubj")
    with qtbot.waitSignal(window.subject_loaded, timeout=20000):
        window.open_subject(str(path))
    assert NO_SURFACE in window.brain.flatmap.title.text


def test_a_trained_moe_run_gives_routing_overlays(surface_subject_path, tmp_path):
    """The routing overlays read the trainer's model folder (model/encoder + its z-scoring) and map the run's voxels
    back onto the subject's."""
    from engine.data import open_subject
    from engine.events import drive
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job
    from neurolens_app.overlay_sources import load_run_maps

    drive(train_job(get_preset("tiny-moe").with_overrides({"epochs": 1}), surface_subject_path, tmp_path / "moe"))
    subject = open_subject(surface_subject_path)
    data = load_run_maps(tmp_path / "moe", subject)
    assert "routing_reason" not in data, data.get("routing_reason")
    w = data["routing"]
    assert w.shape[0] == subject.n_voxels and w.shape[1] >= 2
    np.testing.assert_allclose(np.nansum(w, 1)[np.isfinite(w).all(1)], 1.0, atol=1e-4)


def test_unexpected_exception_in_a_job_reaches_the_error_dialog(qtbot, window):
    """A job failing with a plain RuntimeError (not a NeuroLensError: e.g. a device error from inside torch) ends in
    the error dialog with its message and traceback, and the app keeps running."""
    from engine.events import Progress

    def job(cancel):
        yield Progress(1, 2)
        raise RuntimeError("Expected a 'cuda' device type for generator but found 'cpu'")

    with qtbot.waitSignal(window.error_shown, timeout=20000) as sig:
        window.context.jobs.create(job, "Fine-tune decoder").start()
    dlg = sig.args[0]
    assert "Expected a 'cuda' device type for generator" in dlg.message
    dlg.details_button.click()
    assert "Traceback" in dlg.details.toPlainText() and "RuntimeError" in dlg.details.toPlainText()
    dlg.close()
    qtbot.waitUntil(lambda: not window.context.jobs.active(), timeout=10000)
    assert window.isVisible()
