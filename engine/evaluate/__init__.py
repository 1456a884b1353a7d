"""Evaluate a reconstruction folder: every metric of the field, one table row per image set and aggregate.

Input: a folder written by ``neurolens reconstruct`` (``index.json``, schema ``neurolens-recon/1``, read by
``engine.recon.index.read_index``; PNGs; optional ``embeddings.npz`` with ``image_index``, ``brain`` and ``target``).
Output: an ``EvaluationResult`` with

- ``rows``: one per image set and aggregate: "samples" (mean over k, best-of-k per item, best sample set), "blurry"
  (the low-level branch's images, one row), "blend" (0.75·sample + 0.25·blurry, when asked), "ground truth" (only the
  encoding-model ceiling of the brain correlation);
- ``per_trial``: a column table (dict of equal-length arrays), one entry per item × sample × image set, with every
  per-item value (retrieval is per method and has no per-item value);
- ``unavailable``: metric → reason, for every metric that could not be computed (no torchvision, no classifier, no
  encoding model, no embeddings.npz...);
- ``protocol``: metric → the exact protocol followed (resolutions, n, trials, directions, blend).

This package sits above ``recon`` and below ``cli``: it opens subjects, loads feature extractors and encoding models,
and calls the pure functions of ``engine.metrics``. The GUI calls ``evaluate_folder`` for its tables and
``engine.metrics.trial.per_trial_metrics`` for a single clicked trial.

Modules: ``config`` (``EvaluationConfig``), ``result`` (``EvaluationResult``), ``context`` (what is computed once
from the ground truth: features, classifier, labels), ``brain_context`` (encoding model and measured voxels),
``scoring`` (one image set), ``folder`` (``evaluate_folder``, rows), ``protocols`` (the text of each protocol),
``table`` (terminal table, JSON, CSV).
"""

from engine.evaluate.config import EvaluationConfig
from engine.evaluate.folder import evaluate_folder, evaluate_folders
from engine.evaluate.result import EvaluationResult, concat_tables
from engine.evaluate.scoring import load_png

__all__ = ["EvaluationConfig", "EvaluationResult", "concat_tables", "evaluate_folder", "evaluate_folders",
           "load_png"]
