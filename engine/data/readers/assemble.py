"""Helpers that turn what a reader found into a consistent ``Subject``: repeat numbers, provenance, final checks."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.data.subject import Subject


def repeat_numbers(image_index: np.ndarray) -> np.ndarray:
    """0-based presentation number of each trial's image, counting trials in the given (chronological) order."""
    image_index = np.asarray(image_index)
    out = np.zeros(len(image_index), np.int64)
    if len(image_index) == 0:
        return out
    order = np.argsort(image_index, kind="stable")
    sorted_img = image_index[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_img)) + 1]
    run_start = np.repeat(starts, np.diff(np.r_[starts, len(sorted_img)]))
    out[order] = np.arange(len(sorted_img)) - run_start
    return out


def provenance(reader: str, sources: list, steps: list[dict] | None = None, **extra) -> dict:
    """The provenance dict every reader records: files read (as strings), upstream steps, reader name."""
    return {
        "reader": reader,
        "sources": [str(Path(s)) for s in sources],
        "preprocessing": list(steps or []),
        "simulation": False,
        **extra,
    }


def checked(subject: Subject, path: Path) -> Subject:
    """Run the native format's consistency checks on a freshly read subject (shapes, indices, ROIs, stimuli)."""
    from engine.data.native import _validate

    _validate(path, betas=subject.betas, images=subject.images, trials=subject.trials, voxels=subject.voxels,
              rois=subject.rois, stimuli=subject.stimuli)
    return subject
