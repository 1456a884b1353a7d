"""Reconstruction panel parts: reading a reconstruction folder with per-trial metrics, the metrics table, best/worst,
and the PNG / CSV exports."""

from __future__ import annotations

import csv

import numpy as np
from PIL import Image

from engine.recon.index import ReconIndex, ReconItem, gt_name, sample_name
from neurolens_app.panels.reconstruction import (TrialRecon, comparison_grid, decoder_state, load_recon_folder,
                                                 recon_folders)


def _write_folder(folder, rng, n_images=3, k=2, size=16):
    """A reconstruction folder as ``reconstruct_job`` writes it; sample k of image i is the ground truth plus
    noise of SD 20·(i+1), so image 0 is reconstructed best."""
    items, gts = [], {}
    for i in range(n_images):
        gt = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        gts[i] = gt
        (folder / "gt").mkdir(parents=True, exist_ok=True)
        (folder / "samples").mkdir(parents=True, exist_ok=True)
        Image.fromarray(gt).save(folder / gt_name(i))
        names = []
        for s in range(k):
            noisy = np.clip(gt + rng.normal(0, 20 * (i + 1), gt.shape), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(folder / sample_name(i, s))
            names.append(sample_name(i, s))
        items.append(ReconItem(i, [100 + i], "face", gt_name(i), None, names))
    settings = {"guidance": 3.0, "steps": 4, "sampler": "ddim", "seed": 0, "samples": k}
    ReconIndex("subj", "run", "test", "m", settings, "demo", items).save(folder)
    return gts


def test_load_recon_folder_reads_images_and_scores_them(tmp_path, rng):
    gts = _write_folder(tmp_path / "recon" / "test", rng)
    results = load_recon_folder(tmp_path / "recon" / "test", extractors=[])
    assert [r.image_index for r in results] == [0, 1, 2]
    np.testing.assert_array_equal(results[1].gt, gts[1])
    assert results[0].samples.shape == (2, 16, 16, 3)
    pix = [r.summary()["PixCorr"] for r in results]
    assert pix[0] > pix[1] > pix[2]  # more noise, lower correlation
    assert results[0].same_settings({"guidance": 3.0, "steps": 4, "sampler": "ddim", "seed": 0, "samples": 2})
    assert not results[0].same_settings({"guidance": 5.0, "steps": 4, "sampler": "ddim", "seed": 0, "samples": 2})
    assert recon_folders(tmp_path) == [tmp_path / "recon" / "test"]


def test_decoder_state_without_a_model(tmp_path):
    text, ok, has_blurry = decoder_state(tmp_path)
    assert not ok and not has_blurry and "No trained model" in text


def _result(i, pix):
    gt = np.full((8, 8, 3), 10 * i, np.uint8)
    return TrialRecon(i, [i], "cat", gt, None, np.stack([gt, gt]), {"PixCorr": np.array([pix, pix]),
                                                                   "MSE": np.array([1 - pix, 1 - pix])})


def test_table_best_worst_and_exports(qtbot, window, tmp_path):
    rp = window.panels["reconstruction"]
    rp._on_recon_result([_result(5, 0.2), _result(7, 0.9), _result(9, 0.5)])
    assert rp.table.rowCount() == 3 and rp.current_image in (5, 7, 9)
    rp.rank_metric.setCurrentText("PixCorr")
    assert rp.show_extreme(best=True) == 7 and rp.current_image == 7
    assert rp.show_extreme(best=False) == 5
    rp.rank_metric.setCurrentText("MSE")  # lower is better
    assert rp.show_extreme(best=True) == 7
    assert rp.trial_metrics.rowCount() == 2 and rp.gt_tile.has_image

    rp.table.sortItems(3)  # PixCorr ascending
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
    assert rp.run_dir == tp.run_dir and not rp.can_reconstruct and rp.finetune_btn.isEnabled()
    assert not rp.all_btn.isEnabled()
    assert not rp.img2img.isEnabled() and rp.settings()["img2img_strength"] is None  # nothing to start from yet

    rp.ft_epochs.setValue(1)
    assert rp.start_finetune() is not None
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    assert rp.can_reconstruct and "fine-tuned" in rp.decoder_label.text()
    assert (tp.run_dir / "decoder" / "decoder.json").is_file()

    # a fine-tuned decoder always has a blurry image: reconstruction starts from it (MindEye's low-level route)
    assert rp.img2img.isEnabled() and rp.settings()["img2img_strength"] == 0.8
    rp.samples.setValue(1)
    rp.steps.setValue(2)
    assert rp.reconstruct_all() is not None
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    s = win.context.subject.subject
    n_test_images = len(np.unique(np.asarray(s.trials.image_index)[s.split_indices("test")]))
    assert len(rp.results) == n_test_images == rp.table.rowCount()
    assert "images ·" in rp.aggregate.text()
    assert {r.settings["img2img_strength"] for r in rp.results.values()} == {0.8}  # recorded with each image
    assert "from blurry 0.8" in rp.title.text()
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
    assert rp.oracle_tile.has_image and rp.trial_metrics.horizontalHeaderItem(2).text() == "oracle"


def test_reselecting_the_run_shows_the_same_image_again(qtbot, window, tmp_path, rng):
    """A run selected again (e.g. after a job finished) reloads its reconstructions; the comparison must come back
    with the image the user was looking at, not stay empty."""
    run = tmp_path / "run"
    _write_folder(run / "recon" / "test", rng)
    rp = window.panels["reconstruction"]
    rp._set_run(run, force=True)
    qtbot.waitUntil(lambda: len(rp.results) == 3, timeout=30000)
    assert rp.current_image == 0 and rp.gt_tile.has_image
    rp.show_image(2)
    rp._set_run(run, force=True)  # clears the view, reloads in a pool thread
    assert not rp.gt_tile.has_image
    qtbot.waitUntil(lambda: rp.gt_tile.has_image, timeout=30000)
    assert rp.current_image == 2 and rp.title.text().startswith("Image 2 ")


def test_every_image_gets_a_two_way_column_as_evaluate_scores_it(tmp_path, rng):
    """Per sample: the 2-way identification against the other reconstructed images' ground truths, equal to the
    whole-set score ``evaluate`` computes for that sample set; single-image folders are scored together."""
    from engine.metrics.identification import two_way_scores
    from engine.metrics.lowlevel import prepare_images
    from neurolens_app.panels.reconstruction import add_two_way, metric_names
    from tests.engine.metrics.recon_folder import pixel_extractor

    ext = pixel_extractor()
    _write_folder(tmp_path / "all", rng, n_images=5, k=2)
    results = load_recon_folder(tmp_path / "all", extractors=[ext])
    assert "2-way pix4" in metric_names(results)
    gt = ext(prepare_images(np.stack([r.gt for r in results])))
    for s in range(2):
        expected = two_way_scores(gt, ext(prepare_images(np.stack([r.samples[s] for r in results]))))
        np.testing.assert_allclose([r.metrics["2-way pix4"][s] for r in results], expected)
    # one image alone has no comparison set; two single-image results together do
    singles = []
    for i in range(2):
        _write_folder(tmp_path / f"one-{i}", np.random.default_rng(i), n_images=1, k=1)
        singles += load_recon_folder(tmp_path / f"one-{i}", extractors=[ext])
    assert "2-way pix4" not in singles[0].metrics
    add_two_way(singles)
    assert all(0.0 <= r.summary()["2-way pix4"] <= 1.0 for r in singles)


def test_panel_defaults_are_the_clis(window):
    from engine.cli.main import build_parser
    from engine.recon import defaults

    panel = window.panels["reconstruction"]
    args = build_parser().parse_args(["reconstruct", "RUN"])
    assert panel.steps.value() == args.steps == defaults.STEPS
    assert panel.guidance.value() == args.guidance and panel.samples.value() == args.samples


def test_progress_says_estimating_until_the_engine_has_an_estimate(window):
    from engine.events import Progress

    panel = window.panels["reconstruction"]
    panel._on_progress(Progress(1, 10, eta_s=None, stage="reconstruct"))
    assert panel.progress.format() == "reconstruct: %v / %m · estimating the time left…"
    panel._on_progress(Progress(5, 10, eta_s=65.0, stage="reconstruct"))
    assert panel.progress.format() == "reconstruct: %v / %m · 01:05 left"
    window._on_progress("Reconstructing", Progress(1, 10, eta_s=None, stage="reconstruct"))
    assert window.job_label.text() == "Reconstructing: reconstruct, estimating the time left"
