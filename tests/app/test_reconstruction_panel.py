"""Reconstruction panel: the metrics table, best/worst, the PNG / CSV exports, fine-tuning and reconstructing from the
panel, a run read again, the CLI's defaults, the progress line, and the one selected run that every panel follows.
(Reading reconstruction folders is ``engine.recon.results``'s: tests/engine/recon/test_results.py.)"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image
from PySide6.QtCore import Qt

from engine.recon.results import TrialRecon, comparison_grid, recon_folders
from tests.engine.recon.test_results import write_recon_folder


def _result(i, pix):
    gt = np.full((8, 8, 3), 10 * i, np.uint8)
    return TrialRecon(i, [i], "cat", gt, None, np.stack([gt, gt]), {"PixCorr": np.array([pix, pix]),
                                                                   "MSE": np.array([1 - pix, 1 - pix])})


def test_table_best_worst_and_exports(qtbot, window, tmp_path):
    rp = window.panels["reconstruction"]
    rp._on_recon_result([_result(5, 0.2), _result(7, 0.9), _result(9, 0.5)])
    assert rp.table_view.table.rowCount() == 3 and rp.current_image in (5, 7, 9)
    rp.table_view.rank_metric.setCurrentText("PixCorr")
    assert rp.show_extreme(best=True) == 7 and rp.current_image == 7
    assert rp.show_extreme(best=False) == 5
    rp.table_view.rank_metric.setCurrentText("MSE")  # lower is better
    assert rp.show_extreme(best=True) == 7
    assert rp.comparison.trial_metrics.rowCount() == 2 and rp.comparison.gt_tile.has_image

    rp.table_view.table.sortItems(3)  # PixCorr ascending
    out = rp.export_csv(tmp_path / "m.csv")
    rows = list(csv.reader(out.open()))
    assert rows[0][:4] == ["image_index", "category", "trials", "n_samples"]
    assert [r[0] for r in rows[1:4]] == ["5", "9", "7"] and rows[4][0] == "mean" and rows[5][0] == "sd"
    assert float(rows[4][rows[0].index("PixCorr")]) == np.float64(np.mean([0.2, 0.9, 0.5])).round(6)

    png = rp.export_grid(tmp_path / "grid.png")
    grid = np.asarray(Image.open(png))
    assert grid.shape == comparison_grid([_result(5, 0.2)] * 3).shape
    assert grid.shape[0] > grid.shape[1] / 2  # three rows of ground truth + 2 samples


def test_finetune_then_reconstruct_all_on_a_small_subject(qtbot, loaded_window, tmp_path):
    """A run on pixel targets has no decoder: the panel offers fine-tuning, then reconstructs the whole test set."""
    from engine.train.presets import get_preset
    from engine.train.run import Run

    win = loaded_window
    win.settings.set_value("folders/runs", str(tmp_path / "runs"))
    tp, rp = win.panels["training"], win.panels["reconstruction"]
    tp.form.set_config(get_preset("tiny-mlp", win.context.subject.subject))  # pixel targets
    assert tp.start_training() is not None
    qtbot.waitUntil(lambda: tp.worker is None, timeout=90000)
    assert rp.run_dir == tp.run_dir and not rp.can_reconstruct and rp.decoder_row.finetune_btn.isEnabled()
    assert not rp.settings_row.all_btn.isEnabled()
    # nothing to start from yet
    assert not rp.settings_row.img2img.isEnabled() and rp.settings()["img2img_strength"] is None

    rp.decoder_row.ft_epochs.setValue(1)
    assert rp.start_finetune() is not None
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    assert rp.can_reconstruct and "fine-tuned" in rp.decoder_row.decoder_label.text()
    assert (tp.run_dir / "decoder" / "decoder.json").is_file()

    # a fine-tuned decoder always has a blurry image: reconstruction starts from it (MindEye's low-level route)
    assert rp.settings_row.img2img.isEnabled() and rp.settings()["img2img_strength"] == 0.8
    rp.settings_row.samples.setValue(1)
    rp.settings_row.steps.setValue(2)
    assert rp.reconstruct_all() is not None
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    s = win.context.subject.subject
    n_test_images = len(np.unique(np.asarray(s.trials.image_index)[s.split_indices("test")]))
    assert len(rp.results) == n_test_images == rp.table_view.table.rowCount()
    assert "images ·" in rp.table_view.aggregate.text()
    assert {r.settings["img2img_strength"] for r in rp.results.values()} == {0.8}  # recorded with each image
    assert "from blurry 0.8" in rp.comparison.title.text()
    assert Run.open(tp.run_dir).status()["status"] == "done"
    # the oracle (on by default): the same images from their true embeddings, beside the brain's, never as results
    assert rp.settings()["oracle"] and (tp.run_dir / "recon" / "test.oracle" / "index.json").is_file()
    assert all(r.oracle is not None and r.oracle.shape == r.samples.shape and "PixCorr" in r.oracle_metrics
               for r in rp.results.values())
    two_way = [n for n in next(iter(rp.results.values())).metrics if n.startswith("2-way")]
    assert two_way and all(set(two_way) <= set(r.oracle_metrics) and all(0 <= v <= 1 for n in two_way
                                                                          for v in r.oracle_metrics[n])
                           for r in rp.results.values())  # the oracle's 2-way, against the same ground truths
    assert recon_folders(tp.run_dir) == [tp.run_dir / "recon" / "test"]
    cmp = rp.comparison
    assert cmp.oracle_tile.has_image and cmp.trial_metrics.horizontalHeaderItem(2).text() == "oracle"


def test_reselecting_the_run_shows_the_same_image_again(qtbot, window, tmp_path, rng):
    """A run selected again (e.g. after a job finished) reloads its reconstructions; the comparison must come back
    with the image the user was looking at, not stay empty."""
    run = tmp_path / "run"
    write_recon_folder(run / "recon" / "test", rng)
    rp = window.panels["reconstruction"]
    window.context.engine_loaded.emit()  # as the window's engine preload does once a subject is open
    rp._set_run(run, force=True)
    qtbot.waitUntil(lambda: len(rp.results) == 3, timeout=30000)
    assert rp.current_image == 0 and rp.comparison.gt_tile.has_image
    rp.show_image(2)
    rp._set_run(run, force=True)  # clears the view, reloads in a pool thread
    assert not rp.comparison.gt_tile.has_image
    qtbot.waitUntil(lambda: rp.comparison.gt_tile.has_image, timeout=30000)
    assert rp.current_image == 2 and rp.comparison.title.text().startswith("Image 2 ")


def test_panel_defaults_are_the_clis(window):
    from engine.cli.main import build_parser
    from engine.recon import defaults

    panel = window.panels["reconstruction"]
    args = build_parser().parse_args(["reconstruct", "RUN"])
    assert panel.settings_row.steps.value() == args.steps == defaults.STEPS
    assert panel.settings_row.guidance.value() == args.guidance and panel.settings_row.samples.value() == args.samples


def test_progress_says_estimating_until_the_engine_has_an_estimate(window):
    from engine.events import Progress

    panel = window.panels["reconstruction"]
    panel.comparison.show_progress(Progress(1, 10, eta_s=None, stage="reconstruct"))
    assert panel.comparison.progress.format() == "reconstruct: %v / %m · estimating the time left…"
    panel.comparison.show_progress(Progress(5, 10, eta_s=65.0, stage="reconstruct"))
    assert panel.comparison.progress.format() == "reconstruct: %v / %m · 01:05 left"
    window._on_progress("Reconstructing", Progress(1, 10, eta_s=None, stage="reconstruct"))
    assert window.job_label.text() == "Reconstructing: reconstruct, estimating the time left"


def _done_run(folder, name, kind, status="done"):
    from engine.train.config import TrainConfig
    from engine.train.run import Run

    run = Run.create(folder / name, TrainConfig.from_dict({"name": name, "model": {"kind": kind}}))
    run.write_status(status, step=2, total=2)
    return run.path


def test_every_panel_follows_the_one_selected_run(qtbot, loaded_window, tmp_path):
    """One selected run (``RunState``): picking a run in any panel's picker, or in the Data panel's list, selects it in
    every panel; a picker that cannot list the selected run (another kind, not finished) shows it as placeholder
    instead of showing a run of its own; a new subject clears the selection everywhere."""
    win = loaded_window
    win.settings.set_value("folders/runs", str(tmp_path))
    mlp, moe, cancelled = (_done_run(tmp_path, "a", "mlp"), _done_run(tmp_path, "m", "moe"),
                           _done_run(tmp_path, "c", "mlp", status="cancelled"))
    rp, ep, tp, dp = (win.panels[k] for k in ("reconstruction", "experts", "training", "data"))
    for panel in (rp, ep, tp, dp):
        panel.refresh_runs()
    rbox, ebox = rp.decoder_row.run_box, ep.run_box
    assert win.context.run.folder is None and rbox.currentIndex() == -1 and ebox.currentIndex() == -1
    assert rbox.count() == 2 and ebox.count() == 1  # finished runs; the experts panel lists MoE runs only

    def data_selected():
        it = dp.runs.currentItem()
        return None if it is None else Path(it.data(Qt.ItemDataRole.UserRole))

    rbox.setCurrentIndex(rbox.findData(str(mlp)))  # picked in the Reconstruction panel
    assert win.context.run.folder == mlp and rp.run_dir == mlp and "No trained model" in rp.recon.decoder_text
    assert ep.run_dir == mlp and ebox.currentIndex() == -1 and ebox.placeholderText().startswith("a: not a finished")
    assert tp.runs.selected_runs() == [mlp] and data_selected() == mlp

    ebox.setCurrentIndex(ebox.findData(str(moe)))  # picked in the Experts panel
    assert win.context.run.folder == moe and rp.run_dir == moe and rbox.currentData() == str(moe)
    assert tp.runs.selected_runs() == [moe] and data_selected() == moe and ep.run_dir == moe

    dp.runs.setCurrentItem(next(dp.runs.item(i) for i in range(dp.runs.count())
                                if Path(dp.runs.item(i).data(Qt.ItemDataRole.UserRole)) == cancelled))
    assert win.context.run.folder == cancelled and rp.run_dir == cancelled and tp.runs.selected_runs() == [cancelled]
    assert rbox.currentIndex() == -1 and rbox.placeholderText() == "c (not finished)"
    assert not rp.settings_row.all_btn.isEnabled()

    win.context.subject.set_subject(win.context.subject.subject)  # a subject opened again: no run is selected
    assert win.context.run.folder is None and rp.run_dir is None and ep.run_dir is None
    assert rp.recon.decoder_text.startswith("No run selected") and not rp.results
