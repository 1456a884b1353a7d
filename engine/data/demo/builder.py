"""Create the built-in demo subject: render the stimuli, place the voxels, simulate the experiment, write it.

``create_demo_job`` is the job (events for the CLI and GUI); ``create_demo_subject`` runs it silently;
``ensure_demo_subject`` creates the cached demo subject once and returns its path.
"""

from __future__ import annotations

import functools
import os
import time
from pathlib import Path
from typing import Iterator

import numpy as np

from engine.data.demo import cortex, simulate
from engine.data.demo.own_stimuli import OwnStimuli, holdout_order, load_stimulus_source, own_categories, own_stimulus_set
from engine.data.demo.stimuli import StimulusSet, concat_stimuli, render_stimuli
from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable
from engine.errors import DataError, SubjectFormatError
from engine.events import EtaClock, Event, Finished, Log, Progress, Started, drive, ensure_token

GENERATOR = "neurolens demo"
# Bump whenever the simulation's output changes: cached demo subjects of another version are rebuilt.
# 2: hue-tuned colour channels, NSD-like single-trial SNR. 3: SNR × DEMO_SNR_SCALE (NSD's training information).
MODEL_VERSION = 3
_RENDER_CHUNK = 300
# Independent random streams per part of the simulation, so changing one part leaves the others as they were.
_STREAM_LAYOUT, _STREAM_VOXELS, _STREAM_MODEL, _STREAM_SCHEDULE, _STREAM_NOISE, _STREAM_COUNT, _STREAM_COLOUR = range(7)


class DemoExistsError(DataError, FileExistsError):
    """The demo subject's destination already exists and overwriting was not asked for."""


def demo_name(subject: int) -> str:
    return f"demo-sub{int(subject):02d}"


def default_demo_path(subject: int = 1) -> Path:
    """Where the cached demo subject lives: ``$NEUROLENS_CACHE_DIR/demo/demo-subNN.nlsubj``, else
    ``~/.cache/neurolens/demo/demo-subNN.nlsubj``."""
    root = os.environ.get("NEUROLENS_CACHE_DIR") or os.path.join(Path.home(), ".cache", "neurolens")
    return Path(root) / "demo" / f"{demo_name(subject)}.nlsubj"


def ensure_demo_subject(subject: int = 1) -> Path:
    """Path of the cached demo subject ``subject`` (seed 0), creating it first when it is not there or was made by
    another version of the simulation (``MODEL_VERSION`` in its provenance)."""
    from engine.data import native

    path = default_demo_path(subject)
    if not native.is_native(path) or cached_model_version(path) != MODEL_VERSION:
        create_demo_subject(path, seed=0, subject=subject, overwrite=path.exists())
    return path


DEMO_ALIAS = "demo"


def resolve_demo_alias(path: str | Path) -> str | Path:
    """``"demo"`` / ``"demo:N"`` (when no such file exists) → the cached demo subject N, built on first use."""
    text = str(path)
    if Path(text).exists() or not (text == DEMO_ALIAS or text.startswith(DEMO_ALIAS + ":")):
        return path
    number = text.partition(":")[2] or "1"
    if not number.isdigit() or int(number) < 1:
        raise SubjectFormatError(text, "not a demo subject", expected="'demo' or 'demo:N' with N ≥ 1",
                                 found=repr(text))
    return ensure_demo_subject(subject=int(number))


