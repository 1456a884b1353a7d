"""A simulated subject seeing the user's own images (``neurolens demo create --stimuli SRC``).

The demo's visual system (retinotopic receptive fields over luminance and colour contrast, category-tuned voxels in
LO/VOT, NSD-like noise; ``simulate.py``) is shown any image set, so a course can start from its own stimuli:

- ``load_stimulus_source(SRC)``: a folder of PNG files (sorted by name), an ``.npz`` with ``images`` (and optional
  ``labels``), or any subject NeuroLens opens (its images and labels; its betas are not used);
- ``own_stimulus_set``: the images as the simulation sees them. They are shown at the demo's 64-px screen size
  (antialiased resize; the stored stimuli keep their own size and channels), the "object" the category voxels respond
  to is the image's ink (pixels that differ from the border's median), with its centre and extent as position and
  size; labels index the demo's category tuning (modulo its 12 categories; unlabeled images all use the first).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.data.demo.stimuli import StimulusSet
from engine.errors import DataError

SCREEN = 64  # pixels the simulated visual field sees (the demo's stimulus size)


@dataclass(frozen=True)
class OwnStimuli:
    """The user's images as stored (``images``, uint8 (n, H, W, 3)) and labels (-1 or None = unlabeled)."""

    images: np.ndarray
    labels: np.ndarray | None
    categories: list[str]
    source: str

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or min(self.images.shape[1:3]) < 8:
            raise DataError(self.source, "cannot simulate a subject seeing these images", key="stimuli",
                            expected="(n, H, W, 3) uint8 images of at least 8×8 pixels",
                            found=f"shape {tuple(self.images.shape)}")
        if len(self.images) < 20:
            raise DataError(self.source, "too few images to simulate an experiment", key="stimuli",
                            expected="at least 20 images", found=len(self.images))


def load_stimulus_source(src) -> OwnStimuli:
    """Images (+ labels) from a PNG folder, an ``.npz`` (``images``, ``labels``) or any subject source."""
    from engine.data.readers.checks import to_uint8_images

    src = Path(src)
    if src.is_dir() and not (src / "subject.json").is_file():
        from engine.data.readers.own_images import read_png_folder

        raw, _ = read_png_folder(src)
        return OwnStimuli(to_uint8_images(raw, src, "images", value_range="0-255"), None, [], str(src))
    if src.suffix.lower() == ".npz":
        from engine.data.readers.checks import load_npz

        d = load_npz(src)
        if "images" not in d:
            raise DataError(src, "no images array", key="images", expected="an array named 'images'",
                            found=f"keys {sorted(d)[:8]}")
        labels = np.asarray(d["labels"]).astype(np.int64).reshape(-1) if "labels" in d else None
        images = to_uint8_images(d["images"], src, "images")
        if labels is not None and len(labels) != len(images):
            raise DataError(src, "labels do not match the images", key="labels", expected=f"{len(images)} labels",
                            found=len(labels))
        return OwnStimuli(images, labels, [], str(src))
    from engine.data.formats import read_subject

    s = read_subject(src)
    return OwnStimuli(np.asarray(s.images), None if s.stimuli.labels is None else np.asarray(s.stimuli.labels),
                      list(s.stimuli.categories), str(src))


def own_stimulus_set(own: OwnStimuli) -> StimulusSet:
    """The images as the simulated visual field sees them: 64-px RGB, with ink position/size and category labels."""
    from engine.metrics.lowlevel import resize

    x = np.concatenate([resize(own.images[s:s + 256], SCREEN, dtype=np.float32)
                        for s in range(0, len(own.images), 256)])
    screen = np.clip(x * 255.0 + 0.5, 0, 255).astype(np.uint8)
    border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
    ink = np.abs(x - np.median(border, axis=1)[:, None, None, :]).sum(-1)  # (n, 64, 64)
    mass = ink.sum((1, 2)) + 1e-9
    c = (np.arange(SCREEN) + 0.5) / SCREEN
    cx = (ink.sum(1) * c).sum(1) / mass
    cy = (ink.sum(2) * c).sum(1) / mass
    spread = np.sqrt((ink * ((c[None, :] - cx[:, None, None]) ** 2 + (c[:, None] - cy[:, None, None]) ** 2))
                     .sum((1, 2)) / mass)
    labels = np.zeros(len(x), np.int64) if own.labels is None else np.maximum(own.labels, 0) % 12
    n = len(x)
    attributes = {"x": cx.astype(np.float32), "y": cy.astype(np.float32),
                  "scale": np.clip(spread, 0.05, 0.5).astype(np.float32), "rotation": np.zeros(n, np.float32),
                  "hue": np.zeros(n, np.float32), "colour": np.zeros(n, np.int64),
                  "background": np.zeros(n, np.int64), "background_colour": np.zeros(n, np.int64)}
    cats = own_categories(own)
    return StimulusSet(images=screen, labels=labels, categories=cats,
                       captions=[f"an image of {cats[k]}" if own.labels is not None else "an image" for k in labels],
                       attributes=attributes)


def own_categories(own: OwnStimuli) -> list[str]:
    if own.categories:
        return list(own.categories)
    if own.labels is None:
        return ["image"]
    return [str(k) for k in range(int(own.labels.max()) + 1)]


def holdout_order(n_images: int, n_test: int, seed: int) -> np.ndarray:
    """A permutation of the images putting a seeded random choice of ``n_test`` of them last (the demo's schedule
    shows the last images as the test set)."""
    rng = np.random.default_rng([seed, 7919])
    test = np.sort(rng.choice(n_images, n_test, replace=False))
    return np.concatenate([np.setdiff1d(np.arange(n_images), test), test])
