"""Small images: PixCorr/SSIM at the stimulus's own size and identification in pixel space, with the protocol named."""

from __future__ import annotations

import numpy as np
import pytest

from engine.metrics.pixel_identification import n_way_top1, score_native, to_native


def _stimuli(n=12, size=10, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((n, size, size, 1))


def test_n_way_identifies_exact_and_fails_on_swapped_reconstructions():
    gt = _stimuli()
    assert n_way_top1(gt, gt).mean() == 1.0
    swapped = gt[np.r_[1, 0, 2:12]]
    assert n_way_top1(gt, swapped).tolist() == [0.0, 0.0] + [1.0] * 10


def test_noisy_reconstructions_score_between_chance_and_one():
    gt = _stimuli(n=40, size=8)
    rng = np.random.default_rng(1)
    noisy = gt + 0.6 * rng.standard_normal(gt.shape)
    s = score_native(gt, noisy)
    assert set(s) == {"PixCorr", "SSIM", "40-way pixels", "2-way pixels"}
    assert 0.3 < s["PixCorr"].mean() < 0.6 and 0.85 < s["2-way pixels"].mean() < 1.0
    assert 1 / 40 < s["40-way pixels"].mean() < 1.0  # SSIM works from 8 px (smaller window)
    assert np.all(np.isfinite(s["SSIM"]))


def test_to_native_area_resizes_a_larger_reconstruction_back_to_the_stimulus():
    small = np.zeros((1, 8, 8, 3))
    small[:, 4:, 4:] = 1.0
    big = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2)  # the same image at 64 px
    assert np.allclose(to_native(big, (8, 8), grey=True)[..., 0], small[..., 0])


def test_evaluate_names_the_protocol_of_each_row(tmp_path):
    """A folder of 16-px grey stimuli is scored natively; the table says so."""
    from PIL import Image

    from engine.evaluate import evaluate_folder
    from engine.evaluate.table import format_table
    from engine.recon.index import ReconIndex, ReconItem

    gt = (_stimuli(n=6, size=16)[..., 0] * 255).astype(np.uint8)
    items = []
    for i, g in enumerate(gt):
        for sub, img in (("gt", g), ("samples", np.flipud(g) if i == 0 else g)):
            (tmp_path / sub).mkdir(exist_ok=True)
            Image.fromarray(img).save(tmp_path / sub / f"{i}.png")
        items.append(ReconItem(image_index=i, trials=[i], category=None, ground_truth=f"gt/{i}.png", blurry=None,
                               samples=[f"samples/{i}.png"]))
    ReconIndex(subject=None, run=None, split="test", method="m", settings={}, embedder=None, items=items).save(tmp_path)
    res = evaluate_folder(tmp_path, features=[])
    row = res.rows[0]
    assert row["protocol"] == "native 16×16 px"
    assert row["6-way pixels"] == pytest.approx(5 / 6) and row["PixCorr"] < 1.0
    assert "native 16×16 px" in format_table(res) and "6-way pixels" in res.protocol
