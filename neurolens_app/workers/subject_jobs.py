"""GUI-side jobs built from engine calls: open a subject, and open the demo subject (creating it if missing).

They follow the engine's job protocol (yield events, honour the cancel token, return the result), so
``EngineWorker`` runs them like any engine job. Engine modules are imported inside, in the worker thread.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

from engine.events import CancelToken, Event, Finished, Log, Progress, Started


def open_subject_job(path: str | Path, cancel: CancelToken) -> Iterator[Event]:
    """Detect the format of ``path`` and open it; returns the ``Subject``."""
    from engine.data import detect_format, open_subject

    path = Path(path)
    yield Started(job="open subject")
    yield Progress(0, 3, stage="open", message=f"detecting the format of {path.name}")
    fmt = detect_format(path)
    cancel.raise_if_set()
    yield Progress(1, 3, stage="open", message=f"reading {path.name} ({fmt})")
    subject = open_subject(path, format=fmt)
    cancel.raise_if_set()
    yield Progress(2, 3, stage="open", message="reading trial, voxel and ROI tables")
    summary = subject.summary()  # small tables only; betas stay memory-mapped
    yield Progress(3, 3, stage="open", message="done")
    yield Finished(summary={"n_trials": summary["n_trials"], "n_voxels": summary["n_voxels"]})
    return subject


def demo_subject_job(cancel: CancelToken, subject: int = 1) -> Iterator[Event]:
    """Open the built-in demo subject (a simulation) from the engine's demo cache, creating it first, with
    progress, when it is not on disk yet or was made by another version of the simulation (the rule of the
    engine's ``ensure_demo_subject``, which has no progress events)."""
    from engine.data import demo, native
    from engine.data.demo.builder import MODEL_VERSION, cached_model_version

    path = Path(demo.default_demo_path(subject))
    if not native.is_native(path) or cached_model_version(path) != MODEL_VERSION:
        yield Log(f"creating the demo subject {subject} (a simulation) in {path}")
        yield from demo.create_demo_job(path, seed=0, subject=subject, overwrite=path.exists(), cancel=cancel)
    cancel.raise_if_set()
    result = yield from open_subject_job(path, cancel)
    return result
