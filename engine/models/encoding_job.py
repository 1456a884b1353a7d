"""The encoding job (``neurolens encode``): embed the stimuli, fit per-voxel encoding maps, check them against a
simulated subject's ground truth, write the run folder (see ``engine.models.encoding``)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from engine.errors import DataError
from engine.events import EtaClock, Finished, Log, Metric, Progress, Started, ensure_token
from engine.models.encoding import fit_encoding
from engine.models.encoding_ground_truth import ground_truth_checks


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
