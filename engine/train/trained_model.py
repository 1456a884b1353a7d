"""A trained run's model as one object: what fine-tuning, reconstruction and the app read of a finished run.

>>> model = TrainedModel.open("runs/demo-mlp")            # the subject recorded in the run's provenance
>>> model.info["embedder"], model.target_shape            # model/run_model.json
>>> pred = model.predict("test")                          # = engine.train.predict.predict_embeddings
>>> out = model.outputs(model.betas(rows), device="cuda")  # embeddings, per-level stacks, blurry images

The parts (encoder, normaliser, subject) are read on first use, so opening is cheap and a missing subject only
matters to what needs the data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np

from engine.errors import CheckpointError, DataError
from engine.train.run import Run


@dataclass(frozen=True)
class ModelOutputs:
    """A model's outputs for rows of betas, as numpy."""

    embeddings: np.ndarray  # (n, *target_shape) float32
    levels: np.ndarray | None = None  # (n_levels, n, *target_shape): a Mixture-of-Experts encoder's levels
    blurry: np.ndarray | None = None  # (n, 3, H, W): the low-level head's images


class TrainedModel:
    """The final model of a run: ``info`` (``model/run_model.json``), ``encoder``, ``normalizer`` and the subject.

    Build with ``TrainedModel.open(run, subject=None)``.
    """

    def __init__(self, run: Run, info: dict, subject=None) -> None:
        self.run = run
        self.info = info
        self._subject = subject

    @classmethod
    def open(cls, run: str | Path | Run, subject=None) -> "TrainedModel":
        """The model of a finished run (``CheckpointError`` before the trainer wrote it).

        ``subject`` (a path or a ``Subject``) defaults to the subject recorded in the run's provenance.
        """
        run = run if isinstance(run, Run) else Run.open(run)
        return cls(run, run.model_info(), subject)

    # --- what the model is ----------------------------------------------------------------------------------------
    @property
    def target_shape(self) -> tuple[int, ...]:
        return tuple(self.info["target_shape"])

    @property
    def subject_key(self) -> str:
        """The subject name the encoder's per-subject layers are keyed by."""
        return self.info["subject"]

    @cached_property
    def subject(self):
        """The subject (opened on first use): the one given to ``open``, else the one the run records."""
        from engine.data import open_subject
        from engine.data.subject import Subject

        subject = self._subject
        if subject is None:
            subject = self.run.subject_path()
            if not subject:
                raise CheckpointError(f"{self.run.path}: provenance.json does not name the subject's path; pass "
                                      "the subject")
        subject = subject if isinstance(subject, Subject) else open_subject(subject)
        self._check_same_data(subject)
        return subject

    def _check_same_data(self, subject) -> None:
        """The run's own subject must still hold the data it was trained on (a simulation rebuilt by a newer version
        of NeuroLens, an edited folder): checked for simulated subjects, whose data are small enough to hash on every
        open (a recorded real subject is checked when a training resumes)."""
        from engine.train.targets import subject_data_hash

        if not subject.is_simulation or not subject.path:
            return  # a real subject is too large to hash on every open
        try:
            prov = self.run.provenance()
            recorded, expected = prov["subject"]["path"], prov.get("data_hash")
        except (OSError, KeyError, TypeError, ValueError, CheckpointError):
            return
        if not (recorded and expected) or Path(subject.path).resolve() != Path(recorded).resolve():
            return  # another subject on purpose (cross-subject use)
        found = subject_data_hash(subject)
        if expected != found:
            raise DataError(subject.path, key="betas", expected=f"the data {self.run.path} was trained on (hash "
                            f"{expected})", found=f"other data (hash {found}): the subject changed since that run "
                            "was trained; retrain the run, or pass the subject it was trained on")

    @cached_property
    def encoder(self):
        """The trained encoder on the CPU (``engine.train.predict.load_encoder``)."""
        from engine.train.predict import load_encoder

        return load_encoder(self.run)

    @cached_property
    def normalizer(self):
        """The voxel selection and the training trials' z-scoring statistics."""
        from engine.train.predict import load_normalizer

        return load_normalizer(self.run)

    def has_blurry_head(self) -> bool:
        """Whether the encoder predicts a low-level image itself, read from its small config file (no weights)."""
        from engine.models.config import CONFIG_FILE  # torch-free: the app asks this in its GUI thread
        from engine.train.predict import ENCODER_DIR

        try:
            cfg = json.loads((self.run.model_dir / ENCODER_DIR / CONFIG_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return bool(isinstance(cfg, dict) and (cfg.get("blurry") or cfg.get("config", {}).get("blurry")))

    # --- data -----------------------------------------------------------------------------------------------------
    def split(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(image_index, repeat groups into ``rows``, trial rows) of ``split``; ``DataError`` when it has no trials."""
        from engine.train.dataset import split_groups

        image_index, groups, rows = split_groups(self.subject, split)
        if len(rows) == 0:
            s = self.subject
            raise DataError(s.path or s.name, f"no trials in split '{split}'", key="trials.split")
        return image_index, groups, rows

    def betas(self, rows: np.ndarray) -> np.ndarray:
        """The betas of trial ``rows``, selected and z-scored as the model was trained."""
        return self.normalizer.apply(self.subject.betas, rows)

    def targets(self) -> np.ndarray:
        """The true embeddings (float32) of every image of the subject: what the model was trained to predict."""
        from engine.train.targets import target_embeddings

        return target_embeddings(self.subject.images, self.info["embedder"], self.info["target"]).astype(np.float32)

    # --- predictions ----------------------------------------------------------------------------------------------
    def outputs(self, betas: np.ndarray, *, encoder=None, device=None) -> ModelOutputs:
        """The outputs of ``encoder`` (default: the run's) for normalised ``betas`` (see ``encoder_outputs``)."""
        emb, levels, blurry = encoder_outputs(self.encoder if encoder is None else encoder, betas, self.subject_key,
                                              self.target_shape, device=device)
        return ModelOutputs(emb, levels, blurry)

    def predict(self, split: str = "test", repeat_mode: str = "average_outputs", *, device: str = "cpu"):
        """Predicted and true embeddings of every image of ``split``, repeats combined
        (``engine.train.predict.predict_embeddings``)."""
        from engine.train.predict import predict_embeddings

        return predict_embeddings(self.run, self.subject, split, repeat_mode, device=str(device))

    def __repr__(self) -> str:
        return f"TrainedModel({str(self.run.path)!r}, kind={self.info.get('kind')!r})"


def encoder_outputs(model, betas: np.ndarray, subject_key: str, target_shape, *, batch_size: int = 256,
                    device=None):
    """(embeddings (n, *shape), levels (n_levels, n, *shape) or None, blurry (n, 3, H, W) or None) of a model.

    A torch encoder runs on ``device`` (it is moved there; default: where it is) and its outputs come back as numpy.
    """
    import torch

    from engine.train.device import to_device, to_numpy

    if hasattr(model, "coef_"):  # RidgeCV
        return model.predict(betas).reshape(len(betas), *target_shape).astype(np.float32), None, None
    if device is not None:
        model.to(device)
    dev = next(model.parameters()).device
    embs, levels, blurs = [], [], []
    model.eval()
    with torch.no_grad():
        for s in range(0, len(betas), batch_size):
            x = to_device(np.asarray(betas[s:s + batch_size], np.float32), dev)
            out = model(x, subject=subject_key)
            embs.append(to_numpy(out.embedding, np.float32))
            if "levels" in out.extras:
                levels.append(to_numpy(out.extras["levels"], np.float32))
            if "blurry" in out.extras:
                blurs.append(to_numpy(out.extras["blurry"], np.float32))
    return (np.concatenate(embs), np.concatenate(levels, axis=1) if levels else None,
            np.concatenate(blurs) if blurs else None)
