"""Encoding models: predict each voxel's response from the image embedding, and map how well it works.

Recipe (``encode_job``)
-----------------------
1. Embed every stimulus image (pooled vector or flattened tokens of the chosen embedder; cached on disk).
2. Betas as float32, z-scored per voxel within each session (removes per-session offsets and scale).
3. Standardise the features with the training images' mean and SD, then fit ``RidgeCV`` (one alpha per voxel by
   5-fold CV) on single training trials.
4. Predict the test images and compare with the repeat-averaged test responses: per-voxel Pearson r, R², and the
   noise-ceiling-normalised accuracy ``r / noise_ceiling`` (where the subject gives a noise ceiling).
5. On simulated subjects, compare with the ground truth (``ground_truth_checks``).

Run folder::

    encoding.npz      per-voxel maps (n_voxels,) float32: test_r, test_r2, noise_ceiling, normalized_r, alpha
    encoding.json     embedder, sizes, per-ROI summary, ground-truth checks
    encoding-model/   the fitted model (feature standardisation + ridge), for ``predict_voxels``
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.atomic import atomic_write_bytes, atomic_write_json
from engine.errors import CheckpointError, DataError
from engine.events import EtaClock, Finished, Log, Metric, Progress, Started, ensure_token
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


# ----------------------------------------------------------------------------------------------------------------------
# The job


def encode_job(subject, out_dir, *, embedder: str = "demo", features: str = "pooled", backend: str = "numpy",
               cancel=None, cache_dir=None) -> Iterator:
    """Fit encoding maps for ``subject`` (a Subject or a path) and write them into ``out_dir``.

    Yields engine events; returns the ``EncodingMaps``. ``features`` is "pooled" or "tokens" (flattened).
    """
    from engine.models.embedders import cached_image_embeddings, load_image_embedder

    cancel = ensure_token(cancel)
    out_dir = Path(out_dir)
    if features not in ("pooled", "tokens"):
        raise DataError("--features", "unknown feature kind", expected="'pooled' or 'tokens'", found=repr(features))
    if isinstance(subject, (str, Path)):
        from engine.data import open_subject

        subject = open_subject(subject)
    total = 4
    clock = EtaClock(total)
    yield Started(job="encode", run_dir=str(out_dir), total=total)
    t0 = time.perf_counter()

    yield Progress(0, total, stage="embed", message=f"embedding {subject.n_images} images ({embedder})")
    emb_model = load_image_embedder(embedder)
    cancel.raise_if_set()
    emb = cached_image_embeddings(subject.images, emb_model, tokens=features == "tokens", cache_dir=cache_dir)
    cancel.raise_if_set()
    yield Progress(1, total, eta_s=clock.eta(1), stage="fit",
                   message=f"ridge {emb.reshape(len(emb), -1).shape[1]} features → {subject.n_voxels} voxels")
    maps = fit_encoding(emb, subject, backend=backend, feature_kind=features)
    maps.meta.update({"embedder": emb_model.spec, "embedder_identity": emb_model.identity,
                      "subject": subject.name, "subject_path": None if subject.path is None else str(subject.path)})
    cancel.raise_if_set()
    yield Progress(2, total, eta_s=clock.eta(2), stage="evaluate")
    yield Metric("mean_test_r", maps.meta["summary"]["mean_test_r"], split="test")
    if maps.meta["summary"]["mean_normalized_r"] is not None:
        yield Metric("mean_normalized_r", maps.meta["summary"]["mean_normalized_r"], split="test")
    for name, s in maps.meta["rois"].items():
        yield Log(f"{name}: {s['n_voxels']} voxels, mean test r {s['mean_r']:.3f}")
    if subject.ground_truth:
        checks = ground_truth_checks(subject, maps)
        maps.meta["ground_truth"] = checks
        for k, v in checks.items():
            if isinstance(v, (int, float)):
                yield Metric(f"gt_{k}", float(v), split="test")
    cancel.raise_if_set()
    yield Progress(3, total, eta_s=clock.eta(3), stage="save")
    maps.meta["elapsed_s"] = round(time.perf_counter() - t0, 2)
    maps.save(out_dir)
    yield Progress(4, total, eta_s=0.0, stage="save")
    yield Finished("done", summary={"run_dir": str(out_dir), **maps.meta["summary"]})
    return maps


# ----------------------------------------------------------------------------------------------------------------------
# Ground truth (simulated subjects)


def contrast_energy(images, *, grid: int = 16, block: int = 256) -> np.ndarray:
    """Local contrast/colour energy of each image on a ``grid × grid`` map, (n_images, grid, grid) float32.

    Energy = summed absolute RGB difference from the image's background colour (median of its border pixels),
    averaged over each grid cell. Row 0 is the top of the image, column 0 its left edge.
    """
    n, h, w, _ = images.shape
    out = np.empty((n, grid, grid), np.float32)
    for s in range(0, n, block):
        x = np.asarray(images[s : s + block], np.float32) / 255.0
        border = np.concatenate([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)  # (b, 2h+2w, 3)
        bg = np.median(border, axis=1)[:, None, None, :]
        e = np.abs(x - bg).sum(-1)  # (b, h, w)
        hs, ws = h // grid, w // grid
        e = e[:, : hs * grid, : ws * grid].reshape(len(x), grid, hs, grid, ws).mean((2, 4))
        out[s : s + block] = e
    return out


def estimate_prf_centres(responses: np.ndarray, energy: np.ndarray, *, top_fraction: float = 0.5) -> np.ndarray:
    """Receptive-field centre of each voxel from its responses to images' contrast energy.

    Correlates every voxel's responses with the energy in each grid cell and takes the centroid of the cells whose
    correlation exceeds ``top_fraction`` of that voxel's maximum.

    Parameters
    ----------
    responses : (n_images, n_voxels)
    energy : (n_images, grid, grid)

    Returns
    -------
    (n_voxels, 2) float32: (x, y) in grid-cell units scaled to [0, 1] (x to the right, y downwards, cell centres).
    """
    n, g, _ = energy.shape
    e = energy.reshape(n, g * g).astype(np.float64)
    e = (e - e.mean(0)) / np.where(e.std(0) > 0, e.std(0), 1.0)
    r = np.asarray(responses, np.float64)
    r = (r - r.mean(0)) / np.where(r.std(0) > 0, r.std(0), 1.0)
    corr = e.T @ r / n  # (g², n_voxels)
    top = corr.max(0, keepdims=True)
    wgt = np.where(corr >= top_fraction * top, np.clip(corr, 0, None), 0.0)
    wgt = wgt / np.where(wgt.sum(0) > 0, wgt.sum(0), 1.0)
    rows, cols = np.divmod(np.arange(g * g), g)
    x = ((cols + 0.5) / g) @ wgt
    y = ((rows + 0.5) / g) @ wgt
    return np.stack([x, y], 1).astype(np.float32)


def ground_truth_checks(subject, maps: EncodingMaps) -> dict:
    """Compare recovered maps with a simulated subject's generating parameters. Empty for real subjects.

    - ``r_vs_true_noise_ceiling``: Spearman correlation, over voxels, of test r with the true noise ceiling.
    - ``roi_order_spearman_r_vs_true_ceiling``: do ROIs rank the same by mean test r as by mean true ceiling?
    - ``prf_x_corr``/``prf_y_corr``: Pearson correlation between the true pRF centres of early visual voxels and the
      centres estimated from their training responses to contrast energy (``estimate_prf_centres``).
    """
    gt = subject.ground_truth or {}
    out: dict = {}
    nc_true = gt.get("noise_ceiling_true", gt.get("noise_ceiling"))
    if nc_true is not None:
        nc_true = np.asarray(nc_true, np.float64)
        out["r_vs_true_noise_ceiling"] = _spearman(maps.test_r, nc_true)
        roi_r, roi_nc = [], []
        for name, mask in subject.rois.items():
            m = np.asarray(mask, bool)
            if m.any():
                roi_r.append(float(maps.test_r[m].mean()))
                roi_nc.append(float(nc_true[m].mean()))
        if len(roi_r) >= 3:
            out["roi_order_spearman_r_vs_true_ceiling"] = _spearman(np.array(roi_r), np.array(roi_nc))
    if "prf_x" in gt and "prf_y" in gt:
        out.update(_prf_check(subject, np.asarray(gt["prf_x"], np.float64), np.asarray(gt["prf_y"], np.float64)))
    return out


EARLY_VISUAL = ("V1", "V2", "V3")


def _prf_check(subject, true_x: np.ndarray, true_y: np.ndarray) -> dict:
    early = np.zeros(subject.n_voxels, bool)
    for name in EARLY_VISUAL:
        if name in subject.rois:
            early |= np.asarray(subject.rois[name], bool)
    early &= np.isfinite(true_x) & np.isfinite(true_y)
    if early.sum() < 3:
        return {}
    train = subject.split_indices("train")
    image_index = np.asarray(subject.trials.image_index)[train]
    betas = session_zscore(subject.betas[:, np.flatnonzero(early)], subject.trials.session)[train]
    # One response per training image (averaging any repeats), against that image's energy map.
    uniq, inv = np.unique(image_index, return_inverse=True)
    resp = np.zeros((len(uniq), betas.shape[1]), np.float64)
    np.add.at(resp, inv, betas)
    resp /= np.bincount(inv)[:, None]
    energy = contrast_energy(subject.images[uniq] if len(uniq) < subject.n_images else subject.images)
    est = estimate_prf_centres(resp, energy)
    return {"prf_n_voxels": int(early.sum()),
            "prf_x_corr": float(np.corrcoef(est[:, 0], true_x[early])[0, 1]),
            "prf_y_corr": float(np.corrcoef(est[:, 1], true_y[early])[0, 1])}


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x), np.float64)
    r[order] = np.arange(len(x))
    return r


def _spearman(a, b) -> float:
    a = np.asarray(a, np.float64)
    b = np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3:
        return float("nan")
    return float(np.corrcoef(_rank(a[ok]), _rank(b[ok]))[0, 1])
