"""``OverlaySources``: fills the ``OverlayState`` catalogue from the open subject and the selected run.

Built-in overlays: ROI labels, a trial's betas, voxel noise ceiling, the demo subject's true receptive-field maps,
and, when the selected run folder has them, encoding-model accuracy and Mixture-of-Experts routing. Overlays whose
data are missing stay listed, disabled, with the reason as tooltip. Other panels add their own maps with
``OverlayState.set_overlay``.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal

from neurolens_app.state.overlay_state import OverlayState
from neurolens_app.state.run_state import RunState
from neurolens_app.state.subject_state import SubjectState

log = logging.getLogger(__name__)

ROI_LABELS = "ROI labels"
TRIAL_BETAS = "Trial betas"
NOISE_CEILING = "Noise ceiling"
ENCODING = "Encoding accuracy"
ENCODING_NORMALIZED = "Encoding accuracy / noise ceiling"
ROUTING_DOMINANT = "MoE routing: dominant expert"
ROUTING_EXPERT = "MoE routing: expert {k} weight"
TRUTH_PREFIX = "True "  # + ground-truth key, e.g. "True prf_x (simulation)"

# ground-truth maps shown as overlays (per-voxel generating parameters of simulated subjects), in this order
_TRUTH_TITLES = {"prf_x": "pRF x position", "prf_y": "pRF y position", "prf_size": "pRF size",
                 "prf_eccentricity": "pRF eccentricity", "prf_angle": "pRF polar angle",
                 "noise_ceiling_true": "noise ceiling", "category_weight": "category selectivity",
                 "contrast_weight": "contrast sensitivity"}


def truth_overlay_name(key: str) -> str:
    return f"{TRUTH_PREFIX}{_TRUTH_TITLES.get(key, key)} (simulation)"


class OverlaySources(QObject):
    """Keeps the overlay catalogue in step with ``SubjectState`` (subject, trial) and ``RunState`` (the run).

    ``run_maps_changed`` is emitted when the selected run's maps have been read (``run_data``).
    """

    run_maps_changed = Signal()

    def __init__(self, subject_state: SubjectState, run_state: RunState, overlay_state: OverlayState,
                 parent: QObject | None = None, when_engine_ready=None):
        super().__init__(parent)
        # reading a run's model imports torch: wait for the engine preload when the window provides it
        self._when_engine_ready = when_engine_ready or (lambda fn: fn())
        self.subject_state = subject_state
        self.overlays = overlay_state
        self._run_generation = 0
        self.run_data: dict = {}  # what the selected run provides: "encoding" (n_voxels,), "routing" (n_voxels, k)
        subject_state.subject_changed.connect(self._on_subject_changed)
        subject_state.trial_changed.connect(self._on_trial_changed)
        run_state.run_changed.connect(self._on_run_changed)

    # --- subject -------------------------------------------------------------------------------------------------
    def _on_subject_changed(self, subject) -> None:
        with self.overlays.batch():
            self._fill(subject)

    def _fill(self, subject) -> None:
        ov = self.overlays
        ov.clear()
        self.run_data = {}
        if subject is None:
            return
        labels, names = subject.roi_labels()
        if names:
            vals = labels.astype(np.float32) - 1  # label k -> category k-1; 0 (no ROI) -> hidden
            ov.set_overlay(ROI_LABELS, vals, kind="categorical", categories=names, group="anatomy",
                           description="Region of interest of each voxel (later, more specific ROIs win overlaps).")
        else:
            ov.set_unavailable(ROI_LABELS, "this subject defines no ROIs", group="anatomy")
        ov.set_unavailable(TRIAL_BETAS, "select a trial in the Trials panel", group="data",
                           description="Response (beta) of every voxel on the selected trial.")
        nc = np.asarray(subject.voxels.noise_ceiling, np.float32)
        if np.isfinite(nc).any():
            ov.set_overlay(NOISE_CEILING, nc, cmap="inferno", limits=(0.0, float(max(np.nanmax(nc), 1e-3))),
                           group="data", description="Noise ceiling (r) from repeated test images: the best "
                                                     "correlation any model can reach for this voxel.")
        else:
            ov.set_unavailable(NOISE_CEILING, "this subject has no repeated presentations to estimate it from",
                               group="data")
        self._add_ground_truth(subject)
        self._set_run_overlays_unavailable("select a run folder in the Data panel")
        first = [n for n in (ROI_LABELS, NOISE_CEILING) if ov.get(n).available]
        ov.set_current(first[0] if first else "")

    def _add_ground_truth(self, subject) -> None:
        gt = subject.ground_truth or {}
        order = [k for k in _TRUTH_TITLES if k in gt and np.ndim(gt[k]) == 1 and len(gt[k]) == subject.n_voxels]
        if not order:
            for k in ("prf_x", "prf_y", "prf_size"):
                self.overlays.set_unavailable(truth_overlay_name(k), "only the demo subject (a simulation) has "
                                              "known receptive fields", group="ground truth")
            return
        for k in order:
            v = np.asarray(gt[k], np.float32)
            cmap = "twilight" if k == "prf_angle" else ("RdBu_r" if k in ("prf_x", "prf_y") else None)
            # image coordinates in [0, 1]: centre the diverging map on fixation (0.5)
            limits = (0.0, 1.0) if k in ("prf_x", "prf_y") and np.nanmin(v) >= 0 and np.nanmax(v) <= 1 else None
            self.overlays.set_overlay(truth_overlay_name(k), v, cmap=cmap, limits=limits, group="ground truth",
                                      description=f"Generating parameter '{k}' of the SIMULATED demo subject.")

    # --- trial ---------------------------------------------------------------------------------------------------
    def _on_trial_changed(self, trial: int) -> None:
        subject = self.subject_state.subject
        if subject is None:
            return
        if trial < 0:
            self.overlays.set_unavailable(TRIAL_BETAS, "select a trial in the Trials panel", group="data")
            return
        betas = np.asarray(subject.betas[trial], np.float32)
        split = "test" if int(subject.trials.split[trial]) == 1 else "train"
        self.overlays.set_overlay(TRIAL_BETAS, betas, group="data",
                                  description=f"Betas of trial {trial} ({split}, image "
                                              f"{int(subject.trials.image_index[trial])}).")

    # --- run -----------------------------------------------------------------------------------------------------
    def _set_run_overlays_unavailable(self, reason: str) -> None:
        self.overlays.set_unavailable(ENCODING, reason, group="models",
                                      description="Test-set correlation of the encoding model per voxel.")
        self.overlays.set_unavailable(ROUTING_DOMINANT, reason, group="models",
                                      description="Expert with the largest routing weight; opacity = that weight.")

    def _on_run_changed(self, run: Path | None) -> None:
        for name in list(self.overlays.names()):
            if name.startswith("MoE routing: expert ") or name == ENCODING_NORMALIZED:
                self.overlays.remove_overlay(name)
        subject = self.subject_state.subject
        self.run_data = {}
        self._run_generation += 1
        if run is None or subject is None:
            self._set_run_overlays_unavailable("select a run folder in the Data panel")
            return
        self._set_run_overlays_unavailable(f"reading {run.name}…")
        generation = self._run_generation
        # model modules may import torch: read them in a pool thread, never in the GUI thread, and only once the
        # engine preload has imported torch (an import in a pool thread would hold the GIL while the subject opens)
        self._when_engine_ready(lambda: self._read_run_maps(generation, run, subject))

    def _read_run_maps(self, generation: int, run: Path, subject) -> None:
        if generation != self._run_generation:
            return  # another run (or subject) was selected while the engine loaded
        from neurolens_app.workers.short_job import submit

        self._job = submit(load_run_maps, run, subject,
                           on_result=lambda data: self._apply_run_maps(generation, run, data),
                           on_error=lambda exc, tb: self._apply_run_maps(
                               generation, run, {"encoding_reason": str(exc), "routing_reason": str(exc)}))

    def _apply_run_maps(self, generation: int, run: Path, data: dict) -> None:
        if generation != self._run_generation:
            return  # another run was selected meanwhile
        with self.overlays.batch():
            self._apply_run_maps_now(run, data)
        self.run_maps_changed.emit()

    def _apply_run_maps_now(self, run: Path, data: dict) -> None:
        self.run_data = data
        enc = data.get("encoding")
        if enc is not None:
            self.overlays.set_overlay(ENCODING, enc, cmap="hot", limits=(0.0, float(max(np.nanmax(enc), 0.05))),
                                      group="models", description=f"Encoding accuracy (r) from {run.name}.")
        else:
            self.overlays.set_unavailable(ENCODING, data.get("encoding_reason", "no encoding maps"), group="models")
        norm = data.get("encoding_normalized")
        if norm is not None:
            self.overlays.set_overlay(ENCODING_NORMALIZED, norm, cmap="hot", limits=(0.0, 1.0), group="models",
                                      description="Encoding r divided by the voxel's noise ceiling (1 = as good "
                                                  "as the data allow).")
        elif ENCODING_NORMALIZED in self.overlays:
            self.overlays.remove_overlay(ENCODING_NORMALIZED)
        w = data.get("routing")
        if w is not None:
            names = [f"expert {k}" for k in range(w.shape[1])]
            used = np.isfinite(w).all(1)  # voxels outside the run's ROIs are not drawn
            dominant = np.where(used, np.argmax(np.nan_to_num(w, nan=-1.0), 1), np.nan).astype(np.float32)
            self.overlays.set_overlay(ROUTING_DOMINANT, dominant, kind="categorical",
                                      categories=names, alpha=np.where(used, np.nanmax(np.where(used[:, None], w, 0.0),
                                                                                       1), 0.0), group="models",
                                      description="Expert with the largest routing weight; opacity = that weight.")
            for k in range(w.shape[1]):
                self.overlays.set_overlay(ROUTING_EXPERT.format(k=k), w[:, k], cmap="viridis", limits=(0.0, 1.0),
                                          group="models", description=f"Routing weight of expert {k} per voxel.")
        else:
            self.overlays.set_unavailable(ROUTING_DOMINANT, data.get("routing_reason", "no routing"), group="models")


def load_run_maps(run: Path, subject) -> dict:
    """Per-voxel maps a run folder provides, through the engine: ``encoding`` (n_voxels,) accuracy and ``routing``
    (n_voxels, n_experts) weights (first routing level), or ``*_reason`` saying why each is missing.

    Runs in a pool thread: reading a model imports torch.
    """
    from neurolens_app.workers.engine_preload import ensure_torch

    ensure_torch()  # once, from one thread, before the model modules need it
    out: dict = {}
    try:
        from engine.models.encoding import EncodingMaps

        maps = EncodingMaps.load(run, with_model=True)
        if maps.n_voxels != subject.n_voxels:
            out["encoding_reason"] = f"{run.name} has {maps.n_voxels} voxels, the subject {subject.n_voxels}"
        else:
            out["encoding"] = np.asarray(maps.test_r, np.float32)
            if np.isfinite(maps.normalized_r).any():
                out["encoding_normalized"] = np.asarray(maps.normalized_r, np.float32)
            if maps.model is not None and subject.stimuli.labels is not None and subject.stimuli.categories:
                from engine.models.encoding import category_tuning

                try:  # the voxel inspector's tuning plot; the maps stay usable without it
                    out["encoding_tuning"], out["encoding_categories"] = category_tuning(maps, subject)
                except (OSError, ValueError, KeyError) as exc:
                    out["encoding_tuning_reason"] = str(exc)
    except ImportError:
        out["encoding_reason"] = "this NeuroLens build cannot read encoding maps"
    except (OSError, ValueError, KeyError) as exc:
        out["encoding_reason"] = f"no encoding maps in {run.name} ({exc})"
    from engine.train.run import Run

    if not Run(run).has_model():
        out["routing_reason"] = f"{run.name} has no trained model yet"
        return out
    try:
        from engine.models import routing
        from engine.train.trained_model import TrainedModel

        # the trainer's model folder (encoder + its z-scoring), read as the Experts panel reads it
        trained = TrainedModel.open(run, subject)
        model = trained.encoder
        if not hasattr(model, "routing_weights"):
            out["routing_reason"] = f"the model of {run.name} is a {type(model).__name__}, not a Mixture-of-Experts"
            return out
        norm = trained.normalizer
        trials = subject.split_indices("test")
        if trials.size == 0:
            trials = np.arange(min(subject.n_trials, 500))
        betas = norm.apply(subject.betas, np.sort(trials))
        w = np.asarray(routing.voxel_routing(model, trained.subject_key, betas)[0], np.float32)
        vidx = np.asarray(norm.voxel_index)
        if w.ndim != 2 or w.shape[0] != len(vidx) or (len(vidx) and int(vidx.max()) >= subject.n_voxels):
            out["routing_reason"] = (f"routing of {run.name} has shape {w.shape}; the subject has "
                                     f"{subject.n_voxels} voxels")
        else:
            full = np.full((subject.n_voxels, w.shape[1]), np.nan, np.float32)  # voxels the run did not use: none
            full[vidx] = w
            out["routing"] = full
    except (ImportError, AttributeError) as exc:
        out["routing_reason"] = f"cannot read Mixture-of-Experts models ({exc})"
    except (OSError, ValueError, KeyError) as exc:  # engine errors derive from these
        out["routing_reason"] = f"cannot compute routing for {run.name}: {exc}"
    return out
