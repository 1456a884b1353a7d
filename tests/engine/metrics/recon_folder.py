"""Builder of reconstruction folders in the ``neurolens-recon/1`` layout, for the metrics tests."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def write_recon_folder(path, *, n_items: int = 6, k: int = 2, size: int = 32, blurry: bool = True,
                       categories: list[str] | None = ("cat", "dog", "car"), embeddings: bool = True,
                       noise: float = 0.3, seed: int = 0, method: str = "test-method") -> Path:
    """Write ground truths, k noisy samples per item (gt + noise), blurry images and ``embeddings.npz``.

    Ground truths are smooth random images (so low-level metrics are far from chance); samples are noisy copies.
    """
    rng = np.random.default_rng(seed)
    folder = Path(path)
    for sub in ("gt", "samples", "blurry"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    items = []
    for i in range(n_items):
        image_index = 100 + 3 * i
        base = rng.random((4, 4, 3))
        gt = np.kron(base, np.ones((size // 4, size // 4, 1)))
        gt = np.clip(gt + 0.05 * rng.standard_normal(gt.shape), 0, 1)
        name = f"img-{image_index:05d}"
        Image.fromarray((gt * 255).astype(np.uint8)).save(folder / "gt" / f"{name}.png")
        samples = []
        for s in range(k):
            rec = np.clip(gt + noise * rng.standard_normal(gt.shape), 0, 1)
            rel = f"samples/{name}-s{s}.png"
            Image.fromarray((rec * 255).astype(np.uint8)).save(folder / rel)
            samples.append(rel)
        blur_rel = None
        if blurry:
            blur_rel = f"blurry/{name}.png"
            small = Image.fromarray((gt * 255).astype(np.uint8)).resize((4, 4), Image.BILINEAR)
            small.resize((size, size), Image.BILINEAR).save(folder / blur_rel)
        items.append({"image_index": image_index, "trials": [3 * i, 3 * i + 1, 3 * i + 2],
                      "category": None if categories is None else categories[i % len(categories)],
                      "ground_truth": f"gt/{name}.png", "blurry": blur_rel, "samples": samples})
    index = {"schema": "neurolens-recon/1", "subject": None, "run": None, "split": "test", "method": method,
             "settings": {"generator": "demo", "guidance": 3.0, "steps": 10, "sampler": "ddim", "seed": seed,
                          "samples": k, "repeat_mode": "average-outputs", "img2img_strength": None,
                          "image_size": size},
             "embedder": "demo", "items": items}
    (folder / "index.json").write_text(json.dumps(index, indent=2))
    if embeddings:
        target = rng.standard_normal((n_items, 8, 4)).astype(np.float32)
        brain = (target + 0.5 * rng.standard_normal(target.shape)).astype(np.float32)
        order = rng.permutation(n_items)  # rows need not follow index.json's order
        np.savez(folder / "embeddings.npz", image_index=np.array([it["image_index"] for it in items])[order],
                 brain=brain[order], target=target[order])
    return folder


def pixel_extractor():
    """A deterministic FeatureExtractor (4×4 average-pooled pixels) so tests need no model weights."""
    from engine.models.embedders.features import FeatureExtractor

    def fn(images):
        x = np.asarray(images, np.float64)
        n, h, w, c = x.shape
        return x.reshape(n, 4, h // 4, 4, w // 4, c).mean(axis=(2, 4)).reshape(n, -1)

    return FeatureExtractor(name="pix4", spec="pix4", protocol="4×4 average-pooled pixels (test)", fn=fn)
