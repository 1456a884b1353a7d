"""Evaluate a reconstruction folder: every metric of the field, one table row per image set and aggregate.

Input: a folder written by ``neurolens reconstruct`` (``index.json``, schema ``neurolens-recon/1``, PNGs, optional
``embeddings.npz`` with ``image_index``, ``brain`` and ``target``). Output: an ``EvaluationResult`` with

- ``rows``: one per image set and aggregate: "samples" (mean over k, best-of-k per item, best sample set), "blurry"
  (the low-level branch's images, one row), "blend" (0.75·sample + 0.25·blurry, when asked), "ground truth" (only the
  encoding-model ceiling of the brain correlation);
- ``per_trial``: a column table (dict of equal-length arrays), one entry per item × sample × image set, with every
  per-item value (retrieval is per method and has no per-item value);
- ``unavailable``: metric → reason, for every metric that could not be computed (no torchvision, no classifier, no
  encoding model, no embeddings.npz...);
- ``protocol``: metric → the exact protocol followed (resolutions, n, trials, directions, blend).

The GUI calls ``evaluate_folder`` for its tables and ``per_trial_metrics`` for a single clicked trial.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import numpy as np

from engine.errors import DataError, NeuroLensError
from engine.metrics import aggregate, brain, identification, lowlevel, semantic
from engine.metrics.features import (TORCHVISION_ROWS, FeatureExtractor, FeatureUnavailable, ImageClassifier,
                                     load_classifier, load_feature_extractor, torchvision_unavailable_reason)
from engine.metrics.retrieval import DIRECTION_LABELS, RetrievalConfig, top1_retrieval
from engine.metrics.pixel_identification import NSD_PROTOCOL, NativeProtocol
from engine.metrics.semantic import NWayConfig

SCHEMA = "neurolens-recon/1"
BLEND_WEIGHT = 0.75  # published "enhanced" numbers: 0.75·refined + 0.25·blurry

# base metric name -> higher is better
LOWLEVEL_METRICS = {"PixCorr": True, "SSIM": True, "MSE": False, "PSNR": True}


@dataclass(frozen=True)
class EvaluationConfig:
    """What to compute and how.

    Attributes
    ----------
    n_way : NWayConfig
        Classifier-based n-way (MinD-Vis code: n = 50, 1000 trials).
    label_n_way : int
        n of the label-based n-way (clamped to the number of categories, and said so).
    retrieval : RetrievalConfig
        Pool 300, 30 draws (MindEyeV2).
    blend : bool
        Also score 0.75·sample + 0.25·blurry (the published "enhanced" setting), when blurry images exist.
    device : str or None
        Torch device of the feature extractors (default: CUDA when present).
    """

    n_way: NWayConfig = NWayConfig()
    label_n_way: int = 50
    retrieval: RetrievalConfig = RetrievalConfig()
    blend: bool = False
    device: str | None = None


@dataclass
class EvaluationResult:
    """Rows, per-trial table, unavailable metrics with reasons, and the protocol of each metric."""

    rows: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    per_trial: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, str] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def merge(self, other: "EvaluationResult") -> "EvaluationResult":
        """Concatenate two results (several folders in one table)."""
        cols = self.columns + [c for c in other.columns if c not in self.columns]
        blocks = [t for t in (self.per_trial, other.per_trial) if t]
        return EvaluationResult(rows=self.rows + other.rows, columns=cols, per_trial=concat_tables(blocks),
                                unavailable={**self.unavailable, **other.unavailable},
                                protocol={**self.protocol, **other.protocol},
                                higher_is_better={**self.higher_is_better, **other.higher_is_better})


# --- reading a reconstruction folder --------------------------------------------------------------------------------
@dataclass(frozen=True)
class ReconItem:
    image_index: int
    trials: tuple[int, ...]
    category: str | None
    ground_truth: str
    blurry: str | None
    samples: tuple[str, ...]


@dataclass(frozen=True)
class ReconIndex:
    """The parsed ``index.json`` of a reconstruction folder."""

    path: Path
    subject: str | None
    run: str | None
    split: str
    method: str
    settings: dict
    embedder: str | None
    items: tuple[ReconItem, ...]

    @property
    def k(self) -> int:
        return len(self.items[0].samples) if self.items else 0

    @property
    def label(self) -> str:
        s = self.settings
        keys = [("generator", "gen"), ("guidance", "cfg"), ("steps", "steps"), ("sampler", "sampler"),
                ("img2img_strength", "img2img"), ("seed", "seed")]
        extra = ", ".join(f"{short} {s[k]}" for k, short in keys if s.get(k) is not None)
        return f"{self.method} [{extra}]" if extra else self.method


def read_index(path) -> ReconIndex:
    """Read and check ``path/index.json``; ``DataError`` naming the key on any schema problem."""
    folder = Path(path)
    f = folder / "index.json"
    if not f.is_file():
        raise DataError(folder, "not a reconstruction folder", expected="index.json written by neurolens reconstruct",
                        found="no index.json")
    from engine.jsonfile import field, read_object

    d = read_object(f, DataError)
    if d.get("schema") != SCHEMA:
        raise DataError(f, key="schema", expected=repr(SCHEMA), found=repr(d.get("schema"))[:60])
    for key, types in (("subject", (str, type(None))), ("run", (str, type(None))), ("split", str), ("method", str),
                       ("settings", (dict, type(None))), ("embedder", (str, type(None))), ("items", list)):
        field(d, key, types, f, default=None, error=DataError)
    items = []
    for n, it in enumerate(d.get("items") or []):
        try:
            if not isinstance(it, dict):
                raise TypeError(f"an item is a {type(it).__name__}")
            items.append(ReconItem(image_index=int(it["image_index"]), trials=tuple(int(t) for t in it["trials"]),
                                   category=it.get("category"), ground_truth=str(it["ground_truth"]),
                                   blurry=it.get("blurry"), samples=tuple(str(s) for s in it["samples"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f, key=f"items[{n}]", expected="image_index, trials, ground_truth, samples",
                            found=f"{type(exc).__name__}: {exc}") from exc
    if len(items) < 2:
        raise DataError(f, key="items", expected="at least 2 test items", found=f"{len(items)}")
    ks = {len(it.samples) for it in items}
    if len(ks) != 1 or 0 in ks:
        raise DataError(f, key="items[].samples", expected="the same number (>= 1) of samples for every item",
                        found=f"sample counts {sorted(ks)}")
    blurry = {it.blurry is None for it in items}
    if len(blurry) != 1:
        raise DataError(f, key="items[].blurry", expected="a blurry image for every item or for none",
                        found="some items with and some without")
    def resolve(p):  # paths in the index may be relative to the reconstruction folder
        if p is None or Path(p).is_absolute() or not (folder / p).exists():
            return p
        return str(folder / p)

    return ReconIndex(path=folder, subject=resolve(d.get("subject")), run=resolve(d.get("run")),
                      split=str(d.get("split", "test")),
                      method=str(d.get("method", folder.name)), settings=dict(d.get("settings") or {}),
                      embedder=d.get("embedder"), items=tuple(items))


def load_png(folder: Path, rel: str) -> np.ndarray:
    """An RGB image of the folder as uint8 ``(H, W, 3)``."""
    from engine.data.readers.checks import read_image_rgb

    return read_image_rgb(folder / rel)  # pixel count checked before decoding (decompression bombs)


def _load_set(folder: Path, rels: Sequence[str]) -> np.ndarray:
    """Images of one set, prepared at 256×256 float32 (the protocol's first step)."""
    out = np.empty((len(rels), lowlevel.EVAL_SIZE, lowlevel.EVAL_SIZE, 3), np.float32)
    for i, r in enumerate(rels):
        out[i] = lowlevel.prepare_images(load_png(folder, r)[None])[0]
    return out


# --- the per-folder context: everything computed once from the ground truth ----------------------------------------
@dataclass
class _Context:
    extractors: list[FeatureExtractor]
    gt_features: dict[str, np.ndarray]
    classifier: ImageClassifier | None
    classifier_target: np.ndarray | None
    label_target: np.ndarray | None
    label_classes: list[str]
    label_n: int
    encoder: object | None  # callable images -> (n, n_voxels) predicted voxels
    measured: np.ndarray | None
    rois: dict[str, np.ndarray]
    config: EvaluationConfig


# The label-based n-way column keeps one name whatever n the items allow (n = min(asked, categories among the items),
# per folder: the row's ``label_n``), so tables of different image selections line up.
LABEL_N_WAY = "n-way labels"


def _two_way_name(ext: FeatureExtractor) -> str:
    return f"2-way {ext.name}"


def _distance_name(ext: FeatureExtractor) -> str:
    return f"corr-dist {ext.name}"


def _score_set(gt: np.ndarray, recon: np.ndarray, ctx: _Context) -> dict[str, np.ndarray]:
    """Every per-item metric of one image set (one sample of each item): name -> (n_items,)."""
    out = lowlevel.pixcorr_ssim(gt, recon)
    out["MSE"] = lowlevel.mse(gt, recon)
    out["PSNR"] = lowlevel.psnr(gt, recon)
    feats = {}
    for ext in ctx.extractors:
        f = ext(recon)
        feats[ext.name] = f
        out[_two_way_name(ext)] = identification.two_way_scores(ctx.gt_features[ext.name], f)
        out[_distance_name(ext)] = identification.correlation_distance(ctx.gt_features[ext.name], f)
        if ctx.label_target is not None:
            scores = semantic.centroid_scores(f, ctx.gt_features[ext.name], ctx.label_target, len(ctx.label_classes))
            cfg = replace(ctx.config.n_way, n=ctx.label_n)
            out[f"{LABEL_N_WAY} {ext.name}"] = semantic.n_way_top1(scores, ctx.label_target, cfg)
    if ctx.classifier is not None:
        p = semantic.softmax(ctx.classifier.logits(recon))
        out[f"{ctx.config.n_way.n}-way top-1"] = semantic.n_way_top1(p, ctx.classifier_target, ctx.config.n_way)
    if ctx.encoder is not None:
        pred = ctx.encoder(recon)
        for roi, r in brain.roi_correlation(pred, ctx.measured, ctx.rois).items():
            out[f"brain r {roi}"] = r
    return out


def _higher_is_better(name: str) -> bool:
    if name in LOWLEVEL_METRICS:
        return LOWLEVEL_METRICS[name]
    return not name.startswith("corr-dist")


# --- public API ------------------------------------------------------------------------------------------------------
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
        ``engine.metrics.features``). Default: the folder's embedder (``"demo"`` or its CLIP folder).
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
    cfg = config
    res = EvaluationResult()
    n = len(index.items)
    gt = _load_set(index.path, [it.ground_truth for it in index.items])

    # 1. feature extractors (+ the published torchvision rows, unavailable unless a local equivalent was given)
    specs = list(features) if features is not None else [index.embedder or "demo"]
    extractors: list[FeatureExtractor] = []
    for spec in specs:
        try:
            ext = spec if isinstance(spec, FeatureExtractor) else load_feature_extractor(str(spec), device=cfg.device)
        except FeatureUnavailable as exc:
            if str(spec).lower() not in TORCHVISION_ROWS:  # those are listed below under their published name
                res.unavailable[f"2-way / corr-dist {spec}"] = str(exc)
            continue
        extractors.append(ext)
    filled = {e.row for e in extractors}
    for row in TORCHVISION_ROWS:
        if row not in filled:
            label, kind, _ = TORCHVISION_ROWS[row]
            res.unavailable[f"{label} ({kind})"] = torchvision_unavailable_reason(row)
    if "clip" not in filled:
        res.unavailable["CLIP (2-way)"] = ("needs a local CLIP folder (OpenAI ViT-L/14 for the published row): pass "
                                           "--features PATH_TO_CLIP")
    gt_features = {e.name: e(gt) for e in extractors}

    # 2. semantic targets
    clf, clf_target = _classifier(classifier, gt, cfg, res)
    label_target, label_classes, label_n = _label_targets(index, extractors, cfg, res)

    # 3. encoding model and measured voxels
    encoder, measured, rois = _brain_context(index, subject, encoding, encoding_features, res)

    ctx = _Context(extractors=extractors, gt_features=gt_features, classifier=clf, classifier_target=clf_target,
                   label_target=label_target, label_classes=label_classes, label_n=label_n, encoder=encoder,
                   measured=measured, rois=rois, config=cfg)

    # 4. score every image set (small stimuli: PixCorr/SSIM at their own size, plus pixel identification)
    native = NativeProtocol.for_index(index.path, [it.ground_truth for it in index.items], load_png)
    sets: dict[str, list[dict[str, np.ndarray]]] = {"samples": []}
    blurry = None
    if index.items[0].blurry is not None:
        blurry = _load_set(index.path, [it.blurry for it in index.items])
    for s in range(index.k):
        if cancel is not None:
            cancel.raise_if_set()
        files = [it.samples[s] for it in index.items]
        recon = _load_set(index.path, files)
        sets["samples"].append(_score_set(gt, recon, ctx) | (native.score(index.path, files, load_png) if native else {}))
        if cfg.blend and blurry is not None:
            mix = BLEND_WEIGHT * recon + (1 - BLEND_WEIGHT) * blurry
            sets.setdefault("blend", []).append(_score_set(gt, mix, ctx) | (native.score_array(mix) if native else {}))
    if blurry is not None:
        files = [it.blurry for it in index.items]
        sets["blurry"] = [_score_set(gt, blurry, ctx) | (native.score(index.path, files, load_png) if native else {})]
    elif cfg.blend:
        res.unavailable["blend"] = "this reconstruction folder has no blurry images to blend with"
    if encoder is not None:
        sets["ground truth"] = [{f"brain r {roi}": r for roi, r in
                                 brain.roi_correlation(encoder(gt), measured, rois).items()}]

    # 5. retrieval (per method, from embeddings.npz)
    retrieval = _retrieval(index, cfg, res)

    # 6. assemble rows and the per-trial table
    _assemble(index, sets, retrieval, res, label_n)
    _protocols(index, ctx, cfg, res, n)
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
                loaded.append(spec if isinstance(spec, FeatureExtractor) else load_feature_extractor(spec, device=device))
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


