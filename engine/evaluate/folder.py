"""``evaluate_folder``: every metric of one reconstruction folder, as table rows and a per-trial table."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import DataError
from engine.evaluate.config import EvaluationConfig
from engine.evaluate.context import build_context
from engine.evaluate.protocols import add_protocols
from engine.evaluate.result import EvaluationResult, concat_tables
from engine.evaluate.scoring import load_png, load_set, score_sets
from engine.metrics import aggregate
from engine.metrics.pixel_identification import NSD_PROTOCOL, NativeProtocol
from engine.metrics.retrieval import DIRECTION_LABELS, top1_retrieval
from engine.models.embedders.features import (FeatureExtractor, FeatureUnavailable, ImageClassifier, load_classifier,
                                              load_feature_extractor)
from engine.recon.index import INDEX_FILE, ReconIndex, read_index


def evaluate_folder(path, features: Sequence[str | FeatureExtractor] | None = None, subject=None, *,
                    classifier: str | ImageClassifier | None = None,
                    encoding=None, encoding_features: FeatureExtractor | None = None,
                    config: EvaluationConfig = EvaluationConfig(), cancel=None) -> EvaluationResult:
    """Compute every metric for one reconstruction folder.

    Parameters
    ----------
    path : str or Path
        Folder with ``index.json`` (schema ``neurolens-recon/1``).
    features : list of specs or FeatureExtractor, optional
        Feature extractors for 2-way identification, correlation distance and label-based n-way (see
        ``engine.models.embedders.features``). Default: the folder's embedder (``"demo"`` or its CLIP folder).
    subject : str, Path or Subject, optional
        The subject, for measured test voxels and ROIs (brain correlation); default: the index's ``subject``.
    classifier : str or ImageClassifier, optional
        A local transformers image classifier for MinD-Vis n-way top-1.
    encoding : run folder or EncodingMaps, optional
        Where the encoding model is (``engine.models.encoding``: ``encoding.npz`` + ``encoding-model/``); default:
        the index's ``run``.
    encoding_features : FeatureExtractor, optional
        The features the encoding model reads; default: the embedder recorded with the encoding model.
    config : EvaluationConfig
    cancel : CancelToken, optional
        Checked between image sets.

    Returns
    -------
    EvaluationResult
    """
    index = read_index(path)
    n = len(index.items)
    if n < 2:  # two-way identification and retrieval compare an item with the others
        raise DataError(index.path / INDEX_FILE, key="items", expected="at least 2 test items", found=f"{n}")
    res = EvaluationResult()
    gt = load_set(index.path, [it.ground_truth for it in index.items])
    # 1-3. feature extractors, semantic targets, encoding model and measured voxels
    ctx = build_context(index, gt, features, subject, classifier, encoding, encoding_features, config, res)
    # 4. score every image set (small stimuli: PixCorr/SSIM at their own size, plus pixel identification)
    native = NativeProtocol.for_index(index.path, [it.ground_truth for it in index.items], load_png)
    sets = score_sets(index, gt, ctx, native, res, cancel)
    # 5. retrieval (per method, from embeddings.npz)
    retrieval = _retrieval(index, config, res)
    # 6. assemble rows and the per-trial table
    _assemble(index, sets, retrieval, res, ctx.label_n)
    add_protocols(index, ctx, config, res, n)
    for row in res.rows:
        row["protocol"] = native.name if native else NSD_PROTOCOL
    if native:
        res.protocol.update(native.protocols(n))
    return res


def evaluate_folders(paths, features=None, subject=None, **kwargs) -> EvaluationResult:
    """``evaluate_folder`` for several folders, merged into one result (one table)."""
    device = kwargs.get("config", EvaluationConfig()).device
    if features is not None:  # load each model once for all folders; a failing spec is kept to report its reason
        loaded = []
        for spec in features:
            try:
                loaded.append(spec if isinstance(spec, FeatureExtractor)
                              else load_feature_extractor(spec, device=device))
            except FeatureUnavailable:
                loaded.append(spec)
        features = loaded
    if isinstance(kwargs.get("classifier"), (str, Path)):
        try:
            kwargs["classifier"] = load_classifier(kwargs["classifier"], device=device)
        except FeatureUnavailable:
            pass
    out = None
    for p in paths:
        r = evaluate_folder(p, features=features, subject=subject, **kwargs)
        out = r if out is None else out.merge(r)
    return out


def _retrieval(index: ReconIndex, cfg: EvaluationConfig, res: EvaluationResult):
    f = index.path / "embeddings.npz"
    names = {d: f"retrieval {DIRECTION_LABELS[d].split(' (')[0]}" for d in DIRECTION_LABELS}
    if not f.is_file():
        for name in names.values():
            res.unavailable[name] = f"{f} not found (reconstruct writes it with brain and target embeddings)"
        return {}
    from engine.data.readers.checks import load_npz, require_key

    z = load_npz(f)  # truncated files, pickles and declared sizes give one clear line
    idx, b, t = (require_key(z, k, f) for k in ("image_index", "brain", "target"))
    for key, a, kinds in (("image_index", idx, "iu"), ("brain", b, "f"), ("target", t, "f")):
        if a.dtype.kind not in kinds or a.ndim < 1 or len(a) != len(idx):
            raise DataError(f, key=key, expected="integer image indices" if key == "image_index"
                            else f"{len(idx)} rows of float embeddings", found=f"{a.dtype} array {a.shape}")
    pos = {int(v): i for i, v in enumerate(idx)}
    missing = [it.image_index for it in index.items if it.image_index not in pos]
    if missing:
        raise DataError(f, key="image_index", expected="every item of index.json", found=f"missing {missing[:5]}")
    rows = np.array([pos[it.image_index] for it in index.items])
    out = top1_retrieval(b[rows], t[rows], cfg.retrieval)
    result = {}
    for d, r in out.items():
        result[names[d]] = r
        res.protocol[names[d]] = r.protocol()
    return result


_SHORT = {"mean": "mean", "best_of_k": "best-of-k", "best_set": "best set"}
_ROW_KEYS = ("folder", "method", "images", "n_items", "k", "label_n", "protocol")


def _set_label(kind: str, agg: str, k: int) -> str:
    """Short row label; the protocol's "general" entry explains the aggregates."""
    if kind in ("samples", "blend"):
        name = "samples" if kind == "samples" else "blend .75/.25"
        return name if k == 1 else f"{name} {_SHORT[agg]} (k={k})"
    return kind


