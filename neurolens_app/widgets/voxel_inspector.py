"""``VoxelInspectorWidget``: everything about one voxel: where it is, its response across trials, its tuning or
encoding weights, and its routing across experts when a MoE run is selected."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QLabel, QSizePolicy, QVBoxLayout, QWidget

from neurolens_app.widgets.colormaps import categorical_lut

_TRAIN_BRUSH = (150, 150, 150, 120)
_TEST_BRUSH = (214, 39, 40, 200)
_TUNING_FRAME_PX = 60  # the tuning plot's title and value axis


class VoxelInspectorWidget(QWidget):
    """Shows the selected voxel. Call ``show_voxel(subject, voxel, extra)``; ``extra`` may hold ``value`` (the
    current overlay's value), ``overlay`` (its name), ``routing`` (n_voxels, n_experts) weights and
    ``encoding_tuning`` (n_voxels, n_categories) with ``encoding_categories`` from the selected run's encoding model
    (shown instead of the simulation's true tuning)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setToolTip("The selected voxel: click one on the brain view.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.header = QLabel("Click a voxel on the brain view to see its data.")
        self.header.setWordWrap(True)
        self.header.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        lay.addWidget(self.header)
        self.plots = pg.GraphicsLayoutWidget()
        self.plots.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        lay.addWidget(self.plots, 1)
        self.response = self.plots.addPlot(row=0, col=0, title="Response per trial")
        self.response.setLabel("bottom", "trial")
        self.response.setLabel("left", "beta")
        self.response.showGrid(x=False, y=True, alpha=0.2)
        self.tuning = self.plots.addPlot(row=1, col=0, title="Tuning")
        self.routing = self.plots.addPlot(row=2, col=0, title="Routing to experts")
        for p in (self.tuning, self.routing):
            p.setMouseEnabled(False, False)
        self.voxel = -1
        self.apply_palette()
        self.clear()

    def apply_palette(self) -> None:
        self.plots.setBackground(self.palette().color(QPalette.ColorRole.Base))

    def clear(self) -> None:
        self.voxel = -1
        self.header.setText("Click a voxel on the brain view to see its data.")
        for p in (self.response, self.tuning, self.routing):
            p.clear()
        self.tuning.setVisible(False)
        self.routing.setVisible(False)

    def show_voxel(self, subject, voxel: int, extra: dict | None = None) -> None:
        extra = extra or {}
        if subject is None or voxel < 0:
            self.clear()
            return
        self.voxel = voxel
        vt = subject.voxels
        labels, names = subject.roi_labels()
        roi = names[labels[voxel] - 1] if labels[voxel] > 0 else "no ROI"
        hemi = {0: "left", 1: "right"}.get(int(vt.hemi[voxel]), "")
        where = f"{hemi} hemisphere, vertex {int(vt.vertex[voxel])}" if int(vt.vertex[voxel]) >= 0 else (
            f"ijk {tuple(int(x) for x in vt.ijk[voxel])}" if int(vt.ijk[voxel, 0]) >= 0 else "location unknown")
        nc = float(vt.noise_ceiling[voxel])
        parts = [f"<b>Voxel {voxel}</b>", roi, where]
        legend = ("<br>Response per trial: <span style='color:#969696'>●</span> train, "
                  "<span style='color:#d62728'>●</span> test")
        if np.isfinite(nc):
            parts.append(f"noise ceiling {nc:.2f}")
        if extra.get("overlay") and extra.get("value") is not None and np.isfinite(extra["value"]):
            parts.append(f"{extra['overlay']}: {extra['value']:.3g}")
        self.header.setText(" · ".join(parts) + legend)

        # response across trials: train in grey, test (repeated images) in red
        self.response.clear()
        y = np.asarray(subject.betas[:, voxel], np.float32)
        split = np.asarray(subject.trials.split)
        x = np.arange(len(y))
        for code, name, brush in ((0, "train", _TRAIN_BRUSH), (1, "test", _TEST_BRUSH)):
            m = split == code
            if m.any():
                self.response.plot(x[m], y[m], pen=None, symbol="o", symbolSize=4, symbolPen=None,
                                   symbolBrush=brush, name=name)

        # tuning: per-voxel vectors of the simulation's ground truth, or encoding weights when given
        self.tuning.clear()
        vec, cats, title = self._tuning_vector(subject, voxel, extra)
        self.tuning.setVisible(vec is not None)
        if vec is not None:
            self.tuning.setTitle(title)
            self._bars(self.tuning, vec, cats, horizontal=True)
        # One name per row needs a text line per bar: the other plots give way (they have no labels to keep apart).
        self.tuning.setMinimumHeight(0 if vec is None else len(vec) * self._row_px() + _TUNING_FRAME_PX)

        self.routing.clear()
        w = extra.get("routing")
        self.routing.setVisible(w is not None)
        if w is not None:
            wv = np.asarray(w[voxel], np.float32)
            self._bars(self.routing, wv, [f"E{k}" for k in range(len(wv))], colours=True)

    def _row_px(self) -> int:
        """Pixels per bar so that the names on the left axis do not overlap (the axis font's line, plus a little)."""
        from PySide6.QtGui import QFontMetrics

        axis = self.tuning.getAxis("left")
        font = axis.style.get("tickFont") or axis.font()
        return QFontMetrics(font).height() + 1

    @staticmethod
    def _tuning_vector(subject, voxel: int, extra: dict):
        if extra.get("encoding_tuning") is not None:  # the selected run's encoding model, per stimulus category
            return (np.asarray(extra["encoding_tuning"][voxel], np.float32), extra.get("encoding_categories"),
                    "Encoding model: predicted response per category")
        gt = subject.ground_truth or {}
        for key in sorted(k for k in gt if "tuning" in k):
            a = np.asarray(gt[key])
            if a.ndim == 2 and a.shape[0] == subject.n_voxels and a.shape[1] > 1:
                cats = subject.stimuli.categories if a.shape[1] == len(subject.stimuli.categories) else None
                return a[voxel].astype(np.float32), cats, "Category tuning (truth)"
        return None, None, ""

    @staticmethod
    def _bars(plot, values: np.ndarray, names, colours: bool = False, horizontal: bool = False) -> None:
        """A bar per value; ``horizontal`` puts the names on the left axis, one per row, so a dozen categories can
        all be labelled (on the bottom axis they would run into each other)."""
        n = len(values)
        brushes = [pg.mkBrush(*c[:3]) for c in categorical_lut(n)] if colours else None
        brush = None if colours else pg.mkBrush(31, 119, 180)
        pos = np.arange(n)
        if horizontal:
            plot.addItem(pg.BarGraphItem(x0=0, y=pos, width=values, height=0.8, brushes=brushes, brush=brush))
            plot.getViewBox().invertY(True)  # the first name on top
        else:
            plot.addItem(pg.BarGraphItem(x=pos, height=values, width=0.8, brushes=brushes, brush=brush))
            plot.getViewBox().invertY(False)
        name_axis, value_axis = (plot.getAxis("left"), plot.getAxis("bottom")) if horizontal else \
            (plot.getAxis("bottom"), plot.getAxis("left"))
        value_axis.setTicks(None)
        if names is None:
            name_axis.setTicks(None)
            return
        stride = 1 if horizontal else max(1, int(np.ceil(n / 6)))  # keep bottom-axis labels apart
        name_axis.setTicks([[(i, str(nm)) for i, nm in enumerate(names) if i % stride == 0]])
