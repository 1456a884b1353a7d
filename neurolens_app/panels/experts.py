"""``ExpertsPanel``: what each expert of a Mixture-of-Experts run has learned.

- Expert × ROI routing share (``engine.models.routing.voxel_routing`` + ``expert_roi_table``) as a heatmap, one level
  of the hierarchy at a time. Clicking an expert paints its routing weight per voxel on the brain view (an overlay in
  ``context.overlays``).
- The test images that use each expert most (``top_images_per_expert``) and their categories.
- Routing weight of each expert level over the diffusion timesteps (the decoder's ``TimestepRouter``, after
  fine-tuning), and routing entropy (per trial: how many experts share the work; per voxel: on the brain).
- For simulated subjects, a check against the known ground truth: do early-visual voxels (V1–V3) route to other
  experts than category-selective ones (LO, VOT)? The Jensen–Shannon distance between the two groups' mean expert
  distributions, against a null from shuffled voxel labels.

All numbers are computed in a pool thread (it loads the model: torch) and come back as numpy arrays.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import QSize, Qt
from PySide6.QtGui import QIcon, QPalette
from PySide6.QtWidgets import (QComboBox, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QVBoxLayout, QWidget)

from engine.errors import ConfigError, NeuroLensError
from neurolens_app.widgets.colormaps import CATEGORICAL
from neurolens_app.widgets.heatmap import HeatmapTable
from neurolens_app.widgets.image_strip import pixmap
from neurolens_app.widgets.run_picker import RunPicker
from neurolens_app.widgets.splitters import H, V, stretch_splitter
from neurolens_app.workers.short_job import submit

EARLY_VISUAL = ("V1", "V2", "V3")
CATEGORY_SELECTIVE = ("LO", "VOT", "FFA", "PPA", "EBA", "OFA")
TOP_K = 8
N_NULL = 200
SCHEDULE_STEPS = 25
EXPERT_OVERLAY = "MoE: selected expert's routing weight"
ENTROPY_OVERLAY = "MoE: routing entropy"


@dataclass
class LevelAnalysis:
    n_experts: int
    voxel_weights: np.ndarray  # (n_subject_voxels, n_experts); NaN for voxels the run did not use
    table: np.ndarray  # (n_experts, n_rois) routing share of each ROI
    top_images: np.ndarray  # (n_experts, k) image indices
    usage: np.ndarray  # (n_experts,) mean share of the level's routed weight
    trial_entropy: float  # mean normalised entropy of the per-trial usage
    voxel_entropy: np.ndarray  # (n_subject_voxels,) normalised entropy of each voxel's routing


@dataclass
class GroundTruthCheck:
    early: list
    category: list
    js_distance: list  # per level
    null_95: list  # per level: 95th percentile of the distance with shuffled voxel labels
    early_dist: list  # per level (n_experts,)
    category_dist: list


@dataclass
class ExpertAnalysis:
    run: str
    rois: list
    levels: list = field(default_factory=list)
    timesteps: np.ndarray | None = None  # (n_steps,)
    timestep_weights: np.ndarray | None = None  # (n_steps, n_levels)
    timestep_prior: np.ndarray | None = None  # (n_steps, n_levels): the coarse-to-fine prior the router started from
    timestep_reason: str = ""
    check: GroundTruthCheck | None = None
    prior: float = 0.0  # the model's roi_group_prior: > 0 means the ROI split was a starting bias, not learned


def js_distance(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen–Shannon distance (base 2: 0 = same distribution, 1 = disjoint)."""
    from scipy.spatial.distance import jensenshannon

    return float(jensenshannon(np.asarray(p, np.float64), np.asarray(q, np.float64), base=2))


