"""``engine.recon.results``: reading a reconstruction folder with per-sample metrics, the 2-way among the images
shown together, a run's reconstruction folders, the comparison grid's shape."""

from __future__ import annotations

import numpy as np
from PIL import Image

from engine.recon.index import ReconIndex, ReconItem, gt_name, sample_name
from engine.recon.results import (TrialRecon, add_two_way, all_folder, comparison_grid, gui_folder,
                                  load_recon_folder, metric_names, recon_folders, write_metrics_csv)


def write_recon_folder(folder, rng, n_images=3, k=2, size=16):
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
    gts = write_recon_folder(tmp_path / "recon" / "test", rng)
    results = load_recon_folder(tmp_path / "recon" / "test", extractors=[])
    assert [r.image_index for r in results] == [0, 1, 2]
    np.testing.assert_array_equal(results[1].gt, gts[1])
    assert results[0].samples.shape == (2, 16, 16, 3)
    pix = [r.summary()["PixCorr"] for r in results]
    assert pix[0] > pix[1] > pix[2]  # more noise, lower correlation
    assert results[0].same_settings({"guidance": 3.0, "steps": 4, "sampler": "ddim", "seed": 0, "samples": 2})
    assert not results[0].same_settings({"guidance": 5.0, "steps": 4, "sampler": "ddim", "seed": 0, "samples": 2})
    assert recon_folders(tmp_path) == [tmp_path / "recon" / "test"]


def test_the_app_folders_of_a_run(tmp_path):
    assert all_folder(tmp_path) == tmp_path / "recon" / "test"  # the CLI's default folder of the test split
    assert gui_folder(tmp_path, 7) == tmp_path / "recon" / "gui" / "image-00007"


def test_every_image_gets_a_two_way_column_as_evaluate_scores_it(tmp_path, rng):
    """Per sample: the 2-way identification against the other reconstructed images' ground truths, equal to the
    whole-set score ``evaluate`` computes for that sample set; single-image folders are scored together."""
    from engine.metrics.identification import two_way_scores
    from engine.metrics.lowlevel import prepare_images
    from tests.engine.metrics.recon_folder import pixel_extractor

    ext = pixel_extractor()
    write_recon_folder(tmp_path / "all", rng, n_images=5, k=2)
    results = load_recon_folder(tmp_path / "all", extractors=[ext])
    assert "2-way pix4" in metric_names(results)
    gt = ext(prepare_images(np.stack([r.gt for r in results])))
    for s in range(2):
        expected = two_way_scores(gt, ext(prepare_images(np.stack([r.samples[s] for r in results]))))
        np.testing.assert_allclose([r.metrics["2-way pix4"][s] for r in results], expected)
    # one image alone has no comparison set; two single-image results together do
    singles = []
    for i in range(2):
        write_recon_folder(tmp_path / f"one-{i}", np.random.default_rng(i), n_images=1, k=1)
        singles += load_recon_folder(tmp_path / f"one-{i}", extractors=[ext])
    assert "2-way pix4" not in singles[0].metrics
    add_two_way(singles)
    assert all(0.0 <= r.summary()["2-way pix4"] <= 1.0 for r in singles)




def test_comparison_grid_and_csv_of_results(tmp_path):
    import csv

    gt = np.full((8, 8, 3), 40, np.uint8)
    results = [TrialRecon(i, [i], "cat", gt, gt if i else None, np.stack([gt, gt, gt]),
                          {"PixCorr": np.array([0.1, 0.2, 0.3]) * (i + 1)}) for i in range(2)]
    grid = comparison_grid(results, size=10, pad=2)
    assert grid.shape == (2 * 12 + 2, 5 * 12 + 2, 3) and grid.dtype == np.uint8  # gt, blurry, 3 samples per row
    assert (grid[2:12, 2:12] == 40).all() and (grid[0, 0] == 255).all()
    rows = list(csv.reader(write_metrics_csv(tmp_path / "m.csv", results).open()))
    assert rows[0] == ["image_index", "category", "trials", "n_samples", "PixCorr"]
    assert [r[4] for r in rows[1:]] == ["0.2", "0.4", "0.3", "0.1"]  # per image, mean, sd
    assert metric_names(results) == ["PixCorr"]
