"""``EvaluationConfig``: what ``evaluate_folder`` computes and how."""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Config
from engine.metrics.retrieval import RetrievalConfig
from engine.metrics.semantic import NWayConfig

BLEND_WEIGHT = 0.75  # published "enhanced" numbers: 0.75·refined + 0.25·blurry


@dataclass(frozen=True)
class EvaluationConfig(Config):
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
