"""Encoding models: predict each voxel's response from the image embedding, and map how well it works.

Recipe (``engine.models.encoding_job.encode_job``)
--------------------------------------------------
1. Embed every stimulus image (pooled vector or flattened tokens of the chosen embedder; cached on disk).
2. Betas as float32, z-scored per voxel within each session (removes per-session offsets and scale).
3. Standardise the features with the training images' mean and SD, then fit ``RidgeCV`` (one alpha per voxel by
   5-fold CV) on single training trials.
4. Predict the test images and compare with the repeat-averaged test responses: per-voxel Pearson r, R², and the
   noise-ceiling-normalised accuracy ``r / noise_ceiling`` (where the subject gives a noise ceiling).
5. On simulated subjects, compare with the ground truth (``engine.models.encoding_ground_truth``).

Run folder::

    encoding.npz      per-voxel maps (n_voxels,) float32: test_r, test_r2, noise_ceiling, normalized_r, alpha
    encoding.json     embedder, sizes, per-ROI summary, ground-truth checks
    encoding-model/   the fitted model (feature standardisation + ridge), for ``predict_voxels``
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_bytes, atomic_write_json
from engine.errors import CheckpointError, DataError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.models.ridge import RidgeCV, pearson_per_target, r2_per_target

MAPS_FILE = "encoding.npz"
META_FILE = "encoding.json"
MODEL_DIR = "encoding-model"
MAP_KEYS = ("test_r", "test_r2", "noise_ceiling", "normalized_r", "alpha")
ENCODING_ALPHAS = tuple(float(a) for a in np.logspace(0, 6, 13))


# ----------------------------------------------------------------------------------------------------------------------
# The fitted model


@dataclass
class EncodingModel:
    """Embedding → voxel model: ``ridge.predict((features - feature_mean) / feature_scale)``.

    Attributes
    ----------
    ridge : RidgeCV
        Fitted on standardised features, ``coef_`` (n_features, n_voxels).
    feature_mean, feature_scale : (n_features,) float32
    features : str
        "pooled" or "tokens" (flattened) embeddings.
    """

    ridge: RidgeCV
    feature_mean: np.ndarray
    feature_scale: np.ndarray
    features: str = "pooled"

    def predict(self, embeddings: np.ndarray) -> np.ndarray:
        """Voxel responses (N, n_voxels) float32 for embeddings (N, D) (tokens (N, T, D) are flattened)."""
        x = np.asarray(embeddings, np.float32).reshape(len(embeddings), -1)
        if x.shape[1] != self.feature_mean.shape[0]:
            raise DataError("embeddings", "do not match the encoding model",
                            expected=f"(N, {self.feature_mean.shape[0]}) {self.features} features",
                            found=f"{tuple(np.shape(embeddings))}")
        return self.ridge.predict((x - self.feature_mean) / self.feature_scale)

    def save(self, folder) -> Path:
        from safetensors.numpy import save

        folder = Path(folder)
        self.ridge.save(folder / "ridge")
        atomic_write_bytes(folder / "features.safetensors",
                           save({"mean": self.feature_mean, "scale": self.feature_scale}))
        atomic_write_json(folder / "config.json", {"class": "EncodingModel", "schema_version": 1,
                                                   "features": self.features})
        return folder

    @classmethod
    def load(cls, folder) -> "EncodingModel":
        from safetensors.numpy import load_file

        folder = Path(folder)
        for name in ("config.json", "features.safetensors", "ridge"):
            if not (folder / name).exists():
                raise CheckpointError(f"{folder}: not an encoding model (missing {name})")
        meta = read_object(folder / "config.json")
        f = load_file(str(folder / "features.safetensors"))
        return cls(ridge=RidgeCV.load(folder / "ridge"), feature_mean=f["mean"], feature_scale=f["scale"],
                   features=str(meta.get("features", "pooled")))


@dataclass
class EncodingMaps:
    """Per-voxel encoding accuracy maps and what produced them.

    Attributes
    ----------
    test_r, test_r2 : (n_voxels,) float32
        Pearson r and R² between predicted and repeat-averaged measured test responses.
    noise_ceiling : (n_voxels,) float32
        From the subject's ``VoxelTable`` (NaN where unknown).
    normalized_r : (n_voxels,) float32
        ``test_r / noise_ceiling``; NaN where the ceiling is unknown or below 0.05.
    alpha : (n_voxels,) float32
        Ridge alpha chosen for each voxel.
    meta : dict
        Embedder, sizes, per-ROI summary (``rois``), ground-truth checks (``ground_truth``).
    model : EncodingModel or None
    """

    test_r: np.ndarray
    test_r2: np.ndarray
    noise_ceiling: np.ndarray
    normalized_r: np.ndarray
    alpha: np.ndarray
    meta: dict = field(default_factory=dict)
    model: EncodingModel | None = None

    @property
    def n_voxels(self) -> int:
        return int(self.test_r.shape[0])

    def save(self, run_dir) -> Path:
        """Write ``encoding.npz``, ``encoding.json`` (and ``encoding-model/`` when a model is attached)."""
        import io

        run_dir = Path(run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        np.savez(buf, **{k: np.asarray(getattr(self, k), np.float32) for k in MAP_KEYS})
        atomic_write_bytes(run_dir / MAPS_FILE, buf.getvalue())
        atomic_write_json(run_dir / META_FILE, self.meta)
        if self.model is not None:
            self.model.save(run_dir / MODEL_DIR)
        return run_dir

    @classmethod
    def load(cls, run_dir, *, with_model: bool = True) -> "EncodingMaps":
        run_dir = Path(run_dir)
        maps = run_dir / MAPS_FILE
        if not maps.is_file():
            raise FileNotFoundError(f"{maps}: no encoding maps (run `neurolens encode` first)")
        with np.load(maps, allow_pickle=False) as z:
            arrays = {k: z[k].astype(np.float32) for k in MAP_KEYS}
        meta = read_object(run_dir / META_FILE) if (run_dir / META_FILE).is_file() else {}
        model = None
        if with_model and (run_dir / MODEL_DIR).is_dir():
            model = EncodingModel.load(run_dir / MODEL_DIR)
        return cls(**arrays, meta=meta, model=model)


def load_encoding_accuracy(run_dir) -> np.ndarray:
    """The per-voxel test correlation map (n_voxels,) of a run folder, for drawing on the brain."""
    return EncodingMaps.load(run_dir, with_model=False).test_r


def predict_voxels(maps_or_model, embeddings: np.ndarray) -> np.ndarray:
    """Predicted voxel responses (N, n_voxels) float32 for image embeddings (N, D) or tokens (N, T, D).

    ``maps_or_model``: an ``EncodingMaps`` with its model, an ``EncodingModel``, a fitted ``RidgeCV`` (used on the raw
    embeddings), or a run folder / ``encoding-model`` folder path. The embeddings must come from the same embedder
    (``maps.meta["embedder"]``) and kind (pooled or tokens) the model was fitted on.
    """
    m = maps_or_model
    if isinstance(m, (str, Path)):
        p = Path(m)
        m = EncodingModel.load(p / MODEL_DIR if (p / MODEL_DIR).is_dir() else p)
    if isinstance(m, EncodingMaps):
        if m.model is None:
            raise CheckpointError("EncodingMaps has no fitted model (load it with with_model=True)")
        m = m.model
    if isinstance(m, RidgeCV):
        return m.predict(np.asarray(embeddings, np.float32).reshape(len(embeddings), -1))
    if isinstance(m, EncodingModel):
        return m.predict(embeddings)
    raise TypeError(f"predict_voxels: expected EncodingMaps, EncodingModel, RidgeCV or a folder, "
                    f"got {type(m).__name__}")


def predict_voxels_for_images(maps, images: np.ndarray, *, embedder=None) -> np.ndarray:
    """Predicted voxel responses (N, n_voxels) for uint8 images (N, H, W, 3), embedding them as the model expects.

    ``maps``: ``EncodingMaps`` (with model) or a run folder. ``embedder``: an ``ImageEmbedder`` to reuse; by default
    the one named in ``maps.meta["embedder"]`` is loaded. Used to compare reconstructions with the seen images in
    voxel space.
    """
    from engine.models.embedders import load_image_embedder

    if isinstance(maps, (str, Path)):
        maps = EncodingMaps.load(maps)
    if maps.model is None:
        raise CheckpointError("EncodingMaps has no fitted model (load it with with_model=True)")
    if embedder is None:
        spec = maps.meta.get("embedder")
        if not spec:
            raise CheckpointError("encoding maps do not name their embedder (meta['embedder']); pass embedder=")
        embedder = load_image_embedder(spec)
    emb = embedder.embed(images, tokens=maps.model.features == "tokens")
    return predict_voxels(maps, emb)


def category_tuning(maps, subject, *, embedder=None, cache_dir=None) -> tuple[np.ndarray, list[str]]:
    """Each voxel's predicted response to each stimulus category: the encoding model applied to the subject's images,
    averaged per category label, in the model's units (z-scored betas).

    Returns ``(n_voxels, n_categories)`` float32 and the category names; an interpretable view of a voxel's encoding
    weights (the weights themselves live in the embedding's feature space).
    """
    from engine.models.embedders import cached_image_embeddings, load_image_embedder

    if isinstance(maps, (str, Path)):
        maps = EncodingMaps.load(maps)
    if maps.model is None:
        raise CheckpointError("EncodingMaps has no fitted model (load it with with_model=True)")
    labels = subject.stimuli.labels
    cats = list(subject.stimuli.categories)
    if labels is None or not cats:
        raise DataError(subject.path or subject.name, "the stimuli carry no category labels",
                        key="stimuli.labels", expected="one category per image", found="none")
    if embedder is None:
        spec = maps.meta.get("embedder")
        if not spec:
            raise CheckpointError("encoding maps do not name their embedder (meta['embedder']); pass embedder=")
        embedder = load_image_embedder(spec)
    emb = cached_image_embeddings(subject.images, embedder, tokens=maps.model.features == "tokens",
                                  cache_dir=cache_dir)
    pred = predict_voxels(maps, emb)
    labels = np.asarray(labels)
    out = np.full((pred.shape[1], len(cats)), np.nan, np.float32)
    for k in range(len(cats)):
        m = labels == k
        if m.any():
            out[:, k] = pred[m].mean(0)
    return out, cats


# ----------------------------------------------------------------------------------------------------------------------
# Fitting


def session_zscore(betas, sessions: np.ndarray, *, block: int = 4096) -> np.ndarray:
    """Float32 copy of ``betas`` (n_trials, n_voxels) z-scored per voxel within each session (SD 0 → 1)."""
    out = np.empty(betas.shape, np.float32)
    sessions = np.asarray(sessions)
    for s in np.unique(sessions):
        idx = np.flatnonzero(sessions == s)
        for v0 in range(0, betas.shape[1], block):
            x = np.asarray(betas[idx, v0 : v0 + block], np.float32)
            sd = x.std(0)
            out[idx, v0 : v0 + block] = (x - x.mean(0)) / np.where(sd > 0, sd, 1.0)
    return out


def fit_encoding(features: np.ndarray, subject, *, alphas=ENCODING_ALPHAS, backend: str = "numpy",
                 feature_kind: str = "pooled", cv: int = 5) -> EncodingMaps:
    """Fit and evaluate an encoding model from per-image features (n_images, D) for ``subject``.

    Parameters
    ----------
    features : (n_images, D) float32
        One row per ``subject.images`` row.
    subject : Subject
        Its training trials fit the model; the repeat-averaged test trials evaluate it.
    """
    feats = np.asarray(features, np.float32).reshape(len(features), -1)
    betas = session_zscore(subject.betas, subject.trials.session)
    train = subject.split_indices("train")
    test_images, groups = subject.repeat_groups("test")
    if len(train) == 0 or len(test_images) == 0:
        raise DataError(subject.path or subject.name, "an encoding model needs training and test trials",
                        key="trials.split", expected="both train and test trials",
                        found=f"{len(train)} train, {len(test_images)} test images")
    image_index = np.asarray(subject.trials.image_index)
    x_train = feats[image_index[train]]
    mean = x_train.mean(0)
    scale = x_train.std(0)
    scale = np.where(scale > 1e-8, scale, 1.0).astype(np.float32)
    ridge = RidgeCV(alphas=alphas, cv=cv, backend=backend).fit((x_train - mean) / scale, betas[train])
    model = EncodingModel(ridge=ridge, feature_mean=mean.astype(np.float32), feature_scale=scale,
                          features=feature_kind)

    valid = groups >= 0
    y_test = np.stack([betas[g[v]].mean(0) for g, v in zip(groups, valid)])  # (n_test_images, n_voxels)
    pred = model.predict(feats[test_images])
    r = pearson_per_target(y_test, pred)
    r2 = r2_per_target(y_test, pred)
    nc = np.asarray(subject.voxels.noise_ceiling, np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        norm = np.where(np.isfinite(nc) & (nc >= 0.05), r / nc, np.nan).astype(np.float32)
    maps = EncodingMaps(test_r=r, test_r2=r2, noise_ceiling=nc, normalized_r=norm, alpha=ridge.alphas_, model=model)
    maps.meta = {
        "n_train_trials": int(len(train)), "n_test_images": int(len(test_images)),
        "max_repeats": int(groups.shape[1]), "n_voxels": int(subject.n_voxels), "n_features": int(feats.shape[1]),
        "features": feature_kind, "preprocessing": "betas z-scored per voxel within session; features standardised",
        "summary": {"mean_test_r": float(np.mean(r)), "median_test_r": float(np.median(r)),
                    "mean_normalized_r": _nanmean(norm)},
        "rois": roi_summary(subject, r, norm),
    }
    return maps


def _nanmean(x) -> float | None:
    x = np.asarray(x, np.float64)
    x = x[np.isfinite(x)]
    return float(x.mean()) if x.size else None


def roi_summary(subject, r: np.ndarray, normalized: np.ndarray) -> dict:
    """Per ROI: voxel count, mean/median test r, mean normalised accuracy, mean noise ceiling."""
    nc = np.asarray(subject.voxels.noise_ceiling, np.float32)
    out = {}
    for name, mask in subject.rois.items():
        m = np.asarray(mask, bool)
        if not m.any():
            continue
        out[name] = {"n_voxels": int(m.sum()), "mean_r": float(r[m].mean()), "median_r": float(np.median(r[m])),
                     "mean_normalized_r": _nanmean(normalized[m]), "mean_noise_ceiling": _nanmean(nc[m])}
    return out