def per_trial_metrics(gt_image, recon_images, *, extractors: Sequence[FeatureExtractor] = ()) -> dict[str, np.ndarray]:
    """Metrics of one trial (the GUI's clicked trial): low-level and feature correlation distance per sample.

    Parameters
    ----------
    gt_image : (H, W, 3) uint8 or float
    recon_images : (k, H, W, 3) or (H, W, 3)
        The trial's samples (any size; each is prepared at 256×256 like the full evaluation).
    extractors : FeatureExtractor instances, optional
        Adds ``corr-dist NAME`` per extractor. Two-way identification and retrieval need the whole test set: take them
        from ``evaluate_folder(...).per_trial``.

    Returns
    -------
    dict name -> (k,) float64
    """
    rec = np.asarray(recon_images)
    rec = rec[None] if rec.ndim == 3 else rec
    g = lowlevel.prepare_images(np.asarray(gt_image)[None])
    r = lowlevel.prepare_images(rec)
    gk = np.repeat(g, len(r), axis=0)
    out = lowlevel.pixcorr_ssim(gk, r)
    out["MSE"] = lowlevel.mse(gk, r)
    out["PSNR"] = lowlevel.psnr(gk, r)
    for ext in extractors:
        out[f"corr-dist {ext.name}"] = identification.correlation_distance(np.repeat(ext(g), len(r), axis=0), ext(r))
    return out


