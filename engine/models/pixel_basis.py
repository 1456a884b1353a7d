"""Pixel decoders through an image basis: the ``pca`` and ``multiscale`` options of the ``pixel-ridge`` preset.

Both fit a cross-validated ridge from voxels to a few latent values per image, then decode the latents linearly
back to pixels, ``pixels = latents @ decode + offset``:

``pca``
    The latents are the scores on the first K principal components of the basis images (the training stimuli plus
    the subject's prior images; never a test stimulus): ``decode`` = the components (K, n_pixels), ``offset`` = the
    basis images' mean. The standard linear baseline of small-image studies (Schoenmakers et al. 2013).
``multiscale``
    Miyawaki et al. 2008: local image bases, the 1×1, 1×2, 2×1 and 2×2 patches of the stimulus grid at every
    (overlapping) position; the latent of a patch is its mean contrast, predicted by its own ridge decoder (its own
    alpha). Each pixel is then the least-squares combination (weights and an intercept, fitted on the training set)
    of the predictions of the patches that cover it. The combination is fitted on *out-of-fold* predictions of the
    training trials (``engine.models.ridge.cross_validated_predictions``): in-sample ridge predictions are too good
    and would teach the combination to trust them too much.

``PixelBasisDecoder`` behaves like a ``RidgeCV`` from voxels to pixels (``predict``, ``coef_``, ``intercept_``: the
folded linear map), so predictions, evaluation and ``reconstruct`` need nothing else. A run stores it as
``model/ridge/`` (voxels → latents, a ``RidgeCV`` folder) and ``model/pixel_basis/`` (``config.json`` +
``basis.safetensors`` with ``decode`` and ``offset``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from engine.errors import CheckpointError, ConfigError, DataError

PIXEL_BASES = ("pixels", "pca", "multiscale")
BASIS_DIR = "pixel_basis"
PATCH_SHAPES = ((1, 1), (1, 2), (2, 1), (2, 2))  # Miyawaki et al. 2008's local image bases (rows × columns)
# The multi-scale decode matrix is dense (n_patches × n_pixels, ~4 n_pixels²): 64×64 grey images need 270 MB, colour
# ones 2.4 GB (up to 90×90 grey, 52×52 colour fit). Small stimulus grids are what the method is for; larger images
# get one clear line instead.
MULTISCALE_MAX_BYTES = 1 << 30


class PixelBasisDecoder:
    """A fitted voxels → latents ridge and the linear decoding of latents to pixels.

    Parameters
    ----------
    ridge : RidgeCV
        Fitted from (normalised) voxels to the latents.
    decode : float32 array (n_latents, n_pixels)
    offset : float32 array (n_pixels,)
    info : dict
        What the basis is (``kind``, sizes, the images it was fitted on); stored with the run.
    """

    def __init__(self, ridge, decode: np.ndarray, offset: np.ndarray, info: dict) -> None:
        self.ridge = ridge
        self.decode = np.asarray(decode, np.float32)
        self.offset = np.asarray(offset, np.float32)
        self.info = dict(info)

    @property
    def coef_(self) -> np.ndarray:
        """(n_voxels, n_pixels): the whole decoder folded into one linear map."""
        return self.ridge.coef_ @ self.decode

    @property
    def intercept_(self) -> np.ndarray:
        return self.ridge.intercept_ @ self.decode + self.offset

    @property
    def alphas_(self) -> np.ndarray:
        """The alpha of every latent (principal component or patch)."""
        return self.ridge.alphas_

    def predict(self, X) -> np.ndarray:
        """Predicted pixels (n_samples, n_pixels) float32."""
        latents = np.asarray(self.ridge.predict(X), np.float32).reshape(len(X), -1)
        return latents @ self.decode + self.offset

    def save_into(self, model_dir: str | Path) -> None:
        """Write ``ridge/`` and ``pixel_basis/`` into a run's model folder (itself written atomically)."""
        from safetensors.numpy import save

        from engine.atomic import atomic_dir, atomic_write_bytes

        model_dir = Path(model_dir)
        self.ridge.save(model_dir / "ridge")
        with atomic_dir(model_dir / BASIS_DIR, overwrite=True) as tmp:
            (tmp / "config.json").write_text(json.dumps({"class": "PixelBasisDecoder", "schema_version": 1,
                                                         **self.info}, indent=2, sort_keys=True) + "\n")
            atomic_write_bytes(tmp / "basis.safetensors", save({"decode": np.ascontiguousarray(self.decode),
                                                                "offset": np.ascontiguousarray(self.offset)}))

    @classmethod
    def load_from(cls, model_dir: str | Path) -> "PixelBasisDecoder":
        """Read a run's model folder written by ``save_into`` (no pickle)."""
        from safetensors.numpy import load_file

        from engine.jsonfile import read_object
        from engine.models.ridge import RidgeCV

        folder = Path(model_dir) / BASIS_DIR
        cfg, weights = folder / "config.json", folder / "basis.safetensors"
        for f in (cfg, weights):
            if not f.is_file():
                raise CheckpointError(f"{folder}: incomplete pixel basis (missing {f.name})")
        info = read_object(cfg, CheckpointError)
        w = load_file(str(weights))
        if set(w) != {"decode", "offset"}:
            raise CheckpointError(f"{weights}: expected tensors ['decode', 'offset'], found {sorted(w)}")
        ridge = RidgeCV.load(Path(model_dir) / "ridge")
        decode, offset = w["decode"], w["offset"]
        if decode.ndim != 2 or decode.shape[0] != ridge.coef_.shape[1] or offset.shape != (decode.shape[1],):
            raise CheckpointError(f"{weights}: 'decode' {decode.shape} / 'offset' {offset.shape} do not fit the "
                                  f"ridge's {ridge.coef_.shape[1]} latents")
        info = {k: v for k, v in info.items() if k not in ("class", "schema_version")}
        return cls(ridge, decode, offset, info)


