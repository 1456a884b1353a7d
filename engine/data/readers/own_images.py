"""Small stimulus sets as courses and many datasets store them: flattened image rows and unlabeled "prior" images.

- ``unflatten_images``: ``(N, H·W·C)`` rows → ``(N, H, W, C)``, each row unrolled row-major (``order="C"``, numpy)
  or column-major (``order="F"``, MATLAB's ``reshape(row, H, W)``);
- ``read_png_folder``: a folder of PNG files (sorted by name) → ``(N, H, W, C)`` uint8 with C = 1 for grey files;
- ``source_channels``: 1 for grey stacks (``(N, H, W)`` or one channel), else 3, so grey sets stay grey and a prior
  set of another channel count is refused.

Grey images are stored as three equal channels (the subject format's one image layout); every consumer that cares
(pixel decoders, the generator, the PNGs written by ``reconstruct``) detects them with ``is_grey``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data.readers.checks import describe
from engine.errors import SubjectFormatError

PNG_SUFFIXES = (".png",)


def unflatten_images(a: np.ndarray, shape: tuple[int, ...], order: str, path: Path, key: str) -> np.ndarray:
    """Flattened rows ``(N, P)`` with ``P = H·W·C`` → ``(N, H, W, C)`` (C = 1 when ``shape`` is ``(H, W)``)."""
    a = np.asarray(a)
    h, w = shape[:2]
    c = shape[2] if len(shape) == 3 else 1
    per_image = h * w * c
    if a.ndim != 2:
        raise SubjectFormatError(path, "images.shape is set but the array does not hold one flattened image per row",
                                 key=key, expected=f"a 2-D array (N, {per_image})", found=describe(a))
    if a.shape[1] != per_image:
        hint = f"{a.shape[1]} values per row"
        if a.shape[0] == per_image:
            hint += f" (the images are columns: MATLAB (H·W, N)? transpose it, or store it as (N, {per_image}))"
        raise SubjectFormatError(path, "declared image shape does not match the row length", key=key,
                                 expected=f"images.shape {list(shape)} = {per_image} values per row", found=hint)
    if order == "C":
        return a.reshape(a.shape[0], h, w, c)
    # column-major: element (y, x, ch) of a row sits at y + H·x + H·W·ch
    return np.ascontiguousarray(a.reshape(a.shape[0], c, w, h).transpose(0, 3, 2, 1))


def source_channels(a: np.ndarray, layout: str = "NHWC") -> int:
    """Channel count of an image stack as stored: 1 for ``(N, H, W)`` or a single channel, else the channel axis."""
    a = np.asarray(a) if not hasattr(a, "shape") else a
    if len(a.shape) == 3:
        return 1
    if len(a.shape) != 4:
        return 0
    letters = layout.upper() if len(layout) == 4 else "NHWC"
    n = int(a.shape[letters.index("C")])
    return 3 if n == 4 else n  # RGBA loses its alpha


def is_grey(images: np.ndarray, max_rows: int = 512) -> bool:
    """True when an ``(N, H, W, 3)`` uint8 stack holds grey images (three equal channels; checks up to
    ``max_rows`` images spread over the stack, so a memory map is not read whole)."""
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        return False
    idx = np.unique(np.linspace(0, images.shape[0] - 1, min(max_rows, images.shape[0])).astype(np.int64))
    x = np.asarray(images[idx])
    return bool((x[..., 0] == x[..., 1]).all() and (x[..., 1] == x[..., 2]).all())


def read_png_folder(folder: Path) -> tuple[np.ndarray, int]:
    """(uint8 ``(N, H, W, C)`` images, source channel count) of the PNG files in ``folder``, sorted by name."""
    from PIL import Image

    folder = Path(folder)
    if not folder.is_dir():
        raise SubjectFormatError(folder, "missing folder of prior images", key="prior_images",
                                 expected="a folder of PNG files", found="no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in PNG_SUFFIXES and p.is_file())
    if not files:
        raise SubjectFormatError(folder, "no PNG files", key="prior_images", expected="a folder of PNG files",
                                 found="0 .png files")
    out, grey, first = [], None, None
    for p in files:
        try:
            with Image.open(p) as im:
                g = im.mode in ("L", "LA", "I", "I;16", "1", "F")
                arr = np.asarray(im.convert("L" if g else "RGB"))
        except (OSError, ValueError) as e:
            raise SubjectFormatError(p, f"not a readable PNG ({e})", key="prior_images") from None
        if first is None:
            first, grey = (p, arr.shape[:2]), g
        if arr.shape[:2] != first[1]:
            raise SubjectFormatError(p, "prior images differ in size", key="prior_images",
                                     expected=f"{first[1][0]}×{first[1][1]} like {first[0].name}",
                                     found=f"{arr.shape[0]}×{arr.shape[1]}")
        if g != grey:
            raise SubjectFormatError(p, "prior images mix grey and colour files", key="prior_images",
                                     expected="grey" if grey else "colour", found="colour" if grey else "grey")
        out.append(arr[..., None] if g else arr)
    return np.stack(out).astype(np.uint8), 1 if grey else 3


def check_prior_matches(prior: np.ndarray, prior_channels: int, stimuli: np.ndarray, stimuli_channels: int,
                        path: Path, key: str) -> None:
    """Prior images must have the stimuli's size and channel count (the generator learns one image space)."""
    if tuple(prior.shape[1:3]) != tuple(stimuli.shape[1:3]):
        raise SubjectFormatError(path, "prior images have another size than the stimuli", key=key,
                                 expected=f"{stimuli.shape[1]}×{stimuli.shape[2]} images",
                                 found=f"{prior.shape[1]}×{prior.shape[2]}")
    if prior_channels != stimuli_channels:
        names = {1: "1 channel (grey)", 3: "3 channels (colour)"}
        raise SubjectFormatError(path, "prior images have another channel count than the stimuli", key=key,
                                 expected=names.get(stimuli_channels, str(stimuli_channels)),
                                 found=names.get(prior_channels, str(prior_channels)))