# --- helpers ---------------------------------------------------------------------------------------------------------
def _classifier(classifier, gt, cfg: EvaluationConfig, res: EvaluationResult):
    name = f"{cfg.n_way.n}-way top-1"
    if classifier is None:
        res.unavailable[name] = ("no image classifier given (--classifier PATH to a local transformers "
                                 "image-classification folder; MinD-Vis uses torchvision ViT-H/14, not available here; "
                                 "the demo embedder ships no classifier head)")
        return None, None
    try:
        clf = classifier if isinstance(classifier, ImageClassifier) else load_classifier(classifier, device=cfg.device)
    except FeatureUnavailable as exc:
        res.unavailable[name] = str(exc)
        return None, None
    if len(clf.labels) < cfg.n_way.n:
        res.unavailable[name] = f"classifier {clf.spec} has {len(clf.labels)} classes, fewer than n = {cfg.n_way.n}"
        return None, None
    res.protocol[name] = (f"MinD-Vis n-way top-1: reference class = classifier argmax on the ground truth, softmax on "
                          f"the reconstruction, n = {cfg.n_way.n}, {cfg.n_way.trials} trials per item (seed "
                          f"{cfg.n_way.seed}), 256×256 images; {clf.protocol}; chance {1 / cfg.n_way.n:.4f}")
    return clf, np.argmax(clf.logits(gt), axis=1)