# ----------------------------------------------------------------------------------------------------------------------
# Principal components


def pca_basis(images: np.ndarray, n_components: int) -> tuple[np.ndarray, np.ndarray, int]:
    """(components (K, n_pixels), mean (n_pixels,), rank) of pixel rows ``images`` (n, n_pixels).

    K is ``n_components`` clipped to the rank of the centred images (components beyond it carry no variance).
    """
    x = np.asarray(images, np.float64)
    mean = x.mean(0)
    x = x - mean
    if len(x) > x.shape[1]:  # many prior images: the (n_pixels²) scatter matrix is the smaller problem
        s2, v = np.linalg.eigh(x.T @ x)
        order = np.argsort(s2)[::-1]
        s, vt = np.sqrt(np.clip(s2[order], 0, None)), v[:, order].T
    else:
        _, s, vt = np.linalg.svd(x, full_matrices=False)
    rank = int((s > s[0] * 1e-6).sum()) if s.size and s[0] > 0 else 0
    k = min(int(n_components), rank)
    return vt[:k].astype(np.float32), mean.astype(np.float32), rank


def pca_basis_images(subject, targets: np.ndarray, train_image: np.ndarray) -> tuple[np.ndarray, str]:
    """(pixel rows (m, n_pixels) in [0, 1], what they are): the images the principal components are fitted on.

    The training stimuli (``targets`` rows ``train_image``: the ``stimulus-pixels`` targets) plus the subject's
    ``prior_images`` in the same layout (grey stimuli: one channel). Never a test stimulus.
    """
    from engine.data.readers.own_images import is_grey

    train = np.unique(train_image)
    rows = [np.asarray(targets[train], np.float32).reshape(len(train), -1)]
    source = f"{len(train)} training stimuli"
    prior = subject.prior_images
    if prior is not None and len(prior):
        prior = np.asarray(prior)
        grey = rows[0].shape[1] == prior.shape[1] * prior.shape[2]
        if grey and not is_grey(prior):
            raise DataError(subject.path or subject.name, "prior images are in colour, the stimuli grey",
                            key="prior_images", expected="grey images", found="colour")
        x = prior[..., :1] if grey else prior
        rows.append(x.reshape(len(x), -1).astype(np.float32) / 255.0)
        source += f" + {len(prior)} prior images"
    return np.concatenate(rows), source


def describe_basis(info: dict) -> str:
    """One log line saying what a fitted basis is."""
    if info["kind"] == "pca":
        msg = f"pixel basis: {info['n_components']} principal components of {info['basis_images']}"
        if info["n_components"] < info["requested_components"]:
            msg += f" (asked for {info['requested_components']}; the basis images have rank {info['rank']})"
        return msg
    counts = ", ".join(f"{k}: {v}" for k, v in info["elements"].items())
    return f"pixel basis: {info['n_elements']} multi-scale local patches ({counts}), combined per pixel"


# ----------------------------------------------------------------------------------------------------------------------
# Multi-scale local bases (Miyawaki et al. 2008)


def multiscale_elements(height: int, width: int, channels: int = 1) -> np.ndarray:
    """(n_elements, n_pixels) float32: each row averages one patch (1×1, 1×2, 2×1, 2×2, every position, every
    channel) of pixels flattened as ``(H, W, C)`` in C order (the ``stimulus-pixels`` layout)."""
    rows = []
    for ph, pw in PATCH_SHAPES:
        for c in range(channels):
            for i in range(height - ph + 1):
                for j in range(width - pw + 1):
                    e = np.zeros((height, width, channels), np.float32)
                    e[i:i + ph, j:j + pw, c] = 1.0 / (ph * pw)
                    rows.append(e.ravel())
    return np.stack(rows)


