"""``ComparisonView``: one reconstructed image next to its ground truth, oracle and blurry images, the job's progress
bar, and the image's metrics (mean over the samples, each sample, the oracle). It observes ``ReconState``: the shown
image is redrawn whenever it changes or its result is replaced."""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import (QAbstractItemView, QGroupBox, QHBoxLayout, QHeaderView, QLabel, QProgressBar,
                               QScrollArea, QTableWidget, QVBoxLayout, QWidget)

from engine.events import format_eta
from engine.recon.results import TrialRecon
from neurolens_app.widgets.image_strip import ImageTile
from neurolens_app.widgets.recon_table import metric_header, num_item

PROMPT = "Click a test image to reconstruct it"


class ComparisonView(QGroupBox):
    def __init__(self, state, n_samples: int, parent=None) -> None:
        super().__init__("Comparison", parent)
        self.state = state
        em = self.fontMetrics().height()
        tile = int(9 * em)
        cl = QVBoxLayout(self)
        self.title = QLabel(PROMPT)
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
        self.set_sample_tiles(n_samples)
        state.image_changed.connect(lambda image: self.show_result(state.result(image)))

    def set_sample_tiles(self, k: int) -> None:
        while len(self.sample_tiles) < k:
            t = ImageTile(f"Sample {len(self.sample_tiles) + 1}", self.tile_px)
            self.tiles_row.insertWidget(self.tiles_row.count() - 1, t)
            self.sample_tiles.append(t)
        for i, t in enumerate(self.sample_tiles):
            t.setVisible(i < k)

    # --- the image -----------------------------------------------------------------------------------------------
    def show_pending(self, title: str, gt=None) -> None:
        """No result to show (yet): ``title`` and the ground truth ``gt`` (H, W, 3) alone."""
        self.show_result(None, title)
        if gt is not None:
            self.gt_tile.set_image(gt)

    def show_preview(self, ev) -> None:
        """A ``Preview`` event: the image being denoised, in the first sample's tile."""
        if ev.image is None or not self.sample_tiles:
            return
        self.sample_tiles[0].set_image(ev.image, f"denoising, step {ev.step}")

    def show_result(self, r: TrialRecon | None, title: str | None = None) -> None:
        if r is None:
            self.gt_tile.set_image(None)
            self.blurry_tile.set_image(None)
            self.oracle_tile.set_image(None)
            for t in self.sample_tiles:
                t.set_image(None)
            self.trial_metrics.clear()
            self.trial_metrics.setRowCount(0)
            self.trial_metrics.setColumnCount(0)
            self.title.setText(title or PROMPT)
            return
        self.set_sample_tiles(len(r.samples))
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
        self._show_metrics(r)

    def _show_metrics(self, r: TrialRecon) -> None:
        names = list(r.metrics)
        k = len(r.samples)
        tm = self.trial_metrics
        tm.clear()
        tm.setRowCount(len(names))
        oracle = bool(r.oracle_metrics)
        tm.setColumnCount(k + 1 + oracle)
        tm.setHorizontalHeaderLabels(["mean"] + [f"s{j + 1}" for j in range(k)] + (["oracle"] if oracle else []))
        tm.setVerticalHeaderLabels([metric_header(n) for n in names])
        for i, n in enumerate(names):
            v = r.metrics[n]
            tm.setItem(i, 0, num_item(float(np.nanmean(v))))
            for j in range(k):
                tm.setItem(i, j + 1, num_item(float(v[j])))
            if oracle and n in r.oracle_metrics:
                with np.errstate(all="ignore"):
                    tm.setItem(i, k + 1, num_item(float(np.nanmean(r.oracle_metrics[n]))))
        tm.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        tm.setFixedHeight(tm.horizontalHeader().height() + sum(tm.rowHeight(i) for i in range(tm.rowCount())) + 4)

    # --- the job's progress --------------------------------------------------------------------------------------
    def show_busy(self) -> None:
        self.progress.setRange(0, 0)

    def show_progress(self, ev) -> None:
        total = max(int(ev.total or 0), 1)
        self.progress.setRange(0, total)
        self.progress.setValue(min(int(ev.step), total))
        # the engine's EtaClock gives no estimate until a few steps past the start-up have been timed
        left = (f" · {format_eta(ev.eta_s)} left" if ev.eta_s is not None
                else " · estimating the time left…" if ev.step < total else "")
        self.progress.setFormat((f"{ev.stage}: " if ev.stage else "") + "%v / %m" + left)

    def show_done(self, outcome: str | None) -> None:
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        self.progress.setFormat({"result": "Done", "cancelled": "Cancelled", "errored": "Failed"}.get(outcome, ""))
        if outcome == "cancelled":
            self.title.setText("Cancelled")
