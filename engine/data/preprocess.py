"""Preprocessing of a ``Subject``: explicit steps, each recorded in the subject's provenance.

Every function takes a subject and returns a new in-memory subject with one more entry in
``provenance["preprocessing"]`` (``{"step": name, ...parameters}``), which ``neurolens inspect`` shows. Betas keep their
dtype (float16 stays float16) and are processed in row blocks with float32 temporaries, so a 30,000 × 15,724 subject
never holds a float64 copy.

Statistics are computed from training trials only unless ``include_test=True`` is asked for explicitly.

Recommended order (what ``apply`` does): ROI selection → noise-ceiling threshold → z-score → test-repeat averaging, so
z-score statistics come from single training trials of the voxels that are kept.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from engine.config import Config, check
from engine.data.normalized import NormalizedBetas
from engine.data.readers.kernels import column_moments, rows_per_block, shifted_into, shifted_moments
from engine.data.subject import Subject, TrialTable
from engine.errors import ConfigError, DataError

ZSCORE_SCOPES = ("voxel", "global", "session", "none")
_BLOCK = 512


@dataclass(frozen=True)
class PreprocessConfig(Config):
    """What ``apply`` does, in this order: ``rois`` → ``min_noise_ceiling`` → ``zscore`` → ``average_test_repeats``."""

    zscore: str = "voxel"
    include_test: bool = False
    rois: list[str] = field(default_factory=list)
    min_noise_ceiling: float | None = None
    average_test_repeats: bool = False

    def __post_init__(self):
        check(self.zscore in ZSCORE_SCOPES, "PreprocessConfig", "zscore", f"one of {list(ZSCORE_SCOPES)}", self.zscore)
        ceiling = self.min_noise_ceiling
        check(ceiling is None or 0.0 <= float(ceiling) <= 1.0, "PreprocessConfig", "min_noise_ceiling",
              "a value in [0, 1]", ceiling)


def apply(subject: Subject, config: PreprocessConfig) -> Subject:
    """Run the configured steps in the documented order."""
    s = subject
    if config.rois:
        s = select_rois(s, config.rois)
    if config.min_noise_ceiling is not None:
        s = threshold_noise_ceiling(s, config.min_noise_ceiling)
    if config.zscore != "none":
        s = zscore(s, scope=config.zscore, include_test=config.include_test)
    if config.average_test_repeats:
        s = average_test_repeats(s)
    return s


# --- helpers -----------------------------------------------------------------------------------------------------------
def _derive(s: Subject, step: dict, **changes) -> Subject:
    prov = copy.deepcopy(s.provenance)
    prov["preprocessing"] = list(prov.get("preprocessing", [])) + [step]
    kw = dict(betas=s.betas, trials=s.trials, images=s.images, voxels=s.voxels, rois=s.rois, stimuli=s.stimuli,
              name=s.name, format=s.format, path=s.path, provenance=prov, ground_truth=s.ground_truth, volume=s.volume,
              prior_images=s.prior_images)
    kw.update(changes)
    return Subject(**kw)


def materialise(betas, on_block=None) -> np.ndarray:
    """A writable in-memory copy of the betas in their own dtype (lazy readers load once, in blocks).

    ``on_block(block, start)`` sees every row block once, in order and in the betas' dtype, while the copy is made
    (its return value is for lazy readers, see ``LazyBetas.load``).
    """
    if hasattr(betas, "load"):
        return betas.load(on_block=on_block)
    out = np.empty(betas.shape, np.dtype(betas.dtype))
    step = rows_per_block(betas.shape[1])
    for s in range(0, betas.shape[0], step):
        blk = out[s : s + step]
        blk[...] = betas[s : s + step]
        if on_block is not None:
            on_block(blk, s)
    return out


class _Moments:
    """Per-group, per-voxel sums of shifted values and their squares, gathered block by block (float16 or float32).

    ``group`` (n_trials,) gives each trial's statistics group (-1 = not used, e.g. test trials). Values are shifted by
    the first block's mean per voxel before squaring, which keeps the one-pass variance accurate; sums are float64.
    Unused rows get weight 0 (or are zeroed in the scratch block), so they cannot influence the statistics, even
    numerically.

    With the native kernel, each block is one fused pass, and a call returns the block's max |value| when the block
    is certified finite (its sums stayed finite; 0 * Inf is NaN, so unused rows are covered too): the loader then
    skips its own validation pass. Otherwise blocks of ~1 M values stay in the CPU cache across the shift, sum and
    square passes, and the call returns None.
    """

    def __init__(self, group: np.ndarray, n_groups: int, n_voxels: int):
        self.group = group
        self.n_groups = n_groups
        self.n = np.bincount(group[group >= 0], minlength=n_groups).astype(np.float64)
        self.s1 = np.zeros((n_groups, n_voxels))
        self.s2 = np.zeros((n_groups, n_voxels))
        self.shift: np.ndarray | None = None
        self._tmp: np.ndarray | None = None
        # per-block bookkeeping in O(1): used rows before each row, and each group's row weights (built on first use)
        self._used_before = np.concatenate([[0], np.cumsum(group >= 0)])
        self._weights: dict[int, np.ndarray] = {}

    def __call__(self, blk: np.ndarray, start: int) -> float | None:
        end = start + len(blk)
        if self._used_before[end] == self._used_before[start]:
            return None  # no row of this block counts (e.g. test trials only)
        g = self.group[start:end]
        used = g >= 0
        if self.shift is None:
            self.shift = self._first_mean(blk, used)
        gids = [0] if self.n_groups == 1 else [int(x) for x in np.unique(g[used])]
        native = self._native(blk, start, gids)
        if native is not None:
            return native
        if self._tmp is None or self._tmp.shape[0] < len(blk):
            self._tmp = np.empty((len(blk), blk.shape[1]), np.float32)
        d = self._tmp[: len(blk)]
        shifted_into(d, blk, self.shift)  # float16 or float32 in, float32 out
        if len(gids) == 1:  # the usual case, e.g. NSD training trials with test trials between them
            d[~used] = 0.0
            s1, s2 = column_moments(d)
            self.s1[gids[0]] += s1
            self.s2[gids[0]] += s2
            return None
        for gid in gids:  # a block spanning sessions
            s1, s2 = column_moments(d[g == gid])
            self.s1[gid] += s1
            self.s2[gid] += s2
        return None

    def _native(self, blk: np.ndarray, start: int, gids: list[int]) -> float | None:
        """One fused pass per group in the block; the block's max |value| if its sums stayed finite, else None."""
        maxabs = None
        for gid in gids:
            if gid not in self._weights:
                self._weights[gid] = (self.group == gid).astype(np.float32)
            w = self._weights[gid][start : start + len(blk)]
            maxabs = shifted_moments(blk, self.shift, w, self.s1[gid], self.s2[gid])
            if maxabs is None:
                return None
        # a NaN or Inf, in a counted row or not, makes some sums non-finite (s1 alone suffices: its terms are w·d)
        return maxabs if all(np.isfinite(self.s1[gid]).all() for gid in gids) else None

    @staticmethod
    def _first_mean(blk: np.ndarray, used: np.ndarray) -> np.ndarray:
        s1, s2 = np.zeros(blk.shape[1]), np.zeros(blk.shape[1])
        w = used.astype(np.float32)
        if shifted_moments(blk, np.zeros(blk.shape[1], np.float32), w, s1, s2) is not None:
            return (s1 / w.sum()).astype(np.float32)  # a non-finite mean is caught by the loader's check of this block
        return np.asarray(blk[used], np.float32).mean(axis=0, dtype=np.float64).astype(np.float32)

    def mean_m2(self) -> tuple[np.ndarray, np.ndarray]:
        n = np.maximum(self.n, 1)[:, None]
        shift = 0.0 if self.shift is None else self.shift.astype(np.float64)
        mean = shift + self.s1 / n
        m2 = np.maximum(self.s2 - self.s1 * self.s1 / n, 0.0)
        return mean, m2