def _label_targets(index: ReconIndex, extractors, cfg: EvaluationConfig, res: EvaluationResult):
    cats = [it.category for it in index.items]
    if any(c is None for c in cats):
        res.unavailable["n-way labels"] = "the reconstruction index has no category label for every item"
        return None, [], 0
    classes = sorted(set(cats))
    if len(classes) < 2:
        res.unavailable["n-way labels"] = f"only {len(classes)} category among the test items; n-way needs >= 2"
        return None, [], 0
    if not extractors:
        res.unavailable["n-way labels"] = "needs a feature extractor (none available)"
        return None, [], 0
    n = min(cfg.label_n_way, len(classes))
    target = np.array([classes.index(c) for c in cats])
    for ext in extractors:
        res.protocol[f"{LABEL_N_WAY} {ext.name}"] = (
            f"label-based n-way top-1: reference = the dataset category of the test image; scores = cosine of the "
            f"reconstruction's {ext.name} features to each category centroid (mean {ext.name} feature of the "
            f"ground-truth test images of that category, the item's own image included); n = {n} "
            f"(asked {cfg.label_n_way}, {len(classes)} categories among the test items), {cfg.n_way.trials} trials "
            f"per item (seed {cfg.n_way.seed}); chance {1 / n:.4f}")
    return target, classes, n