def combination_weights(contrasts: np.ndarray, pixels: np.ndarray, elements: np.ndarray):
    """Least-squares combination of predicted patch contrasts into pixels, one small regression per pixel.

    Parameters
    ----------
    contrasts : (n, n_elements) predicted contrasts (out-of-fold) of the training images
    pixels : (n, n_pixels) true training pixels
    elements : (n_elements, n_pixels) the patches (``multiscale_elements``); pixel p combines only the patches that
        cover it.

    Returns
    -------
    (decode (n_elements, n_pixels), offset (n_pixels,)) float32
    """
    contrasts = np.asarray(contrasts, np.float64)
    pixels = np.asarray(pixels, np.float64)
    decode = np.zeros(elements.shape, np.float64)
    offset = np.zeros(elements.shape[1], np.float64)
    ones = np.ones((len(contrasts), 1))
    for p in range(elements.shape[1]):
        cover = np.flatnonzero(elements[:, p] > 0)
        a = np.hstack([contrasts[:, cover], ones])
        w, *_ = np.linalg.lstsq(a, pixels[:, p], rcond=None)
        decode[cover, p], offset[p] = w[:-1], w[-1]
    return decode.astype(np.float32), offset.astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Fitting


def fit_pixel_decoder(basis: str, ridge_factory, x_train: np.ndarray, y_train: np.ndarray, *,
                      basis_images: np.ndarray | None = None, n_components: int = 64,
                      image_shape: tuple[int, int, int] | None = None, cv=5, basis_source: str = ""):
    """Fit a ``PixelBasisDecoder`` (``basis`` = ``"pca"`` or ``"multiscale"``).

    Parameters
    ----------
    ridge_factory : callable
        ``() -> RidgeCV`` (the run's alphas, folds and backend).
    x_train : (n, n_voxels) normalised training betas
    y_train : (n, n_pixels) the pixels of each training trial's image, in [0, 1]
    basis_images : (m, n_pixels)
        ``pca``: the images the components are fitted on (training stimuli and prior images only).
    n_components : int
        ``pca``: K, clipped to the rank of ``basis_images``.
    image_shape : (H, W, C)
        ``multiscale``: the pixel grid of a target row (C = 1 for grey).
    cv : int
        ``multiscale``: folds of the out-of-fold predictions the combination is fitted on.
    basis_source : str
        Recorded in the run: what the PCA basis was fitted on.
    """
    if basis == "pca":
        if basis_images is None or len(basis_images) < 2:
            raise ConfigError("data.pixel_basis 'pca': expected at least 2 training or prior images to fit the "
                              "principal components")
        components, mean, rank = pca_basis(basis_images, n_components)
        ridge = ridge_factory().fit(x_train, (np.asarray(y_train, np.float32) - mean) @ components.T)
        info = {"kind": "pca", "n_components": int(len(components)), "requested_components": int(n_components),
                "rank": rank, "n_basis_images": int(len(basis_images)), "basis_images": basis_source}
        return PixelBasisDecoder(ridge, components, mean, info)
    if basis == "multiscale":
        if image_shape is None:
            raise ConfigError("data.pixel_basis 'multiscale': the stimulus image shape is needed")
        h, w, c = (int(v) for v in image_shape)
        n_elements = c * sum((h - ph + 1) * (w - pw + 1) for ph, pw in PATCH_SHAPES)
        if 4 * n_elements * h * w * c > MULTISCALE_MAX_BYTES:
            raise ConfigError(f"data.pixel_basis 'multiscale': {h}×{w}×{c} images give {n_elements} patch decoders "
                              f"and a {4 * n_elements * h * w * c / 2**30:.1f} GiB decode matrix; expected at most "
                              f"{MULTISCALE_MAX_BYTES >> 30} GiB (up to 90×90 grey images); use data.pixel_basis "
                              "'pca' for larger images")
        elements = multiscale_elements(h, w, c)
        if elements.shape[1] != y_train.shape[1]:
            raise ConfigError(f"data.pixel_basis 'multiscale': {y_train.shape[1]} pixel targets do not fit "
                              f"{h}×{w}×{c} images")
        contrasts = np.asarray(y_train, np.float32) @ elements.T
        ridge = ridge_factory().fit(x_train, contrasts)
        from engine.models.ridge import cross_validated_predictions

        oof = cross_validated_predictions(x_train, contrasts, ridge.alphas_, cv=cv)
        decode, offset = combination_weights(oof, y_train, elements)
        counts = {f"{ph}x{pw}": int(c * (h - ph + 1) * (w - pw + 1)) for ph, pw in PATCH_SHAPES}
        info = {"kind": "multiscale", "image_shape": [h, w, c], "n_elements": int(len(elements)),
                "elements": counts, "combination": "least squares per pixel on out-of-fold predictions"}
        return PixelBasisDecoder(ridge, decode, offset, info)
    raise ConfigError(f"data.pixel_basis: expected one of {list(PIXEL_BASES)}, found {basis!r}")
