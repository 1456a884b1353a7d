"""Miyawaki et al. 2008's design: train a pixel decoder on random 10×10 binary patterns, test it on geometric shapes.

Voxels are V1-like: each sums the contrast under a Gaussian receptive field (random centre, width 0.5–1.5 px) plus
noise; one trial per image (single-trial reconstruction, as in the paper). Compared on the same data: the plain
``pixel-ridge`` decoder (one ridge per pixel), ``data.pixel_basis=pca`` (K = 100, full rank here) and
``data.pixel_basis=multiscale`` (one ridge per 1×1, 1×2, 2×1, 2×2 patch, combined per pixel on out-of-fold
predictions). Scores: PixCorr and MSE on the 18 test shapes, mean over ``--seeds`` simulated subjects. The
reconstructions of the first subject at noise 0.5 go to ``docs/images/miyawaki-design-pixel-bases.png``.

    OMP_NUM_THREADS=1 python benchmarks/bench_pixel_bases.py [--seeds 3] [--voxels 800] [--picture PNG]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.results_io import report  # noqa: E402

SIZE, N_TRAIN = 10, 440  # Miyawaki et al.: 10×10 patches, 440 random training patterns
ALPHAS = [float(10.0 ** k) for k in np.arange(-1.0, 7.5, 0.5)]  # the pixel-ridge preset's


def shapes() -> np.ndarray:
    """(18, 10, 10) test images: bars, crosses and frames at several positions."""
    out = []
    for k in range(2, 8):
        bar = np.zeros((SIZE, SIZE))
        bar[k - 2:k + 2, 2:8] = 1
        cross = np.zeros((SIZE, SIZE))
        cross[:, k] = cross[k, :] = 1
        frame = np.zeros((SIZE, SIZE))
        frame[1:9, 1:9] = 1
        frame[2:8, 2:8] = 0
        out += [bar, cross, np.roll(frame, k - 4, axis=1)]
    return np.stack(out)


def simulate(seed: int, n_voxels: int, noise: float):
    """(train betas, train pixels, test betas, test pixels), betas z-scored with training statistics."""
    rng = np.random.default_rng(seed)
    train = (rng.random((N_TRAIN, SIZE, SIZE)) > 0.5).astype(np.float64)
    test = shapes()
    yy, xx = np.mgrid[:SIZE, :SIZE]
    cy, cx = rng.uniform(-0.5, SIZE - 0.5, (2, n_voxels))
    sig = rng.uniform(0.5, 1.5, n_voxels)
    rf = np.exp(-((yy[None] - cy[:, None, None]) ** 2 + (xx[None] - cx[:, None, None]) ** 2)
                / (2 * sig[:, None, None] ** 2)).reshape(n_voxels, -1)

    def voxels(images):
        x = images.reshape(len(images), -1) @ rf.T
        return x + noise * x.std() * rng.standard_normal(x.shape)

    xtr, xte = voxels(train), voxels(test)
    mu, sd = xtr.mean(0), xtr.std(0) + 1e-8
    return (xtr - mu) / sd, train.reshape(N_TRAIN, -1), (xte - mu) / sd, test.reshape(len(test), -1)


def grid_png(rows: list[tuple[str, np.ndarray]], path: Path, scale: int = 6) -> None:
    """One labelled row per method of (n, 100) images in [0, 1], grey, enlarged (nearest)."""
    from PIL import Image, ImageDraw

    cell, label_w = SIZE * scale + 4, 90
    canvas = Image.new("L", (label_w + len(rows[0][1]) * cell, len(rows) * cell), 255)
    draw = ImageDraw.Draw(canvas)
    for r, (name, imgs) in enumerate(rows):
        draw.text((4, r * cell + cell // 2 - 6), name, fill=0)
        for i, im in enumerate(imgs):
            tile = Image.fromarray((np.clip(im.reshape(SIZE, SIZE), 0, 1) * 255).astype(np.uint8))
            canvas.paste(tile.resize((SIZE * scale, SIZE * scale), Image.NEAREST), (label_w + i * cell + 2,
                                                                                    r * cell + 2))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def main() -> None:
    from engine.models.pixel_basis import fit_pixel_decoder
    from engine.models.ridge import RidgeCV

    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--voxels", type=int, default=800)
    ap.add_argument("--picture", default=str(ROOT / "docs" / "images" / "miyawaki-design-pixel-bases.png"))
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    t0 = time.perf_counter()

    def ridge():
        return RidgeCV(alphas=ALPHAS, cv=5)

    decoders = {
        "pixel-ridge": lambda x, y: ridge().fit(x, y),
        "pca (K=100)": lambda x, y: fit_pixel_decoder("pca", ridge, x, y, basis_images=y, n_components=100),
        "multiscale": lambda x, y: fit_pixel_decoder("multiscale", ridge, x, y, image_shape=(SIZE, SIZE, 1)),
    }
    rows, picture = {}, []
    for noise in (0.5, 1.0):
        scores = {name: {"PixCorr": [], "MSE": []} for name in decoders}
        for seed in range(args.seeds):
            xtr, ytr, xte, yte = simulate(seed, args.voxels, noise)
            for name, fit in decoders.items():
                pred = fit(xtr, ytr).predict(xte)
                if seed == 0 and noise == 0.5:
                    picture += [("ground truth", yte)] if not picture else []
                    picture.append((name, pred))
                scores[name]["PixCorr"].append(np.mean([np.corrcoef(pred[i], yte[i])[0, 1]
                                                        for i in range(len(yte))]))
                scores[name]["MSE"].append(float(((pred - yte) ** 2).mean()))
        rows[f"noise {noise}"] = {name: {k: round(float(np.mean(v)), 4) for k, v in s.items()}
                                  for name, s in scores.items()}
    result = {
        "benchmark": "pixel_bases_miyawaki_design", "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.cpu_count()} CPUs, OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, load "
                   f"average at start {load0:.1f}",
        "design": {"train": f"{N_TRAIN} random {SIZE}x{SIZE} binary patterns", "test": "18 shapes",
                   "voxels": args.voxels, "seeds": args.seeds, "noise": "SD relative to the signal's SD"},
        "results": rows,
        "goals": {f"multiscale beats pixel-ridge on PixCorr at {k}":
                  r["multiscale"]["PixCorr"] > r["pixel-ridge"]["PixCorr"] for k, r in rows.items()},
        "wall_s": round(time.perf_counter() - t0, 1),
    }
    grid_png(picture, Path(args.picture))
    report(result, "pixel_bases")


if __name__ == "__main__":
    main()