def ground_truth_check(levels: list[np.ndarray], rois: dict, seed: int = 0) -> GroundTruthCheck | None:
    """Compare the expert distributions of early-visual and category-selective voxels on every level."""
    early = [r for r in EARLY_VISUAL if r in rois]
    cat = [r for r in CATEGORY_SELECTIVE if r in rois]
    if not early or not cat:
        return None
    m_early = np.any([rois[r] for r in early], axis=0)
    m_cat = np.any([rois[r] for r in cat], axis=0) & ~m_early
    rng = np.random.default_rng(seed)
    both = np.flatnonzero(m_early | m_cat)
    n_early = int(m_early.sum())
    out = GroundTruthCheck(early, cat, [], [], [], [])
    for w in levels:
        pe, pc = w[m_early].mean(0), w[m_cat].mean(0)
        out.js_distance.append(js_distance(pe, pc))
        null = []
        for _ in range(N_NULL):
            perm = rng.permutation(both)
            null.append(js_distance(w[perm[:n_early]].mean(0), w[perm[n_early:]].mean(0)))
        out.null_95.append(float(np.percentile(null, 95)))
        out.early_dist.append(pe)
        out.category_dist.append(pc)
    return out


def analyse_experts(run_dir, subject) -> ExpertAnalysis:
    """Routing analysis of a MoE run on the subject's test trials (pool thread: loads the model)."""
    from engine.models.routing import (
        expert_roi_table,
        routing_entropy,
        top_images_per_expert,
        voxel_routing,
    )
    from engine.train.predict import load_encoder, load_normalizer, model_info

    run_dir = Path(run_dir)
    info = model_info(run_dir)
    model = load_encoder(run_dir)
    if not hasattr(model, "routing_weights"):
        raise ConfigError(f"{run_dir.name}: the experts view needs a Mixture-of-Experts run (model kind 'moe'), "
                          f"found '{info.get('kind')}'")
    norm = load_normalizer(run_dir)
    rows = np.sort(np.asarray(subject.split_indices("test")))
    if rows.size == 0:
        rows = np.arange(min(subject.n_trials, 500))
    betas = norm.apply(subject.betas, rows)
    key = info["subject"]
    vidx = np.asarray(norm.voxel_index)
    rois = {n: np.asarray(m, bool)[vidx] for n, m in subject.rois.items() if np.asarray(m, bool)[vidx].any()}
    per_voxel = voxel_routing(model, key, betas)
    routing = model.routing_weights(betas, key)
    image_index = np.asarray(subject.trials.image_index)[rows]
    out = ExpertAnalysis(str(run_dir), list(rois), prior=float(getattr(getattr(model, "config", None),
                                                                        "roi_group_prior", 0.0) or 0.0))
    for w, lv in zip(per_voxel, routing.levels):
        full = np.full((subject.n_voxels, w.shape[1]), np.nan, np.float32)
        full[vidx] = w
        ent = np.full(subject.n_voxels, np.nan, np.float32)
        ent[vidx] = routing_entropy(w)
        out.levels.append(LevelAnalysis(
            n_experts=int(w.shape[1]), voxel_weights=full, table=expert_roi_table(w, rois),
            top_images=top_images_per_expert(lv.usage, image_index, TOP_K), usage=lv.usage.mean(0).astype(np.float64),
            trial_entropy=float(routing_entropy(lv.usage).mean()), voxel_entropy=ent))
    if subject.is_simulation:
        out.check = ground_truth_check(per_voxel, rois)
    from engine.recon.decoder import timestep_router_dir

    router_dir = timestep_router_dir(run_dir)
    if router_dir is not None:
        from engine.recon.timestep_router import TimestepRouter

        router = TimestepRouter.load(router_dir)
        t = np.linspace(router.num_train_timesteps - 1, 0, SCHEDULE_STEPS).round()
        out.timesteps, out.timestep_weights = t, router.weights_per_step(t)
        out.timestep_prior = router.prior_weights_per_step(t)
    else:
        out.timestep_reason = ("no timestep router yet: fine-tune the decoder (Reconstruction panel) to learn how the "
                               "expert levels are weighted over the diffusion steps")
    return out


