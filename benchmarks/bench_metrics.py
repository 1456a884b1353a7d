"""Metric speed and agreement on 1,000 image pairs: NeuroLens's vectorised metrics vs the reference loops.

For 1,000 random image pairs at 64×64 and at 256×256 (reconstruction = ground truth + noise, so values are not at
chance), in one run:

- the protocol's preparation (resize to 256), PixCorr alone, PixCorr + SSIM together (one resize to 425, as
  ``evaluate`` computes them), MSE + PSNR: time each;
- SSIM: NeuroLens's batch SSIM vs ``skimage.metrics.structural_similarity`` called image by image on the same grey
  425×425 images (speed-up and maximum absolute difference);
- PixCorr vs ``numpy.corrcoef`` per pair (maximum absolute difference);
- two-way identification on cached features (1,000 × 768 and 1,000 × 2,048): vectorised vs brain-diffuser's
  ``np.corrcoef`` on the stacked matrix, and the retrieval protocol (300 × 300, 30 draws).

Prints one JSON object and writes it to ``benchmarks/results/bench_metrics.json``.

    python benchmarks/bench_metrics.py            # 1,000 pairs
    python benchmarks/bench_metrics.py --quick    # 100 pairs, smoke run
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import report  # noqa: E402 - needs the path above

from engine.metrics import identification, lowlevel  # noqa: E402
from engine.metrics.retrieval import RetrievalConfig, top1_retrieval  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def image_pairs(n: int, size: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    gt = rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    noise = rng.normal(0, 60, gt.shape)
    recon = np.clip(gt + noise, 0, 255).astype(np.uint8)
    return gt, recon


def pixel_case(n: int, size: int, ssim_reference_n: int) -> dict:
    from skimage.metrics import structural_similarity

    gt_u8, rec_u8 = image_pairs(n, size)
    (gt, rec), t_prep = timed(lambda: (lowlevel.prepare_images(gt_u8), lowlevel.prepare_images(rec_u8)))
    pc, t_pixcorr = timed(lambda: lowlevel.pixcorr(gt, rec))
    both, t_both = timed(lambda: lowlevel.pixcorr_ssim(gt, rec))  # what evaluate uses: one 425² resize for both
    ss = both["SSIM"]
    _, t_mse = timed(lambda: (lowlevel.mse(gt, rec), lowlevel.psnr(gt, rec)))

    # Reference: skimage's SSIM image by image on the same grey 425×425 images (grey conversion outside the timing
    # for both, so the comparison is the SSIM itself); plus our SSIM on exactly those grey images.
    m = min(ssim_reference_n, n)
    g_grey = np.concatenate([lowlevel.rgb_to_grey(lowlevel.resize(gt[s : s + 16], 425, np.float32)) for s in range(0, m, 16)])
    r_grey = np.concatenate([lowlevel.rgb_to_grey(lowlevel.resize(rec[s : s + 16], 425, np.float32)) for s in range(0, m, 16)])
    ref, t_ref = timed(lambda: np.array([structural_similarity(r_grey[i], g_grey[i], gaussian_weights=True, sigma=1.5,
                                                               use_sample_covariance=False, data_range=1.0)
                                         for i in range(m)]))
    ours, t_ours = timed(lambda: np.concatenate([lowlevel.ssim_grey(r_grey[s : s + 16], g_grey[s : s + 16])
                                                 for s in range(0, m, 16)]))
    # PixCorr against numpy.corrcoef on a subset (the 425² resize is shared)
    k = min(100, n)
    g425 = lowlevel.resize(gt[:k], 425).reshape(k, -1)
    r425 = lowlevel.resize(rec[:k], 425).reshape(k, -1)
    pc_ref = np.array([np.corrcoef(g425[i], r425[i])[0, 1] for i in range(k)])
    return {
        "n_pairs": n, "input_size": size,
        "seconds": {"prepare_256": round(t_prep, 3), "pixcorr_425": round(t_pixcorr, 3),
                    "pixcorr_and_ssim_425": round(t_both, 3),
                    "mse_psnr_256": round(t_mse, 3)},
        "mean": {"pixcorr": float(pc.mean()), "ssim": float(ss.mean())},
        "ssim_vs_skimage": {"n_images": m, "skimage_loop_s": round(t_ref, 3), "neurolens_batch_s": round(t_ours, 3),
                            "speedup": round(t_ref / t_ours, 2), "max_abs_diff": float(np.abs(ref - ours).max())},
        "pixcorr_vs_numpy_corrcoef": {"n_images": k, "max_abs_diff": float(np.abs(pc_ref - pc[:k]).max())},
    }


def identification_case(n: int, dim: int) -> dict:
    rng = np.random.default_rng(1)
    g = rng.standard_normal((n, dim)).astype(np.float32)
    r = g + 25.0 * rng.standard_normal((n, dim)).astype(np.float32)  # noisy enough that 2-way is not saturated
    ours, t_ours = timed(lambda: identification.two_way_identification(g, r))

    def brain_diffuser():  # scripts/evaluate_reconstruction.py pairwise_corr_all
        c = np.corrcoef(g, r)[:n, n:]
        return float(np.mean(np.sum(c < np.diag(c), 0)) / (n - 1))

    ref, t_ref = timed(brain_diffuser)
    ret, t_ret = timed(lambda: top1_retrieval(r, g, RetrievalConfig(pool=min(300, n), repeats=30)))
    return {"n_images": n, "n_features": dim, "two_way": ours, "two_way_reference": ref,
            "abs_diff": abs(ours - ref), "seconds": {"two_way": round(t_ours, 4), "reference_corrcoef": round(t_ref, 4),
                                                     "retrieval_300x30": round(t_ret, 4)},
            "retrieval_top1": {d: round(v.mean, 4) for d, v in ret.items()}}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 pairs instead of 1,000")
    args = ap.parse_args(argv)
    n = 100 if args.quick else 1000
    out = {
        "benchmark": "bench_metrics",
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        "protocol": "images → 256×256 (antialiased bilinear) → PixCorr/SSIM at 425×425 (MindEyeV2); SSIM grey, "
                    "Gaussian sigma 1.5, population covariance, data range 1; 2-way exhaustive",
        "pixel": [pixel_case(n, 64, n), pixel_case(n, 256, n)],
        "identification": [identification_case(n, 768), identification_case(n, 2048)],
    }
    report(out, "bench_metrics_quick" if args.quick else "bench_metrics")
    return out


if __name__ == "__main__":
    main()
