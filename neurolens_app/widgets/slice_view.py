"""``SliceViewWidget``: three orthogonal slices of a volumetric subject's mask and maps (no surface mapping needed)."""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QVBoxLayout, QWidget

from neurolens_app.state.overlay_state import Overlay
from neurolens_app.widgets.colormaps import colorize_categorical, get_cmap, scalar_lut

_AXES = ("sagittal (x)", "coronal (y)", "axial (z)")


class SliceViewWidget(QWidget):
    """Sagittal, coronal and axial slices through the voxel grid. Voxels are placed by ``VoxelTable.ijk``.

    Signals
    -------
    hovered(int)  voxel under the mouse (-1 if none)
    clicked(int)  voxel clicked
    """

    hovered = Signal(int)
    clicked = Signal(int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setToolTip("Orthogonal slices of the voxel grid; click a voxel to inspect it and move the slices.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.graphics = pg.GraphicsLayoutWidget()
        lay.addWidget(self.graphics, 1)
        row = QHBoxLayout()
        self.spins: list[QSpinBox] = []
        for a, name in enumerate(_AXES):
            row.addWidget(QLabel(name))
            s = QSpinBox()
            s.setToolTip(f"Position of the {name.split()[0]} slice (voxel index)")
            s.valueChanged.connect(self._redraw)
            self.spins.append(s)
            row.addWidget(s)
        row.addStretch(1)
        lay.addLayout(row)
        self.views, self.mask_items, self.items = [], [], []
        for a in range(3):
            v = self.graphics.addViewBox(row=0, col=a, lockAspect=True, invertY=True, enableMenu=False)
            m, it = pg.ImageItem(axisOrder="row-major"), pg.ImageItem(axisOrder="row-major")
            v.addItem(m)
            v.addItem(it)
            self.views.append(v)
            self.mask_items.append(m)
            self.items.append(it)
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=get_cmap("viridis"), interactive=False,
                                        width=max(8, self.fontMetrics().height()))
        self.graphics.addItem(self.colorbar, row=0, col=3)
        self.shape = (0, 0, 0)
        self._index = np.zeros((0, 0, 0), np.int64)  # voxel index per grid cell, -1 empty
        self._overlay: Overlay | None = None
        self.graphics.scene().sigMouseMoved.connect(lambda p: self.hovered.emit(self._voxel_at(p)))
        self.graphics.scene().sigMouseClicked.connect(self._on_click)
        self.graphics.setBackground(self.palette().color(QPalette.ColorRole.Base))

    def set_grid(self, ijk: np.ndarray, shape=None) -> None:
        """Place voxels (n_voxels, 3) int on a grid of ``shape`` (defaults to the bounding box)."""
        ijk = np.asarray(ijk, np.int64)
        ok = ijk[:, 0] >= 0
        if shape is None:
            shape = tuple(int(x) + 1 for x in ijk[ok].max(0)) if ok.any() else (1, 1, 1)
        self.shape = tuple(int(s) for s in shape)
        self._index = np.full(self.shape, -1, np.int64)
        self._index[tuple(ijk[ok].T)] = np.flatnonzero(ok)
        centre = ijk[ok].mean(0).astype(int) if ok.any() else np.zeros(3, int)
        for a in range(3):
            self.spins[a].blockSignals(True)
            self.spins[a].setRange(0, self.shape[a] - 1)
            self.spins[a].setValue(int(centre[a]))
            self.spins[a].blockSignals(False)
        mask = (self._index >= 0).astype(np.float32)
        self._mask = mask
        self._redraw()
        for v in self.views:
            v.autoRange()

    def show_overlay(self, overlay: Overlay | None) -> None:
        self._overlay = overlay
        self._redraw()

    def update_display(self) -> None:
        self._redraw()

    def _slice(self, vol: np.ndarray, a: int) -> np.ndarray:
        i = self.spins[a].value()
        s = np.take(vol, i, axis=a)
        return s.T  # rows = second remaining axis, so images are upright-ish

    def _redraw(self) -> None:
        if self._index.size == 0:
            return
        ov = self._overlay
        for a in range(3):
            self.mask_items[a].setImage(self._slice(self._mask, a), autoLevels=False, levels=(-0.5, 2.0),
                                        lut=scalar_lut("gray"))
        if ov is None or not ov.available or len(ov.values) <= int(self._index.max()):
            for it in self.items:
                it.clear()
            self.colorbar.setVisible(False)
            return
        idx = self._index
        vals = np.where(idx >= 0, ov.values[np.maximum(idx, 0)], np.nan).astype(np.float32)
        d = ov.display
        for a in range(3):
            sl = self._slice(vals, a)
            if ov.kind == "categorical":
                alpha = None
                if ov.alpha is not None:
                    alpha = self._slice(np.where(idx >= 0, ov.alpha[np.maximum(idx, 0)], 0), a).ravel()
                rgba = colorize_categorical(sl.ravel(), len(ov.categories), alpha, d.opacity)
                self.items[a].setImage(rgba.reshape(sl.shape + (4,)), autoLevels=False, levels=(0, 255), lut=None)
            else:
                if d.threshold > 0:
                    sl = np.where(np.abs(sl) >= d.threshold, sl, np.nan)
                self.items[a].setImage(sl, autoLevels=False, levels=d.limits, lut=scalar_lut(d.cmap))
                self.items[a].setOpacity(d.opacity)
        self.colorbar.setVisible(ov.kind == "scalar")
        if ov.kind == "scalar":
            self.colorbar.setColorMap(get_cmap(d.cmap))
            self.colorbar.setLevels(d.limits)

    def _voxel_at(self, scene_pos) -> int:
        for a, v in enumerate(self.views):
            if v.sceneBoundingRect().contains(scene_pos):
                p = v.mapSceneToView(scene_pos)
                col, row = int(np.floor(p.x())), int(np.floor(p.y()))
                others = [b for b in range(3) if b != a]
                ijk = [0, 0, 0]
                ijk[a] = self.spins[a].value()
                ijk[others[0]], ijk[others[1]] = col, row
                if all(0 <= ijk[b] < self.shape[b] for b in range(3)):
                    return int(self._index[tuple(ijk)])
        return -1

    def _on_click(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton:
            return
        vox = self._voxel_at(ev.scenePos())
        if vox >= 0:
            self.clicked.emit(vox)

    def select_voxel(self, voxel: int, ijk: np.ndarray | None = None) -> None:
        """Move the three slices through ``ijk`` (the selected voxel's grid position)."""
        if ijk is None or voxel < 0:
            return
        for a in range(3):
            self.spins[a].blockSignals(True)
            self.spins[a].setValue(int(ijk[a]))
            self.spins[a].blockSignals(False)
        self._redraw()
