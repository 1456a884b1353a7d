"""``ReconstructionPanel``: click a held-out trial to reconstruct it from the selected run, and compare.

The gallery shows the test images of the subject. Clicking one runs ``engine.recon.reconstruct.reconstruct_job`` for
that trial in a worker (per-step progress; ``Preview`` events show the image being denoised), then shows the ground
truth, the blurry image and the K samples side by side with the trial's metrics
(``engine.metrics.evaluate.per_trial_metrics``). "Reconstruct all" does the whole test set. The metrics table lists
every reconstructed image of the run (sortable, best and worst one click away) and exports as CSV; the comparison grid
exports as PNG.

Reconstruction needs a decoder: ``neurolens finetune`` (``engine.recon.finetune.finetune_job``) writes
``RUN_DIR/decoder/``; runs that predict the demo embedding can also use the demo generator directly. "Fine-tune
decoder" runs that job from here. Results of single trials go to ``RUN_DIR/recon/gui/image-NNNNN/``, those of
"Reconstruct all" to ``RUN_DIR/recon/test/``; both are read back when the run is selected again.

"Oracle" (on by default) also decodes the TRUE image embedding of each image through the same decoder
(``reconstruct_job(source="oracle")``, into ``<folder>.oracle/``) and shows it beside the brain's samples, with its
metrics in their own column: what the generator can do, so what the brain adds is in plain sight.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QSize, Qt, Slot
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDoubleSpinBox, QFileDialog, QGridLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QListWidget, QListWidgetItem,
                               QProgressBar, QPushButton, QScrollArea, QSpinBox, QTableWidget, QTableWidgetItem,
                               QVBoxLayout, QWidget)

from engine.cli.output import format_eta
from engine.errors import NeuroLensError
from engine.events import Progress
from engine.recon import defaults as recon_defaults
from neurolens_app.panels.job_runner import slot_busy, start_panel_job
from neurolens_app.widgets.image_strip import ImageTile, pixmap, to_uint8_rgb
from neurolens_app.widgets.run_picker import RunPicker
from neurolens_app.widgets.splitters import H, V, stretch_splitter
from neurolens_app.workers.short_job import submit

RECON_DIR = "recon"
GUI_DIR = "gui"  # RUN_DIR/recon/gui/image-NNNNN: single trials reconstructed from the panel
ALL_DIR = "test"  # RUN_DIR/recon/test: "Reconstruct all" (the CLI's default folder too)
ORACLE_SUFFIX = ".oracle"  # <folder>.oracle: the same images from their true embeddings (the decoder's ceiling)
LOWER_IS_BETTER = ("MSE", "corr-dist")
SETTING_KEYS = ("guidance", "steps", "sampler", "seed", "samples", "img2img_strength")
# MindEye's low-level route: start the diffusion from the blurry reconstruction and re-run this share of the schedule.
# On demo subject 1 (demo-ridge, 2 samples, 25 steps, 100 test images) 0.8 raised PixCorr .277 → .348, SSIM
# .822 → .877, 2-way .860 → .922 and lowered corr-dist .367 → .269 against starting from noise (bench_demo_recon.py,
# docs/benchmarks.md).
DEFAULT_IMG2IMG = 0.8


def higher_is_better(metric: str) -> bool:
    return not any(metric.startswith(p) for p in LOWER_IS_BETTER)


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
        return all(self.settings.get(k) == settings.get(k) for k in SETTING_KEYS)


def _png(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def _extractors() -> list:
    """The demo embedder as feature extractor (correlation distance), when it can be loaded."""
    from engine.metrics.features import FeatureUnavailable, load_feature_extractor

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
        settings = {k: index.settings.get(k) for k in SETTING_KEYS}
        features = {n: (gt_features[n], sample_features[n]) for n in gt_features}
        out.append(TrialRecon(int(it.image_index), list(it.trials), it.category or "", gt, blurry, samples, metrics,
                              settings, str(folder), features))
    oracle = oracle_folder(folder)
    if (oracle / "index.json").is_file():
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
    from engine.metrics.evaluate import per_trial_metrics
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


def recon_folders(run_dir) -> list[Path]:
    """Reconstruction folders of a run, oldest first (so newer single-trial results win)."""
    root = Path(run_dir) / RECON_DIR
    found = [p for p in [root / ALL_DIR, *sorted((root / GUI_DIR).glob("image-*"))]
             if (p / "index.json").is_file() and not p.name.endswith(ORACLE_SUFFIX)]
    return sorted(found, key=lambda p: (p / "index.json").stat().st_mtime)


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


def reconstruct_trials_job(run_dir, subject, trials, settings: dict, out_dir, device, cancel):
    """Job: ``reconstruct_job`` for ``trials`` (None = the whole test split), then the results with metrics."""
    from engine.recon.reconstruct import reconstruct_job

    yield from reconstruct_job(run_dir, subject, split="test", trials=trials, samples=settings["samples"],
                               guidance=settings["guidance"], steps=settings["steps"], sampler=settings["sampler"],
                               seed=settings["seed"], img2img_strength=settings.get("img2img_strength"),
                               out_dir=out_dir, device=device, cancel=cancel)
    cancel.raise_if_set()
    if settings.get("oracle"):
        from engine.events import Log

        try:
            yield from reconstruct_job(run_dir, subject, split="test", trials=trials, samples=settings["samples"],
                                       guidance=settings["guidance"], steps=settings["steps"],
                                       sampler=settings["sampler"], seed=settings["seed"], source="oracle",
                                       out_dir=oracle_folder(out_dir), device=device, cancel=cancel)
        except NeuroLensError as exc:  # e.g. no local embedder for the run's targets: the brain result still shows
            yield Log(f"oracle row unavailable: {exc}", level="warning")
        cancel.raise_if_set()
    yield Progress(0, 1, stage="metrics", message="computing the metrics")
    results = load_recon_folder(out_dir)
    yield Progress(1, 1, stage="metrics", message="done")
    return results


def decoder_state(run_dir) -> tuple[str, bool, bool]:
    """(description, can reconstruct, has a blurry image to start from) of a run's decoder, from its small files."""
    from engine.recon.finetune import DECODER_DIR, DECODER_FILE
    from engine.train.predict import MODEL_INFO

    run = Path(run_dir)
    dec = run / DECODER_DIR / DECODER_FILE
    if dec.is_file():
        try:
            meta = json.loads(dec.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            meta = {}
        # fine-tuning always leaves a blurry image: the encoder's low-level head, or a ridge from the embeddings
        return (f"Decoder: fine-tuned ({meta.get('generator', '?')} generator, UNet {meta.get('unet', 'frozen')}, "
                f"{meta.get('steps', '?')} steps)", True, True)
    try:
        info = json.loads((run / "model" / MODEL_INFO).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return "No trained model in this run yet", False, False
    if info.get("embedder") == "stimulus-pixels":
        from engine.recon.pixel_decoder import decoder_label

        return (f"Decoder: the pixel decoder's predicted images ({decoder_label(info)}) are the reconstructions (no "
                "generator); for sharper images, train a generator on this subject's images", True, False)
    if info.get("embedder") == "demo" and info.get("target") == "pooled":
        return ("Decoder: the demo generator reads this run's demo embeddings directly (zero-shot); "
                "fine-tuning adapts it to the brain predictions", True, _encoder_has_blurry_head(run))
    return f"No decoder: this run predicts '{info.get('embedder')}' targets; fine-tune a decoder first", False, False


def _encoder_has_blurry_head(run: Path) -> bool:
    try:
        cfg = json.loads((run / "model" / "encoder" / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(isinstance(cfg, dict) and (cfg.get("blurry") or cfg.get("config", {}).get("blurry")))


def comparison_grid(results: list[TrialRecon], size: int = 96, pad: int = 4) -> np.ndarray:
    """One row per image: ground truth, blurry (when any), samples; (H, W, 3) uint8 on white."""
    if not results:
        raise ValueError("no reconstructions to put in the grid")
    from PIL import Image

    has_blurry = any(r.blurry is not None for r in results)
    k = max(len(r.samples) for r in results)
    cols = 1 + int(has_blurry) + k
    grid = np.full((len(results) * (size + pad) + pad, cols * (size + pad) + pad, 3), 255, np.uint8)

    def put(img, row, col):
        tile = np.asarray(Image.fromarray(to_uint8_rgb(img)).resize((size, size), Image.Resampling.BICUBIC))
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


class _NumItem(QTableWidgetItem):
    """Table cell sorted by its number."""

    def __lt__(self, other) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return super().__lt__(other)


def _num(value: float, fmt: str = "{:.3f}") -> _NumItem:
    it = _NumItem(fmt.format(value) if np.isfinite(value) else "–")
    it.setData(Qt.ItemDataRole.UserRole, float(value) if np.isfinite(value) else float("-inf"))
    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


class ReconstructionPanel(QWidget):
    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        self.results: dict[int, TrialRecon] = {}
        self.current_image: int | None = None
        self.worker = None
        self.run_dir: Path | None = None
        self.can_reconstruct = False
        self._load_job = None
        self._load_generation = 0
        self._build()
        self.state.subject_changed.connect(self._on_subject_changed)
        context.jobs.finished.connect(lambda _w: self._update_buttons())
        self._on_subject_changed(self.state.subject)

    # --- layout --------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        em = self.fontMetrics().height()
        top = QHBoxLayout()
        top.addWidget(QLabel("Run"))
        self.run_box = RunPicker(self.context, self._on_run_picked, label=lambda r: f"{r.path.name} ({r.kind})")
        self.run_box.setToolTip("Finished run whose brain predictions are decoded into images")
        top.addWidget(self.run_box, 1)
        self.decoder_label = QLabel("")
        self.decoder_label.setWordWrap(True)
        top.addWidget(self.decoder_label, 2)
        self.ft_epochs = QSpinBox()
        self.ft_epochs.setRange(1, 1000)
        self.ft_epochs.setValue(3)
        self.ft_epochs.setPrefix("epochs ")
        self.ft_epochs.setToolTip("Epochs of decoder fine-tuning")
        top.addWidget(self.ft_epochs)
        self.finetune_btn = QPushButton("Fine-tune decoder")
        self.finetune_btn.setToolTip("Train the generator's conditioning adapter (and a timestep router for MoE "
                                     "encoders) on this run's predictions of the training trials")
        self.finetune_btn.clicked.connect(self.start_finetune)
        top.addWidget(self.finetune_btn)
        self.generator_btn = QPushButton("Train a generator on this subject's images")
        self.generator_btn.setToolTip("Learn a small diffusion generator and its image embedder from this subject's "
                                      "training stimuli and prior images (never its test stimuli), into "
                                      "<subject>-generator/ beside the subject; then train a run with that folder as "
                                      "its targets' embedder and fine-tune it here. Cancel keeps the progress: press "
                                      "again to continue.")
        self.generator_btn.clicked.connect(self.start_generator_training)
        top.addWidget(self.generator_btn)

        ctl = QHBoxLayout()
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(recon_defaults.GUIDANCE)
        self.guidance.setToolTip("Classifier-free guidance scale (1 = no guidance)")
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(recon_defaults.STEPS)  # the CLI's default too
        self.steps.setToolTip("Denoising steps")
        self.sampler = QComboBox()
        self.sampler.addItems(["ddim", "dpmpp"])
        self.sampler.setToolTip("Sampler: DDIM or DPM-Solver++")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Base seed of the noise (each image and sample has its own seed derived from it)")
        self.samples = QSpinBox()
        self.samples.setRange(1, 16)
        self.samples.setValue(recon_defaults.SAMPLES)
        self.samples.setToolTip("Samples per image (K)")
        self.img2img = QDoubleSpinBox()
        self.img2img.setRange(0.0, 1.0)
        self.img2img.setSingleStep(0.05)
        self.img2img.setDecimals(2)
        self.img2img.setSpecialValueText("off")  # 0: start from noise
        self.img2img.setValue(DEFAULT_IMG2IMG)
        self._img2img_tip = ("Start from the blurry reconstruction (MindEye's low-level route) and re-run this share "
                             "of the denoising schedule; off = start from noise. 0.8 is the recommended value.")
        self.img2img.setToolTip(self._img2img_tip)
        for label, w in (("Guidance", self.guidance), ("Steps", self.steps), ("Sampler", self.sampler),
                         ("Seed", self.seed), ("Samples", self.samples), ("From blurry", self.img2img)):
            ctl.addWidget(QLabel(label))
            ctl.addWidget(w)
        self.oracle_box = QCheckBox("Oracle")
        self.oracle_box.setChecked(True)
        self.oracle_box.setToolTip("Also decode the TRUE embedding of each image through the same decoder: what the "
                                   "generator can do at best, beside what the brain gives")
        ctl.addWidget(self.oracle_box)
        ctl.addStretch(1)
        self.all_btn = QPushButton("Reconstruct all")
        self.all_btn.setToolTip("Reconstruct every test image with these settings (RUN_DIR/recon/test)")
        self.all_btn.clicked.connect(self.reconstruct_all)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the reconstruction or fine-tuning after the current step")
        self.cancel_btn.clicked.connect(self.cancel)
        ctl.addWidget(self.all_btn)
        ctl.addWidget(self.cancel_btn)

        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.gallery.setMovement(QListWidget.Movement.Static)
        self.gallery.setUniformItemSizes(True)
        self.gallery.setIconSize(QSize(int(3.5 * em), int(3.5 * em)))
        self.gallery.setGridSize(QSize(int(4.6 * em), int(5.2 * em)))
        self.gallery.setToolTip("Held-out test images: click one to reconstruct it (✓ = reconstructed)")
        self.gallery.itemClicked.connect(self._on_gallery_clicked)
        gal_box = QGroupBox("Test images")
        gl = QVBoxLayout(gal_box)
        gl.setContentsMargins(4, 4, 4, 4)
        gl.addWidget(self.gallery)
        gal_box.setMinimumWidth(int(12 * em))

        tile = int(9 * em)
        cmp_box = QGroupBox("Comparison")
        cl = QVBoxLayout(cmp_box)
        self.title = QLabel("Click a test image to reconstruct it")
        self.title.setStyleSheet("font-weight: bold;")
        cl.addWidget(self.title)
        self.tiles_row = QHBoxLayout()
        self.gt_tile = ImageTile("Ground truth", tile)
        self.blurry_tile = ImageTile("Blurry", tile)
        self.oracle_tile = ImageTile("Oracle", tile)
        self.oracle_tile.setToolTip("Sample 1 decoded from the TRUE image embedding (the decoder's ceiling)")
        self.tiles_row.addWidget(self.gt_tile)
        self.tiles_row.addWidget(self.oracle_tile)
        self.tiles_row.addWidget(self.blurry_tile)
        self.sample_tiles: list[ImageTile] = []
        self.tile_px = tile
        tiles_w = QWidget()
        tiles_w.setLayout(self.tiles_row)
        self.tiles_row.addStretch(1)
        scroll = QScrollArea()
        scroll.setWidget(tiles_w)
        scroll.setWidgetResizable(True)
        scroll.setMinimumHeight(tile + int(3 * em))
        scroll.setFrameShape(QScrollArea.Shape.NoFrame)
        cl.addWidget(scroll)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setFormat("No job running")
        cl.addWidget(self.progress)
        self.trial_metrics = QTableWidget(0, 0)
        self.trial_metrics.setToolTip("Metrics of the shown image: mean over samples, then each sample")
        self.trial_metrics.verticalHeader().setDefaultSectionSize(int(1.5 * em))
        self.trial_metrics.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        cl.addWidget(self.trial_metrics)
        cl.addStretch(1)

        tbl_box = QGroupBox("Metrics of every reconstructed image")
        tl = QVBoxLayout(tbl_box)
        trow = QHBoxLayout()
        self.rank_metric = QComboBox()
        self.rank_metric.setToolTip("Metric used by Best and Worst")
        self.best_btn = QPushButton("Best")
        self.best_btn.setToolTip("Show the image with the best value of the chosen metric")
        self.best_btn.clicked.connect(lambda: self.show_extreme(best=True))
        self.worst_btn = QPushButton("Worst")
        self.worst_btn.setToolTip("Show the image with the worst value of the chosen metric")
        self.worst_btn.clicked.connect(lambda: self.show_extreme(best=False))
        self.export_png_btn = QPushButton("Export grid…")
        self.export_png_btn.setToolTip("Save ground truth, blurry and samples of every image in the table as a PNG")
        self.export_png_btn.clicked.connect(self._export_png_dialog)
        self.export_csv_btn = QPushButton("Export CSV…")
        self.export_csv_btn.setToolTip("Save the metrics table (per image, mean and SD) as CSV")
        self.export_csv_btn.clicked.connect(self._export_csv_dialog)
        for w in (QLabel("Rank by"), self.rank_metric, self.best_btn, self.worst_btn):
            trow.addWidget(w)
        trow.addStretch(1)
        trow.addWidget(self.export_png_btn)
        trow.addWidget(self.export_csv_btn)
        tl.addLayout(trow)
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(int(1.5 * em))
        self.table.setToolTip("Click a column header to sort; click a row to show that image")
        self.table.itemSelectionChanged.connect(self._on_table_selected)
        tl.addWidget(self.table, 1)
        self.aggregate = QLabel("")
        self.aggregate.setWordWrap(True)
        self.aggregate.setToolTip("Mean ± SD over the reconstructed images")
        tl.addWidget(self.aggregate)

        split = stretch_splitter(H, (gal_box, 1), (stretch_splitter(V, (cmp_box, 2), (tbl_box, 3)), 3))
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top, 0, 0)
        lay.addLayout(ctl, 1, 0)
        lay.addWidget(split, 2, 0)
        lay.setRowStretch(2, 1)
        self._set_sample_tiles(self.samples.value())
        self._update_buttons()

    def _set_sample_tiles(self, k: int) -> None:
        while len(self.sample_tiles) < k:
            t = ImageTile(f"Sample {len(self.sample_tiles) + 1}", self.tile_px)
            self.tiles_row.insertWidget(self.tiles_row.count() - 1, t)
            self.sample_tiles.append(t)
        for i, t in enumerate(self.sample_tiles):
            t.setVisible(i < k)

    # --- subject, runs -------------------------------------------------------------------------------------------
    def settings(self) -> dict:
        return {"guidance": float(self.guidance.value()), "steps": int(self.steps.value()),
                "sampler": self.sampler.currentText(), "seed": int(self.seed.value()),
                "samples": int(self.samples.value()),
                "img2img_strength": (float(self.img2img.value()) if self.img2img.isEnabled() and self.img2img.value() > 0
                                     else None),
                "oracle": self.oracle_box.isChecked()}

    def _on_subject_changed(self, subject) -> None:
        self.gallery.clear()
        self.results = {}
        self.current_image = None
        # the thumbnails (one per test image, ~9 ms for 100) in their own event-loop turn, after the burst
        self.context.later(lambda s=subject: self._fill_gallery(s))
        # reading the run folders is disk work: its own event-loop turn, not part of the subject-change burst
        self.context.later(self.refresh_runs)
        self._show_results_table()
        self._show_trial(None)

    def _fill_gallery(self, subject) -> None:
        if subject is not self.state.subject:
            return  # another subject was opened meanwhile
        self.gallery.clear()
        if subject is not None:
            test = np.asarray(subject.split_indices("test"))
            images = np.asarray(subject.trials.image_index)[test]
            _, first = np.unique(images, return_index=True)
            cats, labels = subject.stimuli.categories, subject.stimuli.labels
            for j in sorted(first):
                img, trial = int(images[j]), int(test[j])
                it = QListWidgetItem(QIcon(pixmap(subject.images[img], self.gallery.iconSize().width())), str(img))
                it.setData(Qt.ItemDataRole.UserRole, trial)
                it.setData(Qt.ItemDataRole.UserRole + 1, img)
                cat = cats[int(labels[img])] if labels is not None and 0 <= int(labels[img]) < len(cats) else ""
                it.setToolTip(f"Image {img} ({cat}), first test trial {trial}")
                self.gallery.addItem(it)
        self._mark_gallery()

    def refresh_runs(self) -> None:
        self.run_box.refresh()

    def _on_run_picked(self, run: Path | None, force: bool) -> None:
        self._set_run(run, force=force)  # force: selected on purpose, read what the folder holds now

    def _set_run(self, run: Path | None, force: bool = False) -> None:
        if run == self.run_dir and run is not None and not force:
            self._update_decoder()
            return
        self.run_dir = run
        self.results = {}
        self._update_decoder()
        self._show_results_table()
        self._show_trial(None)
        if run is not None:
            self._load_generation += 1
            gen = self._load_generation
            # scoring reads the demo embedder (torch): wait for the engine preload rather than import it here
            self.context.when_engine_ready(lambda: self._load_recons(gen, run))

    def _load_recons(self, generation: int, run: Path) -> None:
        if generation != self._load_generation:
            return  # another run was chosen while the engine loaded
        self._load_job = submit(load_run_recons, run,
                                on_result=lambda res: self._on_recons_loaded(generation, res),
                                on_error=lambda e, tb: self.context.error_raised.emit("Reconstructions", e, tb))

    def _on_recons_loaded(self, generation: int, results: dict) -> None:
        if generation != self._load_generation:
            return
        self.results.update(results)
        self._show_results_table()
        if self.results:  # the comparison was cleared when the run was (re)selected: show the image again
            self.show_image(self.current_image if self.current_image in self.results else min(self.results))

    def _update_decoder(self) -> None:
        if self.run_dir is None:
            self.decoder_label.setText("No finished run: train one in the Training panel")
            self.can_reconstruct = False
        else:
            text, ok, has_blurry = decoder_state(self.run_dir)
            self.decoder_label.setText(text)
            self.can_reconstruct = ok
            self.img2img.setEnabled(has_blurry)
            self.img2img.setToolTip(self._img2img_tip if has_blurry else
                                    "This run's decoder has no blurry image to start from: fine-tune the decoder")
        self._update_buttons()

    # --- jobs ----------------------------------------------------------------------------------------------------
    def _on_gallery_clicked(self, item: QListWidgetItem) -> None:
        self.reconstruct_trial(int(item.data(Qt.ItemDataRole.UserRole)))

    def reconstruct_trial(self, trial: int):
        """Show the image of test trial ``trial``; reconstruct it unless it was, with the same settings."""
        subject = self.state.subject
        img = int(subject.trials.image_index[trial])
        self.state.set_trial(trial)
        done = self.results.get(img)
        if done is not None and done.same_settings(self.settings()) and (done.oracle is not None
                                                                         or not self.oracle_box.isChecked()):
            self.show_image(img)
            return None
        if self.run_dir is None or not self.can_reconstruct:
            self.context.show_status(self.decoder_label.text(), 8000)
            self._show_trial(None, f"Image {img}: not reconstructed")
            self.gt_tile.set_image(subject.images[img])
            return None
        out = self.run_dir / RECON_DIR / GUI_DIR / f"image-{img:05d}"
        return self._start_recon([trial], out, f"Reconstructing image {img}", img)

    def reconstruct_all(self):
        if self.run_dir is None or not self.can_reconstruct:
            return None
        return self._start_recon(None, self.run_dir / RECON_DIR / ALL_DIR, "Reconstructing the test set", None)

    def _start_recon(self, trials, out_dir: Path, title: str, image: int | None):
        run, subject, settings = self.run_dir, self.state.subject, self.settings()
        device = self.context.settings.device

        def make_job(cancel):
            return reconstruct_trials_job(run, subject, trials, settings, out_dir, device, cancel)

        worker = start_panel_job(self.context, make_job, title, self._connect, on_result=self._on_recon_result)
        if worker is None:
            return None
        self.worker = worker
        self._set_sample_tiles(settings["samples"])
        if image is not None:
            self._show_trial(None, f"Image {image}: reconstructing…")
            self.gt_tile.set_image(subject.images[image])
            self.current_image = image
        self.progress.setRange(0, 0)
        self._update_buttons()
        return worker

    def start_finetune(self):
        """Fine-tune the selected run's decoder (``finetune_job``); returns the worker or None."""
        from engine.recon.finetune import FinetuneConfig, finetune_job

        if self.run_dir is None:
            return None
        from engine.recon.own_generator import generator_of_embedder
        from engine.train.predict import model_info

        run, subject = self.run_dir, self.state.subject
        try:  # a run that predicts a trained generator's embedding is fine-tuned with that generator
            generator = generator_of_embedder(model_info(run).get("embedder")) or "demo"
        except (NeuroLensError, OSError, ValueError):
            generator = "demo"
        cfg = FinetuneConfig(generator=generator, epochs=int(self.ft_epochs.value()),
                             device=self.context.settings.device)
        worker = start_panel_job(self.context, lambda cancel: finetune_job(run, config=cfg, cancel=cancel,
                                                                           subject=subject),
                                 f"Fine-tuning the decoder of {run.name}", self._connect,
                                 on_result=lambda _r: self._update_decoder())
        if worker is not None:
            self.worker = worker
            self.progress.setRange(0, 0)
            self.title.setText(f"Fine-tuning the decoder of {run.name}…")
            self._update_buttons()
        return worker

    def start_generator_training(self):
        """Train a generator on the subject's own images (``train_generator_job``); returns the worker or None."""
        from engine.recon.own_generator import RESUME_SUFFIX, default_generator_folder, train_generator_job

        subject = self.state.subject
        if subject is None or subject.path is None:
            return None
        out = default_generator_folder(subject)
        resume = (out.with_name(out.name + RESUME_SUFFIX) / "state.json").is_file()
        if out.exists() and not resume:
            self.context.show_status(f"{out} already holds this subject's generator: train a run with it as the "
                                     f"targets' embedder (data.embedder = {out})", 10000)
            return None
        device = self.context.settings.device
        worker = start_panel_job(self.context, lambda cancel: train_generator_job(subject, out, resume=resume,
                                                                                  device=device, cancel=cancel),
                                 f"Training a generator on {subject.name}'s images", self._connect,
                                 on_result=lambda _r: self.context.show_status(f"generator written to {out}", 10000))
        if worker is not None:
            self.worker = worker
            self.progress.setRange(0, 0)
            self.title.setText(f"{'Continuing' if resume else 'Training'} a generator on {subject.name}'s images "
                               f"→ {out.name}…")
            self._update_buttons()
        return worker

    def _connect(self, worker) -> None:
        worker.progress.connect(self._on_progress)
        worker.preview.connect(self._on_preview)
        worker.done.connect(self._on_done)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    @Slot(object)
    def _on_progress(self, ev) -> None:
        total = max(int(ev.total or 0), 1)
        self.progress.setRange(0, total)
        self.progress.setValue(min(int(ev.step), total))
        # the engine's EtaClock gives no estimate until a few steps past the start-up have been timed
        left = (f" · {format_eta(ev.eta_s)} left" if ev.eta_s is not None
                else " · estimating the time left…" if ev.step < total else "")
        self.progress.setFormat((f"{ev.stage}: " if ev.stage else "") + "%v / %m" + left)

    @Slot(object)
    def _on_preview(self, ev) -> None:
        if ev.image is None or not self.sample_tiles:
            return
        self.sample_tiles[0].set_image(ev.image, f"denoising, step {ev.step}")

    def _on_recon_result(self, results: list) -> None:
        for r in results:
            self.results[r.image_index] = r
        add_two_way(self.results.values())  # the new images change every image's comparison set
        self._show_results_table()
        if results:
            show = self.current_image if self.current_image in self.results else results[0].image_index
            self.show_image(show)

    @Slot()
    def _on_done(self) -> None:
        worker, self.worker = self.worker, None
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        outcome = worker.outcome if worker is not None else None
        self.progress.setFormat({"result": "Done", "cancelled": "Cancelled", "errored": "Failed"}.get(outcome, ""))
        if outcome == "cancelled":
            self.title.setText("Cancelled")
        self._update_decoder()
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.worker is not None or slot_busy(self.context)
        ok = self.run_dir is not None and self.state.subject is not None
        self.all_btn.setEnabled(ok and self.can_reconstruct and not busy)
        self.finetune_btn.setEnabled(ok and not busy and "No trained model" not in self.decoder_label.text())
        self.finetune_btn.setDefault(ok and not self.can_reconstruct)
        self.generator_btn.setEnabled(self.state.subject is not None and self.state.subject.path is not None
                                      and not busy)
        self.cancel_btn.setEnabled(self.worker is not None)
        has = bool(self.results)
        for b in (self.best_btn, self.worst_btn, self.export_png_btn, self.export_csv_btn):
            b.setEnabled(has)

    # --- showing results -----------------------------------------------------------------------------------------
    def show_image(self, image: int) -> None:
        r = self.results.get(int(image))
        self.current_image = int(image)
        self._show_trial(r)
        self._select_row(int(image))

    def _show_trial(self, r: TrialRecon | None, title: str | None = None) -> None:
        if r is None:
            self.gt_tile.set_image(None)
            self.blurry_tile.set_image(None)
            self.oracle_tile.set_image(None)
            for t in self.sample_tiles:
                t.set_image(None)
            self.trial_metrics.clear()
            self.trial_metrics.setRowCount(0)
            self.trial_metrics.setColumnCount(0)
            self.title.setText(title or "Click a test image to reconstruct it")
            return
        self._set_sample_tiles(len(r.samples))
        s = r.settings
        self.title.setText(f"Image {r.image_index} ({r.category}) · trials {', '.join(map(str, r.trials))} · "
                           f"{s.get('sampler')} {s.get('steps')} steps, guidance {s.get('guidance')}, "
                           + (f"from blurry {s['img2img_strength']:g}, " if s.get("img2img_strength") else "")
                           + f"seed {s.get('seed')}")
        self.gt_tile.set_image(r.gt, "Ground truth")
        self.blurry_tile.set_image(r.blurry, "Blurry" if r.blurry is not None else "Blurry (none)")
        self.oracle_tile.set_image(None if r.oracle is None else r.oracle[0],
                                   "Oracle (true embedding)" if r.oracle is not None else "Oracle (none)")
        for k, t in enumerate(self.sample_tiles[:len(r.samples)]):
            t.set_image(r.samples[k], f"Sample {k + 1}")
        names = list(r.metrics)
        k = len(r.samples)
        tm = self.trial_metrics
        tm.clear()
        tm.setRowCount(len(names))
        oracle = bool(r.oracle_metrics)
        tm.setColumnCount(k + 1 + oracle)
        tm.setHorizontalHeaderLabels(["mean"] + [f"s{j + 1}" for j in range(k)] + (["oracle"] if oracle else []))
        tm.setVerticalHeaderLabels([n + (" ↑" if higher_is_better(n) else " ↓") for n in names])
        for i, n in enumerate(names):
            v = r.metrics[n]
            tm.setItem(i, 0, _num(float(np.nanmean(v))))
            for j in range(k):
                tm.setItem(i, j + 1, _num(float(v[j])))
            if oracle and n in r.oracle_metrics:
                with np.errstate(all="ignore"):
                    tm.setItem(i, k + 1, _num(float(np.nanmean(r.oracle_metrics[n]))))
        tm.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        tm.setFixedHeight(tm.horizontalHeader().height() + sum(tm.rowHeight(i) for i in range(tm.rowCount())) + 4)

    def _ordered_results(self) -> list[TrialRecon]:
        """Results in the table's current (sorted) order."""
        out = []
        for row in range(self.table.rowCount()):
            it = self.table.item(row, 0)
            if it is not None and int(it.data(Qt.ItemDataRole.UserRole)) in self.results:
                out.append(self.results[int(it.data(Qt.ItemDataRole.UserRole))])
        return out

    def _show_results_table(self) -> None:
        results = [self.results[k] for k in sorted(self.results)]
        names = metric_names(results)
        t = self.table
        t.blockSignals(True)
        t.setSortingEnabled(False)
        t.clear()
        t.setRowCount(len(results))
        t.setColumnCount(3 + len(names))
        t.setHorizontalHeaderLabels(["Image", "Category", "Trials"]
                                    + [n + (" ↑" if higher_is_better(n) else " ↓") for n in names])
        for i, r in enumerate(results):
            s = r.summary()
            it = _num(r.image_index, "{:.0f}")
            it.setData(Qt.ItemDataRole.UserRole, r.image_index)
            t.setItem(i, 0, it)
            t.setItem(i, 1, QTableWidgetItem(r.category))
            t.setItem(i, 2, QTableWidgetItem(" ".join(map(str, r.trials))))
            for j, n in enumerate(names):
                t.setItem(i, 3 + j, _num(s.get(n, np.nan)))
        t.setSortingEnabled(True)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)  # the trials list
        t.blockSignals(False)
        current = self.rank_metric.currentText()
        self.rank_metric.clear()
        self.rank_metric.addItems(names)
        if current in names:
            self.rank_metric.setCurrentText(current)
        if results:
            table = np.array([[r.summary().get(n, np.nan) for n in names] for r in results])
            mean, sd = np.nanmean(table, 0), np.nanstd(table, 0)
            parts = [f"{n} {m:.3f} ± {d:.3f}" for n, m, d in zip(names, mean, sd)]
            self.aggregate.setText(f"{len(results)} images · " + " · ".join(parts))
        else:
            self.aggregate.setText("No reconstructions of this run yet")
        self._mark_gallery()
        self._update_buttons()

    def _mark_gallery(self) -> None:
        """✓ on the gallery's reconstructed images."""
        for i in range(self.gallery.count()):
            it = self.gallery.item(i)
            img = int(it.data(Qt.ItemDataRole.UserRole + 1))
            it.setText(f"{img} ✓" if img in self.results else str(img))

    def _select_row(self, image: int) -> None:
        t = self.table
        t.blockSignals(True)
        t.clearSelection()
        for row in range(t.rowCount()):
            it = t.item(row, 0)
            if it is not None and int(it.data(Qt.ItemDataRole.UserRole)) == image:
                t.selectRow(row)
                t.scrollToItem(it)
                break
        t.blockSignals(False)

    def _on_table_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            img = int(self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))
            if img != self.current_image:
                self.show_image(img)

    def show_extreme(self, best: bool = True) -> int | None:
        """Show the image with the best (or worst) mean of the chosen metric; returns its image index."""
        name = self.rank_metric.currentText()
        scored = [(r.summary().get(name, np.nan), r.image_index) for r in self.results.values()]
        scored = [(v, i) for v, i in scored if np.isfinite(v)]
        if not scored:
            return None
        want_max = best == higher_is_better(name)
        v, img = max(scored) if want_max else min(scored)
        self.show_image(img)
        self.context.show_status(f"{'Best' if best else 'Worst'} {name}: image {img} ({v:.3f})", 6000)
        return img

    # --- export --------------------------------------------------------------------------------------------------
    def export_grid(self, path) -> Path:
        from PIL import Image

        grid = comparison_grid(self._ordered_results() or list(self.results.values()))
        path = Path(path)
        Image.fromarray(grid).save(path, format="PNG")
        return path

    def export_csv(self, path) -> Path:
        return write_metrics_csv(path, self._ordered_results() or list(self.results.values()))

    def _export_png_dialog(self) -> None:
        self._export_dialog("PNG image (*.png)", "reconstructions.png", self.export_grid)

    def _export_csv_dialog(self) -> None:
        self._export_dialog("CSV table (*.csv)", "reconstruction-metrics.csv", self.export_csv)

    def _export_dialog(self, filt: str, name: str, save) -> None:
        start = str(Path(self.context.settings.last_folder("export")) / name)
        path, _ = QFileDialog.getSaveFileName(self, "Export", start, filt)
        if not path:
            return
        try:
            out = save(path)
        except (OSError, ValueError) as e:
            import traceback

            self.context.error_raised.emit("Export", e, traceback.format_exc())
            return
        self.context.settings.set_last_folder(Path(path).parent, "export")
        self.context.show_status(f"Saved {out}", 6000)