def entropy_summary(a: ExpertAnalysis) -> str:
    """The panel's headline: routing entropy per voxel (the quantity the expert × ROI table sums) next to per trial,
    and why they differ when they do."""
    per_voxel = [float(np.nanmean(lv.voxel_entropy)) if np.isfinite(lv.voxel_entropy).any() else float("nan")
                 for lv in a.levels]
    voxel = ", ".join(f"level {i} {v:.2f}" for i, v in enumerate(per_voxel))
    trial = ", ".join(f"level {i} {lv.trial_entropy:.2f}" for i, lv in enumerate(a.levels))
    text = (f"{Path(a.run).name}, test trials. Routing entropy (0 = one expert, 1 = all equally) — per voxel, "
            f"mean over voxels (what the table below sums by ROI): {voxel}; per trial (a trial's weight over the "
            f"experts): {trial}.")
    if any(lv.trial_entropy - v > 0.3 for lv, v in zip(a.levels, per_voxel)):
        text += (" A trial spreads over the experts because every image drives voxels that route to different "
                 "experts; each voxel itself routes mostly to one.")
    return text


class ExpertsPanel(QWidget):
    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        self.analysis: ExpertAnalysis | None = None
        self.expert: int | None = None
        self.run_dir: Path | None = None
        self._generation = 0
        self._job = None
        self._build()
        # disk work in its own event-loop turn, not part of the subject-change burst
        self.state.subject_changed.connect(lambda _s: self.context.later(self.refresh_runs))
        context.run.run_changed.connect(self._on_run_changed)
        context.jobs.finished.connect(self._on_job_finished)
        self.refresh_runs()
        self._on_run_changed(context.run.folder)

    # --- layout --------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        em = self.fontMetrics().height()
        top = QHBoxLayout()
        top.addWidget(QLabel("Run"))
        self.run_box = RunPicker(self.context, accept=lambda r: r.kind == "moe",
                                 why_not=lambda run: f"{run.name}: not a finished Mixture-of-Experts run")
        self.run_box.setToolTip("Finished Mixture-of-Experts run to analyse")
        top.addWidget(self.run_box, 1)
        top.addWidget(QLabel("Level"))
        self.level_box = QComboBox()
        self.level_box.setToolTip("Level of the expert hierarchy (0 = the fewest, coarsest experts)")
        self.level_box.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.level_box.setMinimumContentsLength(14)
        self.level_box.currentIndexChanged.connect(lambda _i: self._show_level())
        top.addWidget(self.level_box)
        self.entropy_btn = QPushButton("Entropy on brain")
        self.entropy_btn.setToolTip("Paint each voxel's routing entropy on the brain view (0 = one expert, "
                                    "1 = all experts equally)")
        self.entropy_btn.clicked.connect(self.show_entropy_on_brain)
        top.addWidget(self.entropy_btn)
        self.status = QLabel("")
        self.status.setWordWrap(True)

        heat_box = QGroupBox("Routing share: expert × ROI (columns sum to 1; red = above an even split) — click an "
                             "expert")
        hl = QVBoxLayout(heat_box)
        self.heatmap = HeatmapTable()
        self.heatmap.setToolTip("Share of each ROI's routing that goes to each expert; click a row to paint that "
                                "expert's weight on the brain view")
        self.heatmap.row_clicked.connect(self.select_expert)
        hl.addWidget(self.heatmap)
        self.check_label = QLabel("")
        self.check_label.setWordWrap(True)
        self.check_label.setTextFormat(Qt.TextFormat.RichText)
        hl.addWidget(self.check_label)

        img_box = QGroupBox("Images that use the expert most")
        il = QVBoxLayout(img_box)
        self.images = QListWidget()
        self.images.setViewMode(QListWidget.ViewMode.IconMode)
        self.images.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.images.setMovement(QListWidget.Movement.Static)
        self.images.setIconSize(QSize(int(4 * em), int(4 * em)))
        self.images.setGridSize(QSize(int(5.5 * em), int(6 * em)))
        self.images.setToolTip("Test images whose trials route the most weight to the selected expert")
        self.images.setMinimumHeight(int(7.5 * em))
        il.addWidget(self.images)
        self.categories = QLabel("")
        self.categories.setWordWrap(True)
        il.addWidget(self.categories)

        self.time_plot = pg.PlotWidget(title="Expert level weight over the diffusion steps")
        self.time_plot.setLabel("bottom", "timestep t (sampling runs from high to low)")
        self.time_plot.setLabel("left", "weight")
        self.time_plot.addLegend(offset=(-10, 10))
        self.time_plot.showGrid(x=True, y=True, alpha=0.25)
        self.time_plot.getViewBox().invertX(True)
        self.time_plot.setToolTip("The decoder's timestep router: which expert level conditions the generator at "
                                  "each step (coarse early, fine late)")
        self.time_reason = QLabel("")
        self.time_reason.setWordWrap(True)
        self.usage_plot = pg.PlotWidget(title="Mean usage per expert")
        self.usage_plot.setLabel("bottom", "expert")
        self.usage_plot.setLabel("left", "share of routed weight")
        self.usage_plot.setToolTip("Each expert's mean share of the level's routed weight over the test trials")
        plots = QWidget()
        pl = QVBoxLayout(plots)
        pl.setContentsMargins(0, 0, 0, 0)
        pl.addWidget(self.time_plot, 3)
        pl.addWidget(self.time_reason)
        pl.addWidget(self.usage_plot, 2)

        split = stretch_splitter(V, (stretch_splitter(H, (heat_box, 3), (plots, 2)), 3), (img_box, 1))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(top)
        lay.addWidget(self.status)
        lay.addWidget(split, 1)
        self.apply_palette()
        self._update_buttons()

    def apply_palette(self) -> None:
        pal = self.palette()
        fg = pal.color(QPalette.ColorRole.Text)
        for p in (self.time_plot, self.usage_plot):
            p.setBackground(pal.color(QPalette.ColorRole.Base))
            p.getAxis("left").enableAutoSIPrefix(False)
            legend = p.getPlotItem().legend
            if legend is not None:
                legend.setLabelTextColor(fg)
            p.getPlotItem().setTitle(p.getPlotItem().titleLabel.text, color=fg)
            for ax in ("left", "bottom"):
                p.getAxis(ax).setTextPen(fg)
                p.getAxis(ax).setPen(fg)

    # --- runs ----------------------------------------------------------------------------------------------------
    def refresh_runs(self) -> None:
        self.run_box.refresh()

    def _on_run_changed(self, run: Path | None) -> None:
        """The selected run (``RunState``) changed: analyse what its folder holds now."""
        if run is None:
            self._clear("No run selected: choose a finished Mixture-of-Experts run above (train one, e.g. the demo-moe "
                        "preset, in the Training panel)")
            self.run_dir = None
            return
        self._set_run(Path(run), force=True)

    def _on_job_finished(self, worker) -> None:
        """A decoder fine-tuned for the shown run brings a timestep router: analyse again to show it."""
        from engine.recon.decoder import timestep_router_dir

        a = self.analysis
        if worker.outcome == "result" and a is not None and a.timestep_weights is None \
                and timestep_router_dir(a.run) is not None:
            self._set_run(Path(a.run), force=True)

    def _set_run(self, run: Path, force: bool = False) -> None:
        subject = self.state.subject
        if subject is None or (run == self.run_dir and self.analysis is not None and not force):
            return
        self.run_dir = run
        self._generation += 1
        gen = self._generation
        self._clear(f"Analysing the routing of {run.name}…")
        self.context.when_engine_ready(lambda: self._analyse(gen, run, subject))  # loading the model imports torch

    def _analyse(self, generation: int, run: Path, subject) -> None:
        if generation != self._generation:
            return  # another run was chosen while the engine loaded
        self._job = submit(analyse_experts, run, subject, on_result=lambda a: self._on_analysis(generation, a),
                           on_error=lambda e, tb: self._on_error(generation, e, tb))

    def _on_error(self, generation: int, exc, tb: str) -> None:
        if generation == self._generation:
            self._clear(f"Cannot analyse this run: {exc}")
            if not isinstance(exc, (NeuroLensError, OSError)):  # expected failures are explained in the panel
                self.context.error_raised.emit("Experts", exc, tb)

    def _clear(self, message: str) -> None:
        for name in (EXPERT_OVERLAY, ENTROPY_OVERLAY):  # they belong to the previous run
            if name in self.context.overlays:
                self.context.overlays.remove_overlay(name)
        self.analysis = None
        self.expert = None
        self.status.setText(message)
        self.heatmap.set_matrix(np.zeros((0, 0)), [], [])
        self.level_box.blockSignals(True)
        self.level_box.clear()
        self.level_box.blockSignals(False)
        self.images.clear()
        self.categories.setText("")
        self.check_label.setText("")
        self.time_plot.clear()
        self.usage_plot.clear()
        self.time_reason.setText("")
        self._update_buttons()

    def _on_analysis(self, generation: int, a: ExpertAnalysis) -> None:
        if generation != self._generation:
            return
        self.analysis = a
        self.level_box.blockSignals(True)
        self.level_box.clear()
        for i, lv in enumerate(a.levels):
            self.level_box.addItem(f"{i} ({lv.n_experts} experts)", i)
        self.level_box.blockSignals(False)
        self.status.setText(entropy_summary(a))
        self._show_check()
        self._show_timesteps()
        self._show_level()

    # --- views ---------------------------------------------------------------------------------------------------
    def level(self) -> int:
        return int(self.level_box.currentData() or 0)

    def _show_level(self) -> None:
        a = self.analysis
        if a is None or not a.levels:
            return
        lv = a.levels[self.level()]
        # coloured by the difference from an even split (1/n): red = the ROI routes more than its share to the expert
        self.heatmap.set_matrix(lv.table, [f"expert {e}" for e in range(lv.n_experts)], a.rois,
                                center=1.0 / lv.n_experts, fmt="{:.3f}")
        self.usage_plot.clear()
        brushes = [pg.mkBrush(*CATEGORICAL[e % len(CATEGORICAL)]) for e in range(lv.n_experts)]
        self.usage_plot.addItem(pg.BarGraphItem(x=np.arange(lv.n_experts), height=lv.usage, width=0.7,
                                                brushes=brushes))
        self.usage_plot.getAxis("bottom").setTicks([[(e, str(e)) for e in range(lv.n_experts)]])
        # refresh the expert's images and map, but leave the brain view's overlay choice to the user
        self.select_expert(self.expert if self.expert is not None and self.expert < lv.n_experts else 0,
                           show_on_brain=False)
        self._update_buttons()

    def _show_check(self) -> None:
        c = self.analysis.check if self.analysis else None
        if c is None:
            self.check_label.setText("")
            return
        parts = []
        for i, (d, n) in enumerate(zip(c.js_distance, c.null_95)):
            verdict = "different experts" if d > n else "no clear separation"
            dom_e, dom_c = int(np.argmax(c.early_dist[i])), int(np.argmax(c.category_dist[i]))
            parts.append(f"level {i}: JS distance <b>{d:.3f}</b> (shuffled-label null, 95%: {n:.3f}) → {verdict}; "
                         f"dominant expert {dom_e} vs {dom_c}")
        if self.analysis.prior > 0:  # say when the split was built in rather than learned
            parts.append(f"<i>this model's routers started with an ROI-group prior (roi_group_prior = "
                         f"{self.analysis.prior:g}): the split is a starting bias that training kept, not one it "
                         f"discovered</i>")
        self.check_label.setText(f"<b>Ground-truth check (simulation)</b>: early-visual ({', '.join(c.early)}) vs "
                                 f"category-selective ({', '.join(c.category)}) voxels —<br>" + "<br>".join(parts))

    def _show_timesteps(self) -> None:
        a = self.analysis
        self.time_plot.clear()
        if a is None or a.timestep_weights is None:
            self.time_reason.setText(a.timestep_reason if a else "")
            return
        self.time_reason.setText("Solid: the weights the router learned; dashed: the coarse-to-fine prior it "
                                 "started from (their distance is what fine-tuning learned)."
                                 if a.timestep_prior is not None else "")
        for lvl in range(a.timestep_weights.shape[1]):
            n = a.levels[lvl].n_experts if lvl < len(a.levels) else "?"
            color = pg.mkColor(*CATEGORICAL[lvl % len(CATEGORICAL)])
            self.time_plot.plot(a.timesteps, a.timestep_weights[:, lvl], name=f"level {lvl} ({n} experts)",
                                pen=pg.mkPen(color, width=2), symbol="o", symbolSize=5)
            if a.timestep_prior is not None:
                self.time_plot.plot(a.timesteps, a.timestep_prior[:, lvl], name=f"level {lvl} prior",
                                    pen=pg.mkPen(color, width=1.5, style=Qt.PenStyle.DashLine))
        # weights are shares in [0, 1]: a fixed axis with a band above 1 for the legend, which then never hides a
        # curve, and plots of different runs compare at a glance
        top = max(1.0, float(np.nanmax(a.timestep_weights)))
        self.time_plot.setYRange(0.0, top + 0.1 * (1 + a.timestep_weights.shape[1]), padding=0)
        ticks = [(float(v), f"{v:.1f}") for v in np.arange(0.0, top + 1e-9, 0.2)]
        self.time_plot.getAxis("left").setTicks([ticks, []])  # no weight labels in the legend's band

    def select_expert(self, expert: int, show_on_brain: bool = True) -> None:
        """Show expert ``expert`` of the current level: its top images, and its routing weight as a brain overlay
        (made the current overlay when ``show_on_brain``: a click on the heatmap, not a refresh)."""
        a = self.analysis
        if a is None or not a.levels:
            return
        lvl = self.level()
        lv = a.levels[lvl]
        expert = int(expert)
        self.expert = expert
        self.heatmap.mark_row(expert)
        subject = self.state.subject
        self.images.clear()
        counts: Counter = Counter()
        cats, labels = subject.stimuli.categories, subject.stimuli.labels
        for img in lv.top_images[expert]:
            img = int(img)
            cat = cats[int(labels[img])] if labels is not None and 0 <= int(labels[img]) < len(cats) else ""
            counts[cat] += 1
            it = QListWidgetItem(QIcon(pixmap(subject.images[img], self.images.iconSize().width())), cat or str(img))
            it.setToolTip(f"Image {img}" + (f" ({cat})" if cat else ""))
            self.images.addItem(it)
        self.categories.setText(f"Expert {expert} (level {lvl}) — categories of its top {len(lv.top_images[expert])} "
                                f"images: " + ", ".join(f"{c or '?'} ×{n}" for c, n in counts.most_common()))
        self.context.overlays.set_overlay(EXPERT_OVERLAY, lv.voxel_weights[:, expert], cmap="viridis",
                                          limits=(0.0, 1.0),
                                          group="models", select=show_on_brain,
                                          description=f"Routing weight of expert {expert} (level {lvl}) per voxel, "
                                                      f"from {Path(a.run).name}.")

    def show_entropy_on_brain(self) -> None:
        a = self.analysis
        if a is None or not a.levels:
            return
        lvl = self.level()
        self.context.overlays.set_overlay(ENTROPY_OVERLAY, a.levels[lvl].voxel_entropy,
                                          cmap="magma", limits=(0.0, 1.0), group="models", select=True,
                                          description=f"Normalised entropy of each voxel's routing over the experts of "
                                                      f"level {lvl} (0 = one expert, 1 = all equally).")

    def _update_buttons(self) -> None:
        self.entropy_btn.setEnabled(self.analysis is not None)
