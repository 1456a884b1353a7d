"""The whole point-and-click flow on the demo subject with the real engine and a tiny preset:
train → cancel → resume → finish → click a test trial → its reconstruction and metrics appear → the experts
panel shows the expert × ROI matrix, and clicking an expert paints it on the brain view."""

from __future__ import annotations

import numpy as np
import pytest
from PySide6.QtCore import Qt

from engine.train.run import Run


@pytest.fixture
def demo_window(qtbot, window, demo_subject_path, tmp_path):
    """The window with the demo subject open and the runs going to a fresh folder; jobs are stopped before it closes."""
    window.settings.set_value("folders/runs", str(tmp_path / "runs"))
    with qtbot.waitSignal(window.subject_loaded, timeout=60000):
        window.open_subject(str(demo_subject_path))
    yield window
    from neurolens_app.workers.engine_worker import wait_for_threads

    window.context.jobs.cancel_all()
    wait_for_threads(60.0)


def _wait_idle(qtbot, panel, timeout=90000):
    qtbot.waitUntil(lambda: panel.worker is None, timeout=timeout)


def test_train_cancel_resume_reconstruct_and_experts(qtbot, demo_window):
    win = demo_window
    subject = win.context.subject.subject
    tp = win.panels["training"]
    tp.preset.setCurrentText("tiny-moe")
    tp.form.embedder.setCurrentText("demo")  # the demo generator reads demo embeddings: no fine-tuning needed
    tp.form.epochs.setValue(4)
    assert tp.start_btn.isEnabled(), tp.config_error.text()

    # --- train, cancel after the first logged metrics ------------------------------------------------------------
    qtbot.mouseClick(tp.start_btn, Qt.MouseButton.LeftButton)
    first = tp.worker
    assert first is not None and not tp.start_btn.isEnabled() and tp.cancel_btn.isEnabled()
    qtbot.waitUntil(lambda: "loss" in tp.curves._data, timeout=90000)
    qtbot.mouseClick(tp.cancel_btn, Qt.MouseButton.LeftButton)
    _wait_idle(qtbot, tp)
    assert first.outcome == "cancelled"
    run = Run.open(tp.run_dir)
    status = run.status()
    assert status["status"] == "cancelled" and 0 < status["step"] < status["total"]
    assert run.latest_checkpoint() is not None
    assert tp.runs.summaries[str(run.path)].resumable
    assert tp.resume_btn.isEnabled()
    cancelled_at = status["step"]

    # --- resume to the end -----------------------------------------------------------------------------------------
    qtbot.mouseClick(tp.resume_btn, Qt.MouseButton.LeftButton)
    second = tp.worker
    assert second is not None
    _wait_idle(qtbot, tp)
    assert second.outcome == "result"
    status = run.status()
    assert status["status"] == "done" and status["step"] == status["total"]
    assert "resuming from step-" in tp.log.toPlainText()
    steps = tp.curves.series()["loss"][0]  # the recorded curve before the cancel, continued live after it
    assert steps.min() <= cancelled_at < steps.max() and steps.max() == pytest.approx(status["total"], abs=2)
    assert win.context.run.folder == run.path  # the finished run is now everyone's selected run
    data_runs = win.panels["data"].runs  # the Data panel lists the new run folder without a manual refresh
    assert run.path.name in [data_runs.item(i).text().split()[0] for i in range(data_runs.count())]
    assert tp.progress.value() == tp.progress.maximum()

    # --- click a test trial: reconstruction and its metrics ---------------------------------------------------------
    rp = win.panels["reconstruction"]
    assert rp.run_dir == run.path and rp.can_reconstruct, rp.decoder_row.decoder_label.text()
    rp.settings_row.samples.setValue(2)
    rp.settings_row.steps.setValue(4)
    gallery = rp.gallery_view.gallery
    item = gallery.item(0)
    image = int(item.data(Qt.ItemDataRole.UserRole + 1))
    gallery.scrollToItem(item)
    qtbot.mouseClick(gallery.viewport(), Qt.MouseButton.LeftButton, pos=gallery.visualItemRect(item).center())
    assert rp.worker is not None
    qtbot.waitUntil(lambda: rp.worker is None and image in rp.results, timeout=90000)
    r = rp.results[image]
    assert r.samples.shape[0] == 2
    np.testing.assert_array_equal(r.gt, np.asarray(subject.images[image]))
    assert {"PixCorr", "SSIM", "MSE", "PSNR"} <= set(r.metrics)
    assert all(v.shape == (2,) and np.isfinite(v).all() for v in r.metrics.values())
    tiles = rp.comparison
    assert tiles.gt_tile.has_image and tiles.sample_tiles[0].has_image and tiles.sample_tiles[1].has_image
    assert rp.comparison.trial_metrics.rowCount() == len(r.metrics) and rp.table_view.table.rowCount() == 1
    assert win.context.subject.trial == int(item.data(Qt.ItemDataRole.UserRole))
    assert (run.path / "recon" / "gui" / f"image-{image:05d}" / "index.json").is_file()

    # --- experts: the expert × ROI matrix, and one expert on the brain ----------------------------------------------
    ep = win.panels["experts"]
    qtbot.waitUntil(lambda: ep.analysis is not None, timeout=60000)
    lv = ep.analysis.levels[0]
    assert (ep.heatmap.rowCount(), ep.heatmap.columnCount()) == (2, len(subject.rois))
    np.testing.assert_allclose(np.nansum(lv.table, axis=0), 1.0, atol=1e-5)
    assert ep.analysis.check is not None and len(ep.analysis.check.js_distance) == 2  # demo = simulation
    ep.heatmap.row_clicked.emit(1)
    ov = win.context.overlays.current_overlay()
    assert ov is not None and "selected expert" in ov.name
    np.testing.assert_allclose(ov.values, lv.voxel_weights[:, 1])
    assert ep.images.count() == min(8, len(np.unique(subject.trials.image_index[subject.split_indices("test")])))
