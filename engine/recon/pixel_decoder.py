"""Reconstruction of a pixel-decoder run (``pixel-ridge``): the predicted pixels are the images, no generator.

A run trained on the ``stimulus-pixels`` target predicts every pixel of the stimulus at its own resolution. Its
reconstruction writes that prediction as the low-level ("blurry") image of every test image and as its single sample,
so ``evaluate`` scores it like any other method. Runs decoding through an image basis (``data.pixel_basis``: PCA or
multi-scale, ``engine.models.pixel_basis``) predict pixels the same way; the method name says which. With a fine-tuned
decoder (``neurolens finetune RUN --generator``) the same prediction is the blurry image and the img2img start of the
generator's samples.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.events import Finished, Log, Progress

PIXEL_EMBEDDERS = ("stimulus-pixels",)


def is_pixel_run(info: dict) -> bool:
    """True when a run predicts the stimulus pixels (its predictions are images)."""
    return info.get("embedder") in PIXEL_EMBEDDERS


def decoder_label(info: dict) -> str:
    """How a pixel run decodes, for method names: ``pixels``, ``PCA K=64`` or ``multi-scale``."""
    basis = info.get("pixel_basis") or {}
    if basis.get("kind") == "pca":
        return f"PCA K={basis.get('n_components')}"
    if basis.get("kind") == "multiscale":
        return "multi-scale"
    return "pixels"


def predicted_images(embeddings: np.ndarray, image_shape) -> np.ndarray:
    """A pixel run's predictions ``(n, H·W·C)`` → ``(n, 3, H, W)`` in [0, 1] (the blurry-image convention)."""
    from engine.models.embedders.stimulus_pixels import pixels_to_images

    return pixels_to_images(embeddings, image_shape)


def write_pixel_reconstruction(run, info: dict, subj, pred, keep: np.ndarray, out_dir: Path, *, split: str,
                               repeat_mode: str, method: str | None, png):
    """Job body: write the predicted images of ``pred`` (rows ``keep``) as ``samples/`` and ``blurry/``."""
    from engine.atomic import atomic_dir
    from engine.recon.blurry import to_uint8
    from engine.recon.index import ReconIndex, ReconItem, blurry_name, gt_name, sample_name, save_embeddings

    images = to_uint8(predicted_images(pred.embeddings[keep], subj.image_shape))
    labels, cats = subj.stimuli.labels, subj.stimuli.categories
    yield Log(f"{len(keep)} images: the pixel decoder's predictions at {images.shape[1]}×{images.shape[2]} px "
              "(no generator)")
    items = []
    with atomic_dir(out_dir, overwrite=True) as tmp:
        for j, r in enumerate(keep):
            i = int(pred.image_index[r])
            png(tmp / sample_name(i, 0), images[j])
            png(tmp / blurry_name(i), images[j])
            png(tmp / gt_name(i), np.asarray(subj.images[i]))
            lab = None if labels is None else int(labels[i])
            category = cats[lab] if lab is not None and 0 <= lab < len(cats) else None
            items.append(ReconItem(image_index=i, trials=pred.trials[r], category=category, ground_truth=gt_name(i),
                                   blurry=blurry_name(i), samples=[sample_name(i, 0)]))
            yield Progress(j + 1, len(keep), stage="reconstruct")
        settings = {"generator": None, "samples": 1, "repeat_mode": repeat_mode,
                    "image_size": int(images.shape[1]), "decoder": "pixels",
                    "pixel_basis": (info.get("pixel_basis") or {}).get("kind", "pixels")}
        label = method or f"{run.config.name} ({info.get('kind')}, {decoder_label(info)})"
        ReconIndex(subject=str(subj.path) if subj.path else subj.name, run=str(run.path), split=split, method=label,
                   settings=settings, embedder=info.get("embedder"), items=items).save(tmp)
        save_embeddings(tmp, pred.image_index[keep], pred.embeddings[keep], pred.targets[keep])
    yield Finished(status="done", summary={"out_dir": str(out_dir), "n_images": len(keep), "n_samples": len(keep)})