def _assemble(index: ReconIndex, sets, retrieval, res: EvaluationResult, label_n: int) -> None:
    folder = str(index.path)
    n = len(index.items)
    blocks = []
    for kind, per_set in sets.items():
        k = len(per_set)
        values = {m: np.stack([s[m] for s in per_set], axis=1) for m in per_set[0]}  # (n_items, k)
        for agg in (["mean", "best_of_k", "best_set"] if k > 1 else ["mean"]):
            row = {"folder": folder, "method": index.label, "images": _set_label(kind, agg, k), "n_items": n, "k": k,
                   "label_n": label_n or None}
            for m, v in values.items():
                res.higher_is_better[m] = aggregate.higher_is_better(m)
                row[m] = aggregate.summarise(v, res.higher_is_better[m])[agg]
            if kind in ("samples", "blend") and agg == "mean":
                for name, r in retrieval.items():
                    row[name] = r.mean
                    row[f"{name} 95% CI"] = [r.ci_low, r.ci_high]
                    res.higher_is_better[name] = True
            res.rows.append(row)
            res.columns.extend(m for m in row if m not in _ROW_KEYS and m not in res.columns)
        # per-trial block, sample-major: set s, then item i
        sample = np.repeat(np.arange(k), n) if kind in ("samples", "blend") else np.full(k * n, -1)
        block = {"folder": np.full(k * n, folder), "method": np.full(k * n, index.label),
                 "images": np.full(k * n, kind),
                 "image_index": np.tile([it.image_index for it in index.items], k).astype(np.int64),
                 "sample": sample.astype(np.int64),
                 "trials": np.tile([";".join(map(str, it.trials)) for it in index.items], k),
                 "category": np.tile([it.category or "" for it in index.items], k)}
        block.update({m: v.T.reshape(-1) for m, v in values.items()})
        blocks.append(block)
    res.per_trial = concat_tables(blocks)
