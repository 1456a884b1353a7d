"""The parts of a diffusers model folder (``unet/``, ``vae/``, ``scheduler/``, ...), checked and loaded offline.

A missing part raises ``ModelFolderError`` naming it; weights must be safetensors (``.bin`` files are pickles and are
refused); ``from_pretrained`` runs with ``local_files_only`` under the model-building lock.
"""

from __future__ import annotations

import json
from pathlib import Path

from engine.errors import ModelFolderError
from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.models.construction import MODEL_BUILD_LOCK


WEIGHT_NAMES = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors")


def read_scheduler_config(folder: Path) -> dict:
    p = folder / "scheduler" / "scheduler_config.json"
    if not p.is_file():
        raise ModelFolderError(folder, "scheduler/scheduler_config.json")
    try:
        return read_object(p)
    except json.JSONDecodeError as e:
        raise ModelFolderError(folder, "a valid scheduler/scheduler_config.json", str(e)) from None


def check_part(folder: Path, part: str, weights: tuple[str, ...] = WEIGHT_NAMES) -> Path:
    sub = folder / part
    if not sub.is_dir():
        raise ModelFolderError(folder, f"{part}/")
    if not (sub / "config.json").is_file():
        raise ModelFolderError(folder, f"{part}/config.json")
    if weights and not any((sub / w).is_file() for w in weights):
        pickled = [p.name for p in sub.glob("*.bin")]
        hint = (f"found only {pickled[0]} (a pickle, which NeuroLens does not load); convert it to safetensors"
                if pickled else "")
        raise ModelFolderError(folder, f"{part}/{weights[0]}", hint)
    return sub


def load_part(cls, folder: Path, part: str):
    """``cls.from_pretrained(folder / part)`` offline; a load failure becomes a ``ModelFolderError`` naming the part."""
    try:
        with MODEL_BUILD_LOCK:  # see engine/models/construction.py
            return cls.from_pretrained(folder / part, local_files_only=True)
    except (OSError, ValueError, RuntimeError, KeyError) as e:
        first = str(e).split(". ")[0].replace(str(folder / part), "").strip()
        raise ModelFolderError(folder, f"{part}/ weights that match {part}/config.json", first[:300]) from None