def _zscored(X, group: np.ndarray | None, mean: np.ndarray, inv: np.ndarray) -> NormalizedBetas:
    """``X`` read as ``(X - mean[g]) * inv[g]`` (``group`` None: one group, row 0 of mean/inv), without a pass over X."""
    inv = np.asarray(inv, np.float64)
    return NormalizedBetas(X, inv.astype(np.float32), (-np.asarray(mean, np.float64) * inv).astype(np.float32), group)


# --- steps -------------------------------------------------------------------------------------------------------------
def zscore(subject: Subject, scope: str = "voxel", *, include_test: bool = False, ddof: int = 0) -> Subject:
    """Z-score the betas.

    Parameters
    ----------
    scope : {"voxel", "global", "session"}
        ``voxel``: each voxel with its own mean/std (the NSD/MindEyeV2 convention); ``global``: one scalar mean/std
        over the whole matrix (GOD/BOLD5000 in MinD-Vis); ``session``: per voxel, separately within each session
        (a session without training trials uses the statistics of all training trials).
    include_test : bool
        Also use test trials for the statistics. Off by default: test data must not leak into normalisation.
    ddof : int
        Delta degrees of freedom of the standard deviation.

    Returns
    -------
    Subject whose betas (n_trials, n_voxels, input dtype) read z-scored: a ``NormalizedBetas`` view over the loaded
    matrix that applies the statistics to the rows as they are read. Statistics are gathered in the same pass that
    loads the betas; nothing is written back, so the subject holds one copy of the betas.
    """
    if scope not in ZSCORE_SCOPES or scope == "none":
        raise ConfigError(f"zscore scope: expected one of {list(ZSCORE_SCOPES[:3])}, found {scope!r}")
    split = np.asarray(subject.trials.split)
    used = np.ones(subject.n_trials, bool) if include_test else split == 0
    if used.sum() < 2:
        raise DataError(subject.path or subject.name, "too few training trials to z-score",
                        expected="at least 2 training trials", found=int(used.sum()))
    step = {"step": "zscore", "scope": scope, "statistics": "all trials (include_test)" if include_test else "train",
            "ddof": ddof}
    if scope == "session":
        sessions, sess_idx = np.unique(np.asarray(subject.trials.session), return_inverse=True)
        sess_idx = sess_idx.reshape(-1)
        group = np.where(used, sess_idx, -1)
        n_groups = len(sessions)
    else:
        group = np.where(used, 0, -1)
        n_groups = 1
    acc = _Moments(group, n_groups, subject.n_voxels)
    X = materialise(subject.betas, on_block=acc)
    mean, m2 = acc.mean_m2()
    n = acc.n[:, None]
    if scope == "global":
        n_tot = float(acc.n[0])
        g_mean = float(mean[0].mean())
        total = m2[0].sum() + n_tot * np.sum((mean[0] - g_mean) ** 2)
        g_std = float(np.sqrt(total / max(n_tot * subject.n_voxels - ddof, 1)))
        step.update(mean=g_mean, std=g_std)
        X = _zscored(X, None, np.full((1, subject.n_voxels), g_mean), np.full((1, subject.n_voxels), 1.0 / (g_std or 1.0)))
    else:
        std = np.sqrt(m2 / np.maximum(n - ddof, 1))
        if scope == "session":
            empty = acc.n < 2
            if empty.any():  # sessions without (enough) training trials: statistics of all training trials
                tot_n = acc.n.sum()
                all_mean = (mean * acc.n[:, None]).sum(0) / tot_n
                all_m2 = (m2 + acc.n[:, None] * (mean - all_mean) ** 2).sum(0)
                mean[empty] = all_mean
                std[empty] = np.sqrt(all_m2 / max(tot_n - ddof, 1))
            step.update(n_sessions=int(n_groups),
                        sessions_without_train=[int(x) for x in sessions[empty]])
            rows_group = sess_idx
        else:
            rows_group = None
        step["n_constant_voxels"] = int(np.count_nonzero(std == 0))
        X = _zscored(X, rows_group, mean, 1.0 / np.where(std > 0, std, 1.0))
    step["n_trials_used"] = int(used.sum())
    return _derive(subject, step, betas=X)


