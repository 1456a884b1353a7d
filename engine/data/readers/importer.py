"""The import job: open any supported source, preprocess it as configured, write a native subject atomically.

``import_subject(src, out, ...)`` is a job (a generator of ``engine.events`` events returning the output path), driven
by ``neurolens import`` and by the app. The output folder appears only once complete (``write_subject`` builds it in a
hidden sibling and renames it), so a cancelled, failed or killed import never leaves a folder that opens as a subject.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Iterator

from engine.data.formats import detect_format
from engine.data.sources import open_subject
from engine.data.native import write_subject
from engine.data.preprocess import PreprocessConfig, apply
from engine.atomic import check_replaceable
from engine.events import CancelToken, Event, Finished, Log, Progress, Started, ensure_token


def import_subject(src: str | Path, out: str | Path, *, format: str | None = None, options: dict | None = None,
                   preprocess: PreprocessConfig | None = None, overwrite: bool = False,
                   cancel: CancelToken | None = None) -> Iterator[Event]:
    """Convert ``src`` to a native subject folder at ``out``.

    Parameters
    ----------
    src : path
        Any source ``open_subject`` reads (dataset file/folder, mapping file, native folder).
    out : path
        The native folder to write (conventionally ``*.nlsubj``).
    format : str, optional
        Overrides format detection.
    options : dict, optional
        Reader options (``mapping``, ``subject``, ``test_set``, ...).
    preprocess : PreprocessConfig, optional
        Steps to apply before writing; default z-scores voxel-wise with training statistics.
    overwrite : bool
        Replace an existing ``out`` (only after the new folder is complete).

    Returns
    -------
    Path of the written subject (the generator's return value).
    """
    cancel = ensure_token(cancel)
    src, out = Path(src), Path(out)
    preprocess = preprocess or PreprocessConfig()
    sources = [src, *(Path(options[k]) for k in ("mapping",) if isinstance((options or {}).get(k), (str, Path)))]
    # checked before reading anything (write_subject checks again, with the subject's own source files)
    check_replaceable(out, marker="subject.json", kind="NeuroLens subject", overwrite=overwrite, sources=sources)
    t0 = time.perf_counter()
    yield Started(job="import", run_dir=str(out), total=4)
    fmt = format or detect_format(src)
    yield Progress(1, 4, stage="open", message=f"{src} as {fmt}")
    subject = open_subject(src, format=fmt, **(options or {}))
    cancel.raise_if_set()
    yield Log(f"read {subject.n_trials} trials × {subject.n_voxels} voxels, {subject.n_images} images ({fmt})")
    yield Progress(2, 4, stage="preprocess")
    subject = apply(subject, preprocess)
    cancel.raise_if_set()
    yield Progress(3, 4, stage="write", message=str(out))

    def on_block(name, done, total):
        cancel.raise_if_set()

    path = write_subject(subject, out, overwrite=overwrite, on_block=on_block, sources=sources)
    yield Progress(4, 4, stage="done")
    summary = subject.summary()
    summary["path"] = str(path)
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    yield Finished(status="done", summary=summary)
    return path
