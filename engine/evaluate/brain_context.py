"""The brain correlation's context: the encoding model (images → predicted voxels) and the measured test voxels.

Each part that is missing (no encoding model, no subject, another voxel count, no embedder) makes the metric
unavailable with its reason, never an error: the other metrics of the folder are still computed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import NeuroLensError
from engine.evaluate.result import EvaluationResult
from engine.metrics import brain
from engine.recon.index import ReconIndex

KEY = "brain r"
PROTOCOL = ("brain correlation: the encoding model predicts voxels from each image's {spec} embedding; per item, "
            "Pearson r over the ROI's voxels with the measured voxels (z-scored per voxel within session, as the "
            "encoding model was fitted) averaged over the item's repeats; mean over items. 'ground truth' row = the "
            "same from the ground-truth images (encoding ceiling)")


class _Unavailable(Exception):
    """The brain correlation cannot be computed: the message is the reason shown in the table."""


def brain_context(index: ReconIndex, subject, encoding, encoding_features, res: EvaluationResult):
    """(encoder, measured voxels, rois) or (None, None, {}) with the reason recorded in ``res.unavailable``."""
    try:
        maps = _encoding_maps(index, encoding)
        subj = _subject(index, subject)
        measured = _measured_voxels(index, subj)
        coef = getattr(getattr(maps.model, "ridge", None), "coef_", None)
        if coef is not None and coef.shape[1] != measured.shape[1]:
            raise _Unavailable(f"the encoding model predicts {coef.shape[1]} voxels, the subject has "
                               f"{measured.shape[1]}")
        embed, spec = _embedding(maps, index, encoding_features)
    except _Unavailable as exc:
        res.unavailable[KEY] = str(exc)
        return None, None, {}
    from engine.models.encoding import predict_voxels

    def encoder(images):
        return np.asarray(predict_voxels(maps, embed(images)), np.float64)

    res.protocol[KEY] = PROTOCOL.format(spec=spec)
    return encoder, measured, dict(subj.rois)


def _encoding_maps(index: ReconIndex, encoding):
    run = encoding if encoding is not None else index.run
    try:
        from engine.models.encoding import EncodingMaps
    except ImportError as exc:
        raise _Unavailable("unavailable: no encoding model (engine.models.encoding cannot be imported: "
                           f"{exc})") from None
    if isinstance(run, EncodingMaps):
        maps = run
    elif run is None:
        raise _Unavailable("unavailable: no encoding model (the index names no run folder; pass --encoding RUN_DIR)")
    else:
        try:
            maps = EncodingMaps.load(run)
        except (FileNotFoundError, NeuroLensError, OSError, ValueError) as exc:
            raise _Unavailable(f"unavailable: no encoding model in {run} ({exc})") from None
    if maps.model is None:
        raise _Unavailable(f"unavailable: no encoding model in {run} (encoding maps without a fitted model)")
    return maps


def _subject(index: ReconIndex, subject):
    subj = subject if subject is not None else index.subject
    if subj is None:
        raise _Unavailable("no subject for the measured test voxels (pass --subject PATH)")
    if isinstance(subj, (str, Path)):
        from engine.data import open_subject

        try:
            subj = open_subject(subj)
        except NeuroLensError as exc:
            raise _Unavailable(f"cannot open the subject for the measured voxels: {exc}") from None
    return subj


def _measured_voxels(index: ReconIndex, subj) -> np.ndarray:
    """Measured voxels on the encoding model's scale: z-scored per voxel within session, then averaged over repeats."""
    from engine.models.encoding import session_zscore

    trial_sets = [np.asarray(it.trials, np.int64) for it in index.items]
    sessions = np.asarray(subj.trials.session)
    wanted = np.unique(sessions[np.concatenate(trial_sets)])
    rows = np.flatnonzero(np.isin(sessions, wanted))
    z = session_zscore(np.asarray(subj.betas[rows]), sessions[rows])
    where = {int(t): i for i, t in enumerate(rows)}
    return brain.repeat_averaged_voxels(z, [[where[int(t)] for t in tr] for tr in trial_sets])


def _embedding(maps, index: ReconIndex, encoding_features):
    """(images → the features the encoding model reads, their name)."""
    if encoding_features is not None:
        def embed(images):
            return encoding_features(images)
        return embed, encoding_features.name
    spec = maps.meta.get("embedder") or index.embedder or "demo"
    try:
        from engine.models.embedders import load_image_embedder

        embedder = load_image_embedder(spec)
    except (ImportError, NeuroLensError, OSError) as exc:
        raise _Unavailable(f"cannot load the embedder {spec!r} the encoding model reads ({exc})") from None
    from engine.models.embedders.features import to_uint8

    tokens = maps.model.features == "tokens"

    def embed(images):
        return embedder.embed(to_uint8(images), tokens=tokens)
    return embed, spec
