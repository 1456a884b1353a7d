"""A run's ``provenance.json``: what it was trained with, from which data, on what, in which sessions."""

from __future__ import annotations

import contextlib
import platform
import time
from pathlib import Path

import numpy as np
import torch

from engine._version import __version__
from engine.errors import DataError
from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData
from engine.train.device import device_name
from engine.train.run import Run
from engine.train.targets import array_digest, subject_data_hash


def write_provenance(run: Run, config: TrainConfig, subject, data: PreparedData, device, world_size: int, *,
                     resumed: bool) -> None:
    """``provenance.json``: packages, device, the subject and a hash of its data, the targets, the trials used, and one
    entry per session (a resumed run appends one; its subject's data must not have changed)."""
    import safetensors

    prov_path = run.path / "provenance.json"
    sessions = []
    if prov_path.exists():
        with contextlib.suppress(Exception):
            sessions = run.provenance().get("sessions", [])
    data_hash = subject_data_hash(subject)
    if resumed and prov_path.exists():
        old = run.provenance()
        if old.get("data_hash") not in (None, data_hash):
            raise DataError(subject.path or subject.name, "the subject's data changed since the run started",
                            key="betas", expected=old.get("data_hash"), found=data_hash)
    sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "resumed": resumed,
                     "device": str(device), "device_name": device_name(device),
                     "world_size": world_size})
    packages = {"neurolens": __version__, "python": platform.python_version(), "torch": torch.__version__,
                "numpy": np.__version__, "safetensors": getattr(safetensors, "__version__", "?")}
    with contextlib.suppress(ImportError):
        import accelerate

        packages["accelerate"] = accelerate.__version__
    run.write_provenance({
        "config_hash": config.config_hash(),
        "seed": config.seed,
        "device": {"id": str(device), "name": device_name(device), "world_size": world_size},
        "packages": packages,
        "platform": platform.platform(),
        "subject": {"path": None if subject.path is None else str(Path(subject.path).resolve()),
                    "name": subject.name, "format": subject.format, "n_trials": subject.n_trials,
                    "n_voxels": subject.n_voxels, "simulation": subject.is_simulation},
        "data_hash": data_hash,
        "targets": {"embedder": config.data.embedder, "kind": config.data.target,
                    "shape": list(data.target_shape), "hash": array_digest(data.targets)},
        **({"caption_targets": {"embedder": config.data.caption_embedder,
                                "shape": list(data.caption_targets.shape[1:]),
                                "hash": array_digest(data.caption_targets)}}
           if data.caption_targets is not None else {}),
        "voxels_used": int(data.n_voxels),
        "trials": {"train": data.train_rows.tolist(), "test": data.test_rows.tolist()},
        # whether the test trials' betas (not their images) entered MBM pre-training: a reviewer's question
        "pretrain_on_test": bool(config.model.kind == "mbm" and config.data.pretrain_on_test),
        "sessions": sessions,
    })
