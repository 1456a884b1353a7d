"""The per-folder context of an evaluation: everything computed once from the ground truth (feature extractors and
their ground-truth features, the classifier's reference classes, the category labels, the encoding model)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

from engine.evaluate.brain_context import brain_context
from engine.evaluate.config import EvaluationConfig
from engine.evaluate.result import EvaluationResult
from engine.models.embedders.features import (TORCHVISION_ROWS, FeatureExtractor, FeatureUnavailable,
                                              ImageClassifier, load_classifier, load_feature_extractor,
                                              torchvision_unavailable_reason)
from engine.recon.index import ReconIndex

# The label-based n-way column keeps one name whatever n the items allow (n = min(asked, categories among the items),
# per folder: the row's ``label_n``), so tables of different image selections line up.
LABEL_N_WAY = "n-way labels"


def two_way_name(ext: FeatureExtractor) -> str:
    return f"2-way {ext.name}"


def distance_name(ext: FeatureExtractor) -> str:
    return f"corr-dist {ext.name}"


@dataclass
class Context:
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


def build_context(index: ReconIndex, gt: np.ndarray, features, subject, classifier, encoding, encoding_features,
                  cfg: EvaluationConfig, res: EvaluationResult) -> Context:
    """Steps 1-3 of ``evaluate_folder``: features, semantic targets, encoding model and measured voxels."""
    # 1. feature extractors (+ the published torchvision rows, unavailable unless a local equivalent was given)
    extractors = _extractors(list(features) if features is not None else [index.embedder or "demo"], cfg, res)
    gt_features = {e.name: e(gt) for e in extractors}
    # 2. semantic targets
    clf, clf_target = _classifier(classifier, gt, cfg, res)
    label_target, label_classes, label_n = _label_targets(index, extractors, cfg, res)
    # 3. encoding model and measured voxels
    encoder, measured, rois = brain_context(index, subject, encoding, encoding_features, res)
    return Context(extractors=extractors, gt_features=gt_features, classifier=clf, classifier_target=clf_target,
                   label_target=label_target, label_classes=label_classes, label_n=label_n, encoder=encoder,
                   measured=measured, rois=rois, config=cfg)


def _extractors(specs: Sequence[str | FeatureExtractor], cfg: EvaluationConfig,
                res: EvaluationResult) -> list[FeatureExtractor]:
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
    return extractors


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