def cached_model_version(path) -> int | None:
    """``provenance.model_version`` of a native demo subject folder; None when unreadable or absent."""
    import json

    try:
        meta = json.loads((Path(path) / "subject.json").read_text(encoding="utf-8"))
        return int(meta["provenance"]["model_version"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def create_demo_subject(path, *, seed: int = 0, subject: int = 1, overwrite: bool = False,
                        config: simulate.DemoConfig | None = None, stimuli=None,
                        n_test_images: int | None = None) -> Path:
    """Create the demo subject at ``path`` (native format) without reporting progress. Returns the path."""
    return drive(create_demo_job(path, seed=seed, subject=subject, overwrite=overwrite, config=config,
                                 stimuli=stimuli, n_test_images=n_test_images))


def create_demo_job(path, *, seed: int = 0, subject: int = 1, overwrite: bool = False, cancel=None,
                    config: simulate.DemoConfig | None = None, stimuli=None,
                    n_test_images: int | None = None) -> Iterator[Event]:
    """Job: simulate demo subject ``subject`` for ``seed`` and write it to ``path``. Returns the path.

    The stimuli depend only on ``seed``: every subject of a seed saw the same images. Voxels, receptive fields,
    tuning, noise and trial order depend on ``seed`` and ``subject``. The same arguments give byte-identical files.

    Raises
    ------
    DemoExistsError
        ``path`` exists and ``overwrite`` is False (checked before any work); a ``DataError`` and a
        ``FileExistsError``.
    """
    from engine.data.native import write_subject

    cancel = ensure_token(cancel)
    config = config or simulate.DemoConfig()
    own = None
    if stimuli is not None:  # the user's images (engine.data.demo.own_stimuli): path or OwnStimuli
        own, config = _own_stimuli(stimuli, config, seed, n_test_images)
    path = Path(path)
    subject, seed = int(subject), int(seed)
    _check_destination(path, subject, overwrite)
    n_chunks = 0 if own is not None else -(-config.n_images // _RENDER_CHUNK)
    total = n_chunks + 5
    clock = EtaClock(total)
    t0 = time.perf_counter()
    yield Started(job="demo-create", run_dir=str(path), total=total)
    yield Log(f"creating {demo_name(subject)} (SIMULATED data, seed {seed}) in {path}")

    if own is None:
        stim = yield from _render_in_chunks(config, seed, n_chunks, clock, cancel)
    else:
        stim = own_stimulus_set(own)
    step = n_chunks
    rng = functools.partial(_random_stream, seed, subject)
    cancel.raise_if_set()
    layout = cortex.AreaLayout.for_subject(rng(_STREAM_LAYOUT))
    n_vox = config.n_voxels or int(rng(_STREAM_COUNT).integers(3300, 3901))
    vox = cortex.sample_voxels(n_vox, rng(_STREAM_VOXELS), layout)
    model = simulate.voxel_model(vox, layout, rng(_STREAM_MODEL), rng(_STREAM_COLOUR), snr_scale=config.snr_scale)
    step += 1
    yield Progress(step, total, eta_s=clock.eta(step), stage="cortex", message=f"{n_vox} voxels")

    cancel.raise_if_set()
    signal = simulate.image_signals(model, vox.roi, stim, config.energy_grid)
    step += 1
    yield Progress(step, total, eta_s=clock.eta(step), stage="responses")

    cancel.raise_if_set()
    schedule = simulate.make_schedule(config, rng(_STREAM_SCHEDULE))
    betas = simulate.simulate_betas(model, signal, schedule, rng(_STREAM_NOISE), config.n_sessions)
    step += 1
    yield Progress(step, total, eta_s=clock.eta(step), stage="trials", message=f"{len(betas)} trials")

    cancel.raise_if_set()
    trials = TrialTable(image_index=schedule.image_index, session=schedule.session, run=schedule.run,
                        repeat=schedule.repeat, split=schedule.split)
    s = _subject(stim, trials, betas, vox, model, signal, layout, config, seed=seed, subject=subject)
    if own is not None:
        _show_own_images(s, own)
    nc = _estimate_noise_ceiling(s, betas, schedule)
    step += 1
    yield Progress(step, total, eta_s=clock.eta(step), stage="noise ceiling",
                   message=f"median {float(np.median(nc)):.2f}")

    cancel.raise_if_set()
    write_subject(s, path, overwrite=overwrite, on_block=lambda name, done, n: cancel.raise_if_set())
    step += 1
    yield Progress(step, total, eta_s=0.0, stage="write")
    summary = {**s.summary(), "path": str(path), "elapsed_s": round(time.perf_counter() - t0, 2),
               "noise_ceiling_median": float(np.median(nc))}
    yield Log(f"wrote {summary['n_trials']} trials × {summary['n_voxels']} voxels, {summary['n_images']} images "
              f"in {summary['elapsed_s']:.1f} s")
    yield Finished("done", summary={k: summary[k] for k in ("path", "name", "n_trials", "n_voxels", "n_images",
                                                             "rois", "elapsed_s", "noise_ceiling_median")})
    return path


def _random_stream(seed: int, subject: int, stream: int) -> np.random.Generator:
    """The generator of one part of the simulation (layout, voxels, model, schedule, noise...)."""
    return np.random.default_rng([seed, subject, stream])


def _check_destination(path: Path, subject: int, overwrite: bool) -> None:
    if subject < 1:
        raise DataError(path, "invalid demo subject number", key="subject", expected="an integer >= 1", found=subject)
    if path.exists() and not overwrite:
        raise DemoExistsError(path, "already exists", expected="a path that does not exist yet (or overwrite)",
                              found="an existing file or folder")


def _estimate_noise_ceiling(s: Subject, betas: np.ndarray, schedule) -> np.ndarray:
    """The noise ceiling estimated from the test repeats (NSD method) into ``s.voxels``, its ncsnr into the ground
    truth; returns it."""
    _, groups = s.repeat_groups("test")
    nc, ncsnr = simulate.estimate_noise_ceiling(betas, schedule.session, groups)
    s.voxels = VoxelTable(hemi=s.voxels.hemi, vertex=s.voxels.vertex, ijk=s.voxels.ijk, noise_ceiling=nc)
    s.ground_truth["ncsnr_estimated"] = ncsnr
    return nc


def _render_in_chunks(config: simulate.DemoConfig, seed: int, n_chunks: int, clock: EtaClock, cancel):
    """Sub-job: the seed's procedural stimuli, rendered ``_RENDER_CHUNK`` at a time (one progress step each)."""
    parts: list[StimulusSet] = []
    for k in range(n_chunks):
        cancel.raise_if_set()
        start = k * _RENDER_CHUNK
        parts.append(render_stimuli(min(_RENDER_CHUNK, config.n_images - start), seed, config.image_size, start=start))
        yield Progress(k + 1, clock.total, eta_s=clock.eta(k + 1), stage="stimuli",
                       message=f"{start + len(parts[-1].labels)}/{config.n_images} images")
    return concat_stimuli(parts)


def _subject(stim: StimulusSet, trials: TrialTable, betas: np.ndarray, vox: cortex.CorticalVoxels,
             model: simulate.VoxelModel, signal: np.ndarray, layout: cortex.AreaLayout, config: simulate.DemoConfig,
             *, seed: int, subject: int) -> Subject:
    n_vox = len(vox.roi)
    signal_sd = signal.std(0)
    ncsnr_true = signal_sd / model.noise_sd
    gt = {
        "roi_id": vox.roi.astype(np.int16),
        "prf_x": model.prf["x"], "prf_y": model.prf["y"], "prf_size": model.prf["size"],
        "prf_eccentricity": model.prf["ecc"], "prf_angle": model.prf["angle"],
        "prf_exponent": model.exponent, "contrast_weight": model.contrast_weight,
        "colour_channel": model.colour_channel,
        "category_weight": model.category_weight, "category_tuning": model.tuning,
        "noise_sd": model.noise_sd, "signal_sd": signal_sd, "baseline": model.baseline,
        "ncsnr_true": ncsnr_true,
        "noise_ceiling_true": simulate.noise_ceiling_from_ncsnr(ncsnr_true, config.test_repeats),
        "flat_xy": vox.flat_xy, "cortex_d": vox.d, "cortex_t": vox.t,
    }
    gt = {k: np.asarray(v, np.int16 if k in ("roi_id", "colour_channel") else np.float32) for k, v in gt.items()}
    rois = {name: vox.roi == k for k, name in enumerate(cortex.ROI_NAMES)}
    voxels = VoxelTable(hemi=vox.hemi.astype(np.int8), vertex=vox.vertex.astype(np.int32),
                        ijk=np.full((n_vox, 3), -1, np.int32), noise_ceiling=np.full(n_vox, np.nan, np.float32))
    stimuli = Stimuli(categories=list(stim.categories), labels=stim.labels.astype(np.int64),
                      captions=list(stim.captions),
                      source_ids=[f"demo-seed{seed}-{i:05d}" for i in range(len(stim.labels))])
    provenance = {
        "simulation": True,
        "generator": GENERATOR,
        "model_version": MODEL_VERSION,
        "seed": seed,
        "subject": subject,
        "note": "SIMULATED fMRI: a built-in demo subject with known ground truth, not a recording",
        "sources": ["engine.data.demo.stimuli.render_stimuli (procedural images)",
                    "nilearn bundled fsaverage5 flat mesh (voxel positions)"],
        "preprocessing": [],
        "design": {"n_train_images": config.n_train_images, "n_test_images": config.n_test_images,
                   "test_repeats": config.test_repeats, "n_sessions": config.n_sessions,
                   "runs_per_session": config.runs_per_session, "test_images": "the last n_test_images",
                   "snr_scale": config.snr_scale},
        "layout": {"v1_width_mm": layout.v1_width, "v2_width_mm": layout.v2_width, "v3_width_mm": layout.v3_width,
                   "pole_shift_mm": layout.pole_shift},
        "units": "percent signal change (raw single-trial betas, not z-scored)",
        "noise_ceiling": "voxels.noise_ceiling: estimated from the test repeats (NSD method), as the correlation "
                         "ceiling for the average of the repeats; ground_truth.noise_ceiling_true: the generating one",
    }
    return Subject(betas=betas, trials=trials, images=stim.images, voxels=voxels, rois=rois, stimuli=stimuli,
                   name=demo_name(subject), format="native", provenance=provenance, ground_truth=gt)


def _own_stimuli(stimuli, config: simulate.DemoConfig, seed: int, n_test: int | None):
    """(OwnStimuli with the test images last, DemoConfig sized to them) for ``--stimuli``."""
    import dataclasses

    own = stimuli if isinstance(stimuli, OwnStimuli) else load_stimulus_source(resolve_demo_alias(stimuli))
    n = len(own.images)
    n_test = int(n_test) if n_test is not None else max(10, min(100, n // 10))
    if not 1 <= n_test < n:
        raise DataError(own.source, "invalid number of test images", key="n_test_images",
                        expected=f"1 .. {n - 1}", found=n_test)
    order = holdout_order(n, n_test, seed)
    own = OwnStimuli(np.ascontiguousarray(own.images[order]), None if own.labels is None else own.labels[order],
                     list(own.categories), own.source)
    return own, dataclasses.replace(config, n_train_images=n - n_test, n_test_images=n_test, image_size=64)


def _show_own_images(s: Subject, own: OwnStimuli) -> None:
    """Store the user's images (own size, grey stays grey) and labels in place of the 64-px screen copies."""
    s.images = own.images
    labels = None if own.labels is None else own.labels.astype(np.int64)
    cats = own_categories(own)
    s.stimuli = Stimuli(categories=cats if labels is not None else [], labels=labels,
                        captions=None, source_ids=[f"{Path(own.source).name}:{i}" for i in range(len(own.images))])
    s.name = f"{s.name}-{Path(own.source).stem}"
    s.provenance["sources"] = [own.source, "nilearn bundled fsaverage5 flat mesh (voxel positions)"]
    s.provenance["note"] = ("SIMULATED fMRI: the demo's visual system shown the user's own images "
                            f"({own.source}), not a recording")
    s.provenance["stimuli"] = {"source": own.source, "screen_px": 64,
                               "order": "the source's images, a seeded random test set moved last"}