def average_test_repeats(subject: Subject) -> Subject:
    """Replace the test trials of each image by their voxel mean (one test trial per image, repeat 0).

    Training trials are kept as single trials, in their order; averaged test trials follow, in ascending image order.
    The alternative (keep repeats, average model outputs) is simply not calling this.
    """
    split = np.asarray(subject.trials.split)
    if not np.any(split == 1):
        raise DataError(subject.path or subject.name, "no test trials to average", expected="test trials", found=0)
    imgs, groups = subject.repeat_groups("test")
    counts = (groups >= 0).sum(axis=1)
    train = np.flatnonzero(split == 0)
    n_vox = subject.n_voxels
    out = np.empty((train.size + len(imgs), n_vox), np.dtype(subject.betas.dtype))
    for s in range(0, train.size, _BLOCK):
        e = min(train.size, s + _BLOCK)
        out[s:e] = subject.betas[train[s:e]]
    for g in range(len(imgs)):
        rows = np.sort(groups[g, : counts[g]])
        out[train.size + g] = np.asarray(subject.betas[rows], np.float32).mean(axis=0)
    t = subject.trials
    first = groups[:, 0]
    trials = TrialTable(
        image_index=np.concatenate([np.asarray(t.image_index)[train], imgs]).astype(np.int64),
        session=np.concatenate([np.asarray(t.session)[train], np.asarray(t.session)[first]]).astype(np.int64),
        run=np.concatenate([np.asarray(t.run)[train], np.asarray(t.run)[first]]).astype(np.int64),
        repeat=np.concatenate([np.asarray(t.repeat)[train], np.zeros(len(imgs), np.int64)]).astype(np.int64),
        split=np.concatenate([np.zeros(train.size, np.int8), np.ones(len(imgs), np.int8)]),
    )
    step = {"step": "average_test_repeats", "n_images": int(len(imgs)), "min_repeats": int(counts.min()),
            "max_repeats": int(counts.max()), "average_of": "voxels"}
    return _derive(subject, step, betas=out, trials=trials)


