"""``Subject``: typed, read-only access to one subject's fMRI, trials, stimuli, voxels and ROIs.

Every reader (native, NSD, GOD, BOLD5000, NIfTI, plain arrays) returns this same object. Large arrays (betas, images)
may be numpy memory maps: nothing here copies them, so a summary of a 30,000 × 15,724 subject costs no RAM.

Shapes
------
betas            (n_trials, n_voxels) float16/float32
trials           TrialTable of n_trials rows: image_index, session, run, repeat, split
images           (n_images, H, W, 3) uint8
voxels           VoxelTable of n_voxels rows: hemi, vertex (fsaverage5, per hemisphere), ijk, noise_ceiling
rois             ordered dict name -> (n_voxels,) bool; general ROIs first, specific ones later
prior_images     optional (n_prior, H, W, 3) uint8: unlabeled images of the stimuli's kind (never shown in a trial),
                 carried for a generator trained on the user's own images
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("train", "test")
SPLIT_CODES = {"train": 0, "test": 1}
HEMIS = ("left", "right")  # hemi code 0 = left, 1 = right, -1 = unknown
FSAVERAGE5_N_VERTICES = 10242  # per hemisphere


@dataclass(frozen=True)
class TrialTable:
    """One row per trial. ``split`` is 0 (train) or 1 (test); ``repeat`` counts presentations of the image from 0."""

    image_index: np.ndarray  # (n_trials,) int, row into Subject.images
    session: np.ndarray  # (n_trials,) int, 1-based
    run: np.ndarray  # (n_trials,) int, 1-based
    repeat: np.ndarray  # (n_trials,) int, 0-based presentation number of this image
    split: np.ndarray  # (n_trials,) int8, 0 train / 1 test

    def __len__(self) -> int:
        return int(self.image_index.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def take(self, idx: np.ndarray) -> "TrialTable":
        return TrialTable(**{k: v[idx] for k, v in self.as_dict().items()})


@dataclass(frozen=True)
class VoxelTable:
    """One row per voxel: where it lies (surface vertex and/or volume index) and how reliable it is."""

    hemi: np.ndarray  # (n_voxels,) int8: 0 left, 1 right, -1 unknown
    vertex: np.ndarray  # (n_voxels,) int32: fsaverage5 vertex within its hemisphere, -1 unknown
    ijk: np.ndarray  # (n_voxels, 3) int32: volume index, -1 unknown
    noise_ceiling: np.ndarray  # (n_voxels,) float32 in [0, 1] (fraction of explainable variance as r), NaN unknown

    def __len__(self) -> int:
        return int(self.hemi.shape[0])

    def as_dict(self) -> dict[str, np.ndarray]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def take(self, idx: np.ndarray) -> "VoxelTable":
        return VoxelTable(**{k: v[idx] for k, v in self.as_dict().items()})

    @property
    def has_surface(self) -> bool:
        return bool(np.any(self.vertex >= 0))

    @property
    def has_volume(self) -> bool:
        return bool(np.any(self.ijk[:, 0] >= 0)) if len(self) else False

    @classmethod
    def unknown(cls, n_voxels: int) -> "VoxelTable":
        return cls(
            hemi=np.full(n_voxels, -1, np.int8),
            vertex=np.full(n_voxels, -1, np.int32),
            ijk=np.full((n_voxels, 3), -1, np.int32),
            noise_ceiling=np.full(n_voxels, np.nan, np.float32),
        )


@dataclass(frozen=True)
class Stimuli:
    """Per-image metadata. ``labels`` index ``categories``; -1 = no label. ``source_ids`` are dataset ids (e.g. 73KID)."""

    categories: list[str] = field(default_factory=list)
    labels: np.ndarray | None = None  # (n_images,) int
    captions: list[str] | None = None
    source_ids: list[str] | None = None


class Subject:
    """One subject's data, as typed read-only views. Construct through a reader or ``Subject.from_arrays``.

    Parameters
    ----------
    betas : array (n_trials, n_voxels)
    trials : TrialTable
    images : array (n_images, H, W, 3) uint8
    voxels : VoxelTable
    rois : dict name -> bool mask (n_voxels,)
    stimuli : Stimuli
    name : str
    format : str
        The source format ("native", "nsd", "god", ...).
    path : Path or None
        Where the subject was read from.
    provenance : dict
        ``sources`` (files read), ``preprocessing`` (list of steps with parameters), ``software`` (versions),
        ``simulation`` (True for the demo).
    ground_truth : dict name -> array, optional
        Generating parameters of simulated subjects (pRF centres, sizes, tuning, noise ceilings).
    volume : dict, optional
        ``{"shape": [X, Y, Z], "affine": 4×4 list, "space": "MNI152"|...}`` for volumetric subjects.
    prior_images : array (n_prior, H, W, 3) uint8, optional
        Unlabeled images of the same size and kind as the stimuli (``prior_images:`` of a mapping file).
    """

    def __init__(
        self,
        *,
        betas,
        trials: TrialTable,
        images,
        voxels: VoxelTable | None = None,
        rois: dict[str, np.ndarray] | None = None,
        stimuli: Stimuli | None = None,
        name: str = "subject",
        format: str = "native",
        path: str | Path | None = None,
        provenance: dict | None = None,
        ground_truth: dict[str, np.ndarray] | None = None,
        volume: dict | None = None,
        prior_images=None,
    ) -> None:
        self.betas = betas
        self.trials = trials
        self.images = images
        self.voxels = voxels if voxels is not None else VoxelTable.unknown(betas.shape[1])
        self.rois = dict(rois or {})
        self.stimuli = stimuli or Stimuli()
        self.name = name
        self.format = format
        self.path = None if path is None else Path(path)
        self.provenance = dict(provenance or {})
        self.ground_truth = ground_truth
        self.volume = volume
        self.prior_images = prior_images

    @classmethod
    def from_arrays(cls, **kwargs) -> "Subject":
        """Build an in-memory subject (readers and tests); same keywords as the constructor."""
        return cls(**kwargs)

    # --- sizes ---------------------------------------------------------------------------------------------------
    @property
    def n_trials(self) -> int:
        return int(self.betas.shape[0])

    @property
    def n_voxels(self) -> int:
        return int(self.betas.shape[1])

    @property
    def n_images(self) -> int:
        return int(self.images.shape[0])

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.images.shape[1:])

    @property
    def is_simulation(self) -> bool:
        return bool(self.provenance.get("simulation", False))

    # --- splits and repeats --------------------------------------------------------------------------------------
    def split_indices(self, split: str) -> np.ndarray:
        """Trial indices of ``split`` ("train" or "test"), ascending."""
        if split not in SPLIT_CODES:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        return np.flatnonzero(np.asarray(self.trials.split) == SPLIT_CODES[split])

    def split_images(self, split: str) -> np.ndarray:
        """Unique image indices shown in ``split``, ascending (the order reconstructions are written in)."""
        return np.unique(np.asarray(self.trials.image_index)[self.split_indices(split)])

    def repeat_groups(self, split: str = "test") -> tuple[np.ndarray, np.ndarray]:
        """Group the trials of ``split`` by image.

        Returns
        -------
        image_index : (n_split_images,) int, ascending
        trials : (n_split_images, max_repeats) int, trial indices ordered by repeat number, -1 where an image has
            fewer presentations than the most repeated one (no padding by duplication: callers choose).
        """
        idx = self.split_indices(split)
        img = np.asarray(self.trials.image_index)[idx]
        rep = np.asarray(self.trials.repeat)[idx]
        order = np.lexsort((rep, img))
        idx, img = idx[order], img[order]
        uniq, start, counts = np.unique(img, return_index=True, return_counts=True)
        out = np.full((len(uniq), int(counts.max()) if len(counts) else 0), -1, dtype=np.int64)
        for g, (s, c) in enumerate(zip(start, counts)):
            out[g, :c] = idx[s : s + c]
        return uniq, out

    # --- ROIs ----------------------------------------------------------------------------------------------------
    def roi_names(self) -> list[str]:
        return list(self.rois)

    def roi_labels(self) -> tuple[np.ndarray, list[str]]:
        """One integer label per voxel (0 = no ROI, k = ``names[k-1]``). Later (more specific) ROIs win overlaps."""
        names = self.roi_names()
        lab = np.zeros(self.n_voxels, dtype=np.int16)
        for k, n in enumerate(names, start=1):
            lab[np.asarray(self.rois[n], bool)] = k
        return lab, names

    def roi_mask(self, names: str | list[str]) -> np.ndarray:
        names = [names] if isinstance(names, str) else list(names)
        m = np.zeros(self.n_voxels, bool)
        for n in names:
            if n not in self.rois:
                raise KeyError(f"ROI {n!r} not in subject (has {self.roi_names()})")
            m |= np.asarray(self.rois[n], bool)
        return m

    # --- summary -------------------------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """What ``neurolens inspect --json`` prints. Reads only small tables, never the betas."""
        split = np.asarray(self.trials.split)
        test_imgs, groups = self.repeat_groups("test") if np.any(split == 1) else (np.zeros(0), np.zeros((0, 0)))
        return {
            "name": self.name,
            "format": self.format,
            "path": None if self.path is None else str(self.path),
            "n_trials": self.n_trials,
            "n_voxels": self.n_voxels,
            "n_images": self.n_images,
            "image_shape": list(self.image_shape),
            "betas_dtype": str(self.betas.dtype),
            "rois": {n: int(np.count_nonzero(m)) for n, m in self.rois.items()},
            "splits": {s: int(np.count_nonzero(split == c)) for s, c in SPLIT_CODES.items()},
            "n_train_images": int(len(self.split_images("train"))) if np.any(split == 0) else 0,
            "n_test_images": int(len(test_imgs)),
            "repeats": int(groups.shape[1]) if groups.size else 0,
            "n_sessions": int(len(np.unique(np.asarray(self.trials.session)))),
            "n_categories": len(self.stimuli.categories),
            "has_captions": self.stimuli.captions is not None,
            "surface": self.voxels.has_surface,
            "volume": self.volume is not None,
            "simulation": self.is_simulation,
            "ground_truth": sorted(self.ground_truth) if self.ground_truth else [],
            "n_prior_images": 0 if self.prior_images is None else int(self.prior_images.shape[0]),
            "preprocessing": list(self.provenance.get("preprocessing", [])),
        }

    def __repr__(self) -> str:
        return (
            f"Subject({self.name!r}, format={self.format!r}, n_trials={self.n_trials}, n_voxels={self.n_voxels}, "
            f"n_images={self.n_images})"
        )