def _brain_context(index: ReconIndex, subject, encoding, encoding_features, res: EvaluationResult):
    """(encoder, measured voxels, rois) or (None, None, {}) with the reason recorded."""
    key = "brain r"
    run = encoding if encoding is not None else index.run
    try:
        from engine.models.encoding import EncodingMaps, predict_voxels, session_zscore
    except ImportError as exc:
        res.unavailable[key] = f"unavailable: no encoding model (engine.models.encoding cannot be imported: {exc})"
        return None, None, {}
    if isinstance(run, EncodingMaps):
        maps = run
    elif run is None:
        res.unavailable[key] = "unavailable: no encoding model (the index names no run folder; pass --encoding RUN_DIR)"
        return None, None, {}
    else:
        try:
            maps = EncodingMaps.load(run)
        except (FileNotFoundError, NeuroLensError, OSError, ValueError) as exc:
            res.unavailable[key] = f"unavailable: no encoding model in {run} ({exc})"
            return None, None, {}
    if maps.model is None:
        res.unavailable[key] = f"unavailable: no encoding model in {run} (encoding maps without a fitted model)"
        return None, None, {}
    subj = subject if subject is not None else index.subject
    if subj is None:
        res.unavailable[key] = "no subject for the measured test voxels (pass --subject PATH)"
        return None, None, {}
    if isinstance(subj, (str, Path)):
        from engine.data import open_subject

        try:
            subj = open_subject(subj)
        except NeuroLensError as exc:
            res.unavailable[key] = f"cannot open the subject for the measured voxels: {exc}"
            return None, None, {}
    # Measured voxels on the encoding model's scale: z-scored per voxel within session, then averaged over repeats.
    trial_sets = [np.asarray(it.trials, np.int64) for it in index.items]
    sessions = np.asarray(subj.trials.session)
    wanted = np.unique(sessions[np.concatenate(trial_sets)])
    rows = np.flatnonzero(np.isin(sessions, wanted))
    z = session_zscore(np.asarray(subj.betas[rows]), sessions[rows])
    where = {int(t): i for i, t in enumerate(rows)}
    measured = brain.repeat_averaged_voxels(z, [[where[int(t)] for t in tr] for tr in trial_sets])
    coef = getattr(getattr(maps.model, "ridge", None), "coef_", None)
    if coef is not None and coef.shape[1] != measured.shape[1]:
        res.unavailable[key] = f"the encoding model predicts {coef.shape[1]} voxels, the subject has {measured.shape[1]}"
        return None, None, {}
    spec = maps.meta.get("embedder") or index.embedder or "demo"
    if encoding_features is not None:
        def embed(images):
            return encoding_features(images)
        spec = encoding_features.name
    else:
        try:
            from engine.models.embedders import load_image_embedder

            embedder = load_image_embedder(spec)
        except (ImportError, NeuroLensError, OSError) as exc:
            res.unavailable[key] = f"cannot load the embedder {spec!r} the encoding model reads ({exc})"
            return None, None, {}
        from engine.metrics.features import to_uint8

        tokens = maps.model.features == "tokens"

        def embed(images):
            return embedder.embed(to_uint8(images), tokens=tokens)

    def encoder(images):
        return np.asarray(predict_voxels(maps, embed(images)), np.float64)

    res.protocol[key] = ("brain correlation: the encoding model predicts voxels from each image's "
                         f"{spec} embedding; per item, Pearson r over the ROI's voxels with the measured voxels "
                         "(z-scored per voxel within session, as the encoding model was fitted) averaged over the "
                         "item's repeats; mean over items. 'ground truth' row = the same from the ground-truth images "
                         "(encoding ceiling)")
    return encoder, measured, dict(subj.rois)


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
                res.higher_is_better[m] = _higher_is_better(m)
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
        block = {"folder": np.full(k * n, folder), "method": np.full(k * n, index.label), "images": np.full(k * n, kind),
                 "image_index": np.tile([it.image_index for it in index.items], k).astype(np.int64),
                 "sample": sample.astype(np.int64),
                 "trials": np.tile([";".join(map(str, it.trials)) for it in index.items], k),
                 "category": np.tile([it.category or "" for it in index.items], k)}
        block.update({m: v.T.reshape(-1) for m, v in values.items()})
        blocks.append(block)
    res.per_trial = concat_tables(blocks)