def _take_voxels(subject: Subject, keep: np.ndarray, step: dict) -> Subject:
    keep = np.asarray(keep, bool)
    if not keep.any():
        raise DataError(subject.path or subject.name, "the selection leaves no voxels", expected="at least one voxel",
                        found="0 voxels")
    out = np.empty((subject.n_trials, int(keep.sum())), np.dtype(subject.betas.dtype))
    for s in range(0, subject.n_trials, _BLOCK):
        out[s : s + _BLOCK] = np.asarray(subject.betas[s : s + _BLOCK])[:, keep]
    rois, dropped = {}, []
    for n, m in subject.rois.items():
        sub = np.asarray(m, bool)[keep]
        if sub.any():
            rois[n] = sub
        else:
            dropped.append(n)
    step = {**step, "n_voxels": int(keep.sum()), "of": int(keep.size)}
    if dropped:
        step["rois_dropped"] = dropped
    # Simulation ground truth is per voxel (pRF, tuning, noise): it must follow the voxels it describes.
    gt = subject.ground_truth
    if gt:
        gt = {k: (np.asarray(v)[keep] if np.ndim(v) and np.shape(v)[0] == keep.size else v) for k, v in gt.items()}
    return _derive(subject, step, betas=out, voxels=subject.voxels.take(np.flatnonzero(keep)), rois=rois,
                   ground_truth=gt)


def select_rois(subject: Subject, names: list[str] | str) -> Subject:
    """Keep only the voxels in the union of ``names``; other ROIs are cut to those voxels (dropped if emptied)."""
    names = [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in subject.rois]
    if unknown:
        raise ConfigError(f"{subject.path or subject.name}: ROI {unknown[0]!r} not in the subject "
                          f"(expected one of {subject.roi_names()})")
    return _take_voxels(subject, subject.roi_mask(names), {"step": "select_rois", "rois": names})


def threshold_noise_ceiling(subject: Subject, min_value: float) -> Subject:
    """Keep voxels whose noise ceiling is at least ``min_value`` (the data must carry one)."""
    nc = np.asarray(subject.voxels.noise_ceiling, np.float32)
    if not np.isfinite(nc).any():
        raise DataError(subject.path or subject.name, "this subject carries no noise ceiling",
                        key="noise_ceiling", expected="per-voxel values", found="all unknown (NaN)")
    keep = np.isfinite(nc) & (nc >= float(min_value))
    return _take_voxels(subject, keep, {"step": "noise_ceiling_threshold", "min": float(min_value)})
