"""The reconstructions of a run, read back for people: each image with its ground truth, blurry image, samples, oracle
samples and per-sample metrics (``TrialRecon``), the 2-way identification among the images shown together, the
comparison grid and the metrics CSV. No Qt: the app's Reconstruction panel shows these, a script can use them too.

Where a run keeps them: ``RUN_DIR/recon/gui/image-NNNNN/`` (single images reconstructed from the app),
``RUN_DIR/recon/test/`` ("Reconstruct all", the CLI's default folder too), and beside each folder
``<folder>.oracle/`` (the same images decoded from their TRUE embeddings: the decoder's ceiling).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.errors import NeuroLensError
from engine.events import Progress
from engine.recon.index import INDEX_FILE
from engine.recon.reconstruct_config import PANEL_SETTINGS, ReconstructConfig
from engine.train.run import Run

GUI_DIR = "gui"  # RUN_DIR/recon/gui/image-NNNNN: single trials reconstructed from the panel
ALL_SPLIT = "test"  # "Reconstruct all": the test split's default folder (Run.recon_folder, the CLI's default too)
ORACLE_SUFFIX = ".oracle"  # <folder>.oracle: the same images from their true embeddings (the decoder's ceiling)


@dataclass
class TrialRecon:
    """One reconstructed image, as numpy copies (made in the worker, shown in the GUI thread)."""

    image_index: int
    trials: list
    category: str
    gt: np.ndarray  # (H, W, 3) uint8
    blurry: np.ndarray | None  # (H, W, 3) uint8
    samples: np.ndarray  # (K, H, W, 3) uint8
    metrics: dict = field(default_factory=dict)  # name -> (K,) float
    settings: dict = field(default_factory=dict)
    folder: str = ""
    features: dict = field(default_factory=dict)  # extractor name -> (gt (D,), samples (K, D)), for the 2-way
    oracle: np.ndarray | None = None  # (K, H, W, 3) uint8: samples from the true image embedding
    oracle_metrics: dict = field(default_factory=dict)  # name -> (K,) float
    oracle_features: dict = field(default_factory=dict)  # extractor name -> oracle samples' features (K, D)

    def __post_init__(self) -> None:
        self._summarise()

    def set_metric(self, name: str, values) -> None:
        self.metrics[name] = np.asarray(values, np.float64)
        self._summarise()

    def _summarise(self) -> None:
        # the mean of each metric over the samples, computed once: the table, the ranking and the aggregate line read
        # it for every image on each redraw (recomputing it made a 100-image result take ~70 ms of GUI time)
        with np.errstate(all="ignore"):
            self._summary = {k: float(np.nanmean(v)) if np.isfinite(v).any() else float("nan")
                             for k, v in ((k, np.asarray(v, np.float64)) for k, v in self.metrics.items())}

    def summary(self) -> dict[str, float]:
        """Mean over the samples of each metric."""
        return dict(self._summary)

    def same_settings(self, settings: dict) -> bool:
        return all(self.settings.get(k) == settings.get(k) for k in PANEL_SETTINGS)


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _extractors() -> list:
    """The demo embedder as feature extractor (correlation distance), when it can be loaded."""
    from engine.models.embedders.features import FeatureUnavailable, load_feature_extractor

    try:
        return [load_feature_extractor("demo", device="cpu")]
    except (FeatureUnavailable, NeuroLensError, OSError):
        return []


def load_recon_folder(folder, extractors=None) -> list[TrialRecon]:
    """Every image of a reconstruction folder (``index.json``) with its per-trial metrics."""
    from engine.recon.index import read_index

    folder = Path(folder)
    index = read_index(folder)
    ext = _extractors() if extractors is None else extractors
    out = []
    for it in index.items:
        gt = _png(folder / it.ground_truth)
        samples = np.stack([_png(folder / s) for s in it.samples])
        blurry = _png(folder / it.blurry) if it.blurry else None
        gt_features = {e.name: _features(e, gt[None])[0] for e in ext}
        metrics, sample_features = _sample_metrics(gt, samples, ext, gt_features)
        settings = {k: index.settings.get(k) for k in PANEL_SETTINGS}
        features = {n: (gt_features[n], sample_features[n]) for n in gt_features}
        out.append(TrialRecon(int(it.image_index), list(it.trials), it.category or "", gt, blurry, samples, metrics,
                              settings, str(folder), features))
    oracle = oracle_folder(folder)
    if (oracle / INDEX_FILE).is_file():
        by_image = {it.image_index: it for it in read_index(oracle).items}
        for r in out:
            it = by_image.get(r.image_index)
            if it is not None:
                r.oracle = np.stack([_png(oracle / s) for s in it.samples])
                r.oracle_metrics, r.oracle_features = _sample_metrics(r.gt, r.oracle, ext,
                                                                      {n: f[0] for n, f in r.features.items()})
    add_two_way(out)
    return out


def _sample_metrics(gt, samples, ext, gt_features: dict) -> tuple[dict, dict]:
    """Per-sample metrics (``per_trial_metrics``'s low-level ones and ``corr-dist NAME``) and each extractor's sample
    features, which the 2-way needs too; ``gt_features`` per extractor name: every image goes through each extractor
    once."""
    from engine.metrics.trial import per_trial_metrics
    from engine.metrics.identification import correlation_distance

    metrics = {k: np.asarray(v, np.float64) for k, v in per_trial_metrics(gt, samples).items()}
    features = {}
    for e in ext:
        features[e.name] = f = _features(e, samples)
        metrics[f"corr-dist {e.name}"] = np.asarray(
            correlation_distance(np.repeat(gt_features[e.name][None], len(f), 0), f), np.float64)
    return metrics, features


def _features(ext, images) -> np.ndarray:
    from engine.metrics.lowlevel import prepare_images

    return np.asarray(ext(prepare_images(images)), np.float64).reshape(len(images), -1)


def add_two_way(results) -> None:
    """Per sample, the 2-way identification of each image against the other reconstructed images' ground truths (as
    ``neurolens evaluate`` scores a folder): ``2-way NAME`` per feature extractor, for the oracle's samples too. Needs
    two images or more; call it again when images are added (it recomputes every image's values)."""
    from engine.metrics.identification import two_way_of_samples

    results = list(results)
    if len(results) < 2:
        return
    for name in dict.fromkeys(n for r in results for n in r.features):
        have = [r for r in results if name in r.features]
        if len(have) < 2:
            continue
        gts = np.stack([r.features[name][0] for r in have])
        samples = np.concatenate([r.features[name][1] for r in have])
        own = np.concatenate([np.full(len(r.features[name][1]), i) for i, r in enumerate(have)])
        scores = two_way_of_samples(gts, samples, own)
        start = 0
        for r in have:
            k = len(r.features[name][1])
            r.set_metric(f"2-way {name}", scores[start:start + k])
            start += k
        oracle = [(i, r) for i, r in enumerate(have) if name in r.oracle_features]
        if oracle:  # the oracle's samples against the same ground truths, so the two columns compare
            scores = two_way_of_samples(gts, np.concatenate([r.oracle_features[name] for _, r in oracle]),
                                        np.concatenate([np.full(len(r.oracle_features[name]), i) for i, r in oracle]))
            start = 0
            for _, r in oracle:
                k = len(r.oracle_features[name])
                r.oracle_metrics[f"2-way {name}"] = scores[start:start + k]
                start += k


def oracle_folder(folder) -> Path:
    """Where the oracle reconstructions of a reconstruction folder go (beside it)."""
    folder = Path(folder)
    return folder.with_name(folder.name + ORACLE_SUFFIX)


def gui_folder(run_dir, image_index: int) -> Path:
    """Where the app writes the reconstruction of one image of a run."""
    return Run(run_dir).recon_dir / GUI_DIR / f"image-{int(image_index):05d}"


def all_folder(run_dir) -> Path:
    """Where "Reconstruct all" writes (the CLI's default folder of the test split)."""
    return Run(run_dir).recon_folder(ALL_SPLIT)


def recon_folders(run_dir) -> list[Path]:
    """Reconstruction folders of a run, oldest first (so newer single-trial results win)."""
    candidates = [all_folder(run_dir), *sorted((Run(run_dir).recon_dir / GUI_DIR).glob("image-*"))]
    found = [p for p in candidates if (p / INDEX_FILE).is_file() and not p.name.endswith(ORACLE_SUFFIX)]
    return sorted(found, key=lambda p: (p / INDEX_FILE).stat().st_mtime)


def load_run_recons(run_dir) -> dict[int, TrialRecon]:
    """Every reconstructed image of a run, by image index (pool thread: reads PNGs, computes metrics)."""
    ext = _extractors()
    out: dict[int, TrialRecon] = {}
    for folder in recon_folders(run_dir):
        try:
            for r in load_recon_folder(folder, ext):
                out[r.image_index] = r
        except (NeuroLensError, OSError):
            continue  # from another version, or being replaced right now: skipped, the others still show
    add_two_way(out.values())
    return out


def reconstruct_trials_job(run_dir, subject, trials, config: ReconstructConfig, out_dir, oracle: bool, cancel):
    """Job: ``reconstruct_job`` for ``trials`` (None = the whole test split) with ``config``, with ``oracle`` the same
    images from their true embeddings beside them, then the results with metrics."""
    from engine.recon.reconstruct import reconstruct_job

    yield from reconstruct_job(run_dir, config, subject=subject, split="test", trials=trials, out_dir=out_dir,
                               cancel=cancel)
    cancel.raise_if_set()
    if oracle:
        from engine.events import Log

        try:
            yield from reconstruct_job(run_dir, config.replace(source="oracle"),
                                       subject=subject, split="test", trials=trials, out_dir=oracle_folder(out_dir),
                                       cancel=cancel)
        except NeuroLensError as exc:  # e.g. no local embedder for the run's targets: the brain result still shows
            yield Log(f"oracle row unavailable: {exc}", level="warning")
        cancel.raise_if_set()
    yield Progress(0, 1, stage="metrics", message="computing the metrics")
    results = load_recon_folder(out_dir)
    yield Progress(1, 1, stage="metrics", message="done")
    return results


def comparison_grid(results: list[TrialRecon], size: int = 96, pad: int = 4) -> np.ndarray:
    """One row per image: ground truth, blurry (when any), samples (each (H, W, 3) uint8, as ``TrialRecon`` holds
    them); (H, W, 3) uint8 on white."""
    if not results:
        raise ValueError("no reconstructions to put in the grid")
    from PIL import Image

    has_blurry = any(r.blurry is not None for r in results)
    k = max(len(r.samples) for r in results)
    cols = 1 + int(has_blurry) + k
    grid = np.full((len(results) * (size + pad) + pad, cols * (size + pad) + pad, 3), 255, np.uint8)

    def put(img, row, col):
        tile = np.asarray(Image.fromarray(np.asarray(img, np.uint8)).resize((size, size), Image.Resampling.BICUBIC))
        y, x = pad + row * (size + pad), pad + col * (size + pad)
        grid[y:y + size, x:x + size] = tile

    for i, r in enumerate(results):
        put(r.gt, i, 0)
        if r.blurry is not None:
            put(r.blurry, i, 1)
        for j, s in enumerate(r.samples):
            put(s, i, 1 + int(has_blurry) + j)
    return grid


def metric_names(results) -> list[str]:
    names: list[str] = []
    for r in results:
        names += [k for k in r.metrics if k not in names]
    return names


def write_metrics_csv(path, results: list[TrialRecon]) -> Path:
    """One row per image (metrics averaged over its samples), then the mean and SD over images."""
    import io

    from engine.atomic import atomic_write_text

    names = metric_names(results)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["image_index", "category", "trials", "n_samples", *names])
    for r in results:
        s = r.summary()
        w.writerow([r.image_index, r.category, " ".join(map(str, r.trials)), len(r.samples),
                    *[f"{s[n]:.6g}" if n in s else "" for n in names]])
    table = np.array([[r.summary().get(n, np.nan) for n in names] for r in results], np.float64)
    if len(results):
        w.writerow(["mean", "", "", "", *[f"{v:.6g}" for v in np.nanmean(table, axis=0)]])
        w.writerow(["sd", "", "", "", *[f"{v:.6g}" for v in np.nanstd(table, axis=0)]])
    return atomic_write_text(path, buf.getvalue())