_ROW_KEYS = ("folder", "method", "images", "n_items", "k", "label_n", "protocol")


def concat_tables(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate column tables; a column missing from a block is NaN (numbers) or "" (text) there."""
    keys: list[str] = []
    for b in blocks:
        keys.extend(k for k in b if k not in keys)
    out = {}
    for key in keys:
        parts = []
        text = any(b[key].dtype.kind in "USO" for b in blocks if key in b)
        for b in blocks:
            n = len(next(iter(b.values())))
            parts.append(b[key].astype(str) if key in b and text else b[key] if key in b
                         else np.full(n, "" if text else np.nan))
        out[key] = np.concatenate(parts)
    return out


def _protocols(index: ReconIndex, ctx: _Context, cfg: EvaluationConfig, res: EvaluationResult, n: int) -> None:
    s = index.settings
    res.protocol["general"] = (
        f"{n} test items of {index.path.name} (split {index.split}); repeat mode {s.get('repeat_mode', 'unknown')}; "
        f"{index.k} sample(s) per item: rows 'mean' = mean over items and samples, 'best-of-k' = each item's best "
        f"sample (oracle choice) averaged, 'best set' = the best sample set's mean (MinD-Vis max); 'blend .75/.25' = "
        f"0.75·sample + 0.25·blurry; every image resized to 256×256 (antialiased bilinear) first; "
        f"blend {'0.75·sample + 0.25·blurry also scored' if cfg.blend else 'not applied (raw samples)'}")
    res.protocol["PixCorr"] = "Pearson r of all RGB values after bilinear resize 256 → 425 (MindEyeV2); mean over items"
    res.protocol["SSIM"] = ("grey (rgb2gray) SSIM at 425×425 after bilinear resize, Gaussian window sigma 1.5, "
                            "population covariance, data range 1 (MindEyeV2 / skimage); mean over items")
    res.protocol["MSE"] = "mean squared error of RGB values in [0, 1] at 256×256"
    res.protocol["PSNR"] = "10·log10(1/MSE) in dB at 256×256, data range 1"
    for ext in ctx.extractors:
        res.protocol[_two_way_name(ext)] = (f"two-way identification, exhaustive over all {n - 1} other test images "
                                            f"(Pearson of flattened features); chance 0.5; {ext.protocol}")
        res.protocol[_distance_name(ext)] = (f"correlation distance 1 − Pearson(gt_i, recon_i), lower is better; "
                                             f"{ext.protocol}")
