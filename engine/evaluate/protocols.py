"""The protocol text of every metric of a folder's evaluation (printed under the table)."""

from __future__ import annotations

from engine.evaluate.config import EvaluationConfig
from engine.evaluate.context import Context, distance_name, two_way_name
from engine.evaluate.result import EvaluationResult
from engine.recon.index import ReconIndex


def add_protocols(index: ReconIndex, ctx: Context, cfg: EvaluationConfig, res: EvaluationResult, n: int) -> None:
    s = index.settings
    res.protocol["general"] = (
        f"{n} test items of {index.path.name} (split {index.split}); repeat mode {s.get('repeat_mode', 'unknown')}; "
        f"{index.k} sample(s) per item: rows 'mean' = mean over items and samples, 'best-of-k' = each item's best "
        f"sample (oracle choice) averaged, 'best set' = the best sample set's mean (MinD-Vis max); 'blend .75/.25' = "
        f"0.75·sample + 0.25·blurry; every image resized to 256×256 (antialiased bilinear) first; "
        f"blend {'0.75·sample + 0.25·blurry also scored' if cfg.blend else 'not applied (raw samples)'}")
    res.protocol["PixCorr"] = "Pearson r of all RGB values after bilinear resize 256 → 425 (MindEyeV2); mean over items"
    res.protocol["SSIM"] = ("grey (rgb2gray) SSIM at 425×425 after bilinear resize, Gaussian window sigma 1.5, "
                            "population covariance, data range 1 (MindEyeV2 / skimage); mean over items")
    res.protocol["MSE"] = "mean squared error of RGB values in [0, 1] at 256×256"
    res.protocol["PSNR"] = "10·log10(1/MSE) in dB at 256×256, data range 1"
    for ext in ctx.extractors:
        res.protocol[two_way_name(ext)] = (f"two-way identification, exhaustive over all {n - 1} other test images "
                                           f"(Pearson of flattened features); chance 0.5; {ext.protocol}")
        res.protocol[distance_name(ext)] = (f"correlation distance 1 − Pearson(gt_i, recon_i), lower is better; "
                                            f"{ext.protocol}")
