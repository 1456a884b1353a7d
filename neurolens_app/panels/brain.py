"""``BrainPanel``: the brain view (flatmap, optional 3-D surface, or slices) with overlay and display controls and
the voxel inspector.

Overlays come from ``context.overlays`` (``OverlayState``); anything may add one with ``BrainPanel.set_overlay`` or,
better, ``context.overlays.set_overlay`` directly. The panel never calls the engine.
"""

from __future__ import annotations

import re

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QPalette, QStandardItem, QStandardItemModel
from PySide6.QtWidgets import (QCheckBox, QComboBox, QDoubleSpinBox, QGridLayout, QHBoxLayout, QLabel, QSlider,
                               QStackedWidget, QToolButton, QVBoxLayout, QWidget)

from neurolens_app.state.overlay_state import default_display
from neurolens_app.widgets.colormaps import COLORMAPS
from neurolens_app.widgets.flatmap import FlatmapWidget, prepare_raster
from neurolens_app.widgets.flatmap_mesh import N_PER_HEMI, FlatmapMesh
from neurolens_app.widgets.slice_view import SliceViewWidget
from neurolens_app.widgets.splitters import H, stretch_splitter
from neurolens_app.widgets.voxel_inspector import VoxelInspectorWidget
from neurolens_app.workers.short_job import submit

VIEWS = ("Flatmap", "3-D surface", "Slices")
NO_SURFACE = ("<b>No surface mapping</b>: this subject's voxels have no fsaverage5 vertices,<br>so the flatmap and "
              "the 3-D view cannot place them. Import it with a mapping<br>(see docs/formats.md); the other panels "
              "work without one.")


class BrainPanel(QWidget):
    """Signals: ``drawn()`` after an overlay is on screen with a subject; ``hover_text(str)`` for the status bar."""

    drawn = Signal()
    hover_text = Signal(str)

    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        self.overlays = context.overlays
        self.mesh: FlatmapMesh | None = None
        self.surface3d = None
        self._surface_mesh = None
        self._mesh_job = None
        self._raster_generation = 0
        self._raster_ready = False
        self._roi_labels = np.zeros(0, np.int16)
        self._roi_names: list[str] = []
        self._build_controls()
        self.flatmap = FlatmapWidget()
        self.slices = SliceViewWidget()
        self.stack = QStackedWidget()
        self.stack.addWidget(self.flatmap)
        self.stack.addWidget(self.slices)
        self.inspector = VoxelInspectorWidget()
        self.splitter = stretch_splitter(H, (self.stack, 5), (self.inspector, 2))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self.controls)
        lay.addWidget(self.splitter, 1)

        self.flatmap.hovered.connect(self._on_hover)
        self.flatmap.clicked.connect(lambda voxel, vertex: voxel >= 0 and self.state.set_voxel(voxel))
        self.slices.hovered.connect(lambda voxel: self._on_hover(voxel, -1))
        self.slices.clicked.connect(self.state.set_voxel)
        self.overlays.overlays_changed.connect(self._rebuild_overlay_list)
        self.overlays.current_changed.connect(self._on_current_changed)
        self.overlays.values_changed.connect(self._on_values_changed)
        self.overlays.display_changed.connect(self._on_display_changed)
        self.state.subject_changed.connect(self._on_subject_changed)
        self.state.voxel_changed.connect(self._on_voxel_changed)
        context.sources.run_maps_changed.connect(lambda: self._on_voxel_changed(self.state.voxel))
        self._rebuild_overlay_list()
        if self.state.subject is not None:
            self._on_subject_changed(self.state.subject)

    # --- public API ----------------------------------------------------------------------------------------------
    def set_overlay(self, name: str, values, kind: str = "scalar", **kwargs):
        """Add or replace a map (n_voxels,) on the brain; see ``OverlayState.set_overlay`` for the options."""
        return self.overlays.set_overlay(name, values, kind, **kwargs)

    def load_mesh(self, height: int = 512) -> None:
        """Load (or build and cache) the flatmap raster in a pool thread; the view draws when it arrives."""
        if self.mesh is None and self._mesh_job is None:
            self.context.show_status("Preparing the flatmap…", 0)
            self._mesh_job = submit(FlatmapMesh.load, height, on_result=self.set_mesh,
                                    on_error=lambda e, tb: self.context.error_raised.emit("Flatmap", e, tb))

    def set_mesh(self, mesh: FlatmapMesh) -> None:
        self.mesh = mesh
        self._mesh_job = None
        self.flatmap.set_mesh(mesh)
        if self.state.subject is None:
            self.context.show_status("Flatmap ready", 3000)
        if self.state.subject is not None:
            self._setup_flatmap(self.state.subject)

    @property
    def is_drawn(self) -> bool:
        """True once the current subject's overlay is on screen (flatmap ready, or the slice view in use)."""
        s = self.state.subject
        if s is None:
            return False
        mode = self.view_mode
        if mode == "3-D surface":
            return self.surface3d is not None and self.surface3d.item is not None
        return mode != "Flatmap" or self._raster_ready or (self.mesh is not None and not s.voxels.has_surface)

    @property
    def view_mode(self) -> str:
        return self.view_box.currentText()

    def set_view_mode(self, mode: str) -> str | None:
        """Show view ``mode`` ("Flatmap", "3-D surface", "Slices"); returns why not when the subject lacks what it
        needs (the same reason its greyed-out entry shows), else None."""
        i = self.view_box.findText(mode)
        if i < 0:
            return f"unknown view {mode!r}; choose one of {list(VIEWS)}"
        item = self.view_box.model().item(i)
        if not item.isEnabled():
            return item.toolTip() or f"{mode} is unavailable for this subject"
        self.view_box.setCurrentIndex(i)
        return None

    def export_figure(self, path, width: int, height: int):
        """Save the current view as PNG or SVG at ``width`` × ``height`` pixels (with title and colour bar)."""
        from neurolens_app.widgets.figure_export import export_image, export_scene

        bg = self.palette().color(QPalette.ColorRole.Base)
        if self.view_mode == "3-D surface" and self.surface3d is not None:
            return export_image(self.surface3d.grab_image(), path, width, height, bg)
        w = self.slices.graphics if self.view_mode == "Slices" else self.flatmap
        # Lay the figure out at the requested aspect ratio (same height as on screen, so text keeps its size
        # relative to the map), render it, and give the layout back to the window.
        ci = w.ci
        old = ci.geometry()
        target = QRectF(0, 0, max(1.0, old.height() * width / height), old.height())
        ci.setGeometry(target)
        ci.layout.activate()
        try:
            title = re.sub(r"<[^>]+>", "", self.flatmap.title.text or "NeuroLens view")
            return export_scene(w.scene(), target, path, width, height, bg, title=title)
        finally:
            ci.setGeometry(old)
            ci.layout.activate()

    # --- controls ------------------------------------------------------------------------------------------------
    def _build_controls(self) -> None:
        g = QGridLayout()
        self.controls = g
        self.overlay_box = QComboBox()
        self.overlay_box.setToolTip("Map shown on the brain. Greyed-out maps need data this subject or run lacks: "
                                    "hover them to see why.")
        self.overlay_model = QStandardItemModel(self)
        self.overlay_box.setModel(self.overlay_model)
        self.overlay_box.currentIndexChanged.connect(self._on_overlay_chosen)
        self.view_box = QComboBox()
        self.view_box.addItems(VIEWS)
        self.view_box.setToolTip("Flatmap of both hemispheres, inflated 3-D surface (OpenGL), or volume slices")
        self.view_box.currentTextChanged.connect(self._on_view_changed)
        self.borders = QCheckBox("Borders")
        self.borders.setChecked(True)
        self.borders.setToolTip("Draw ROI borders on the flatmap")
        self.labels = QCheckBox("Labels")
        self.labels.setChecked(True)
        self.labels.setToolTip("Write ROI names on the flatmap")
        for cb in (self.borders, self.labels):
            cb.toggled.connect(lambda _=None: self.flatmap.set_borders_visible(self.borders.isChecked(),
                                                                               self.labels.isChecked()))
        self.whole = QCheckBox("Whole cortex")
        self.whole.setToolTip("Show the whole flatmap instead of zooming on the subject's voxels")
        self.whole.toggled.connect(self._on_whole_toggled)
        self.cmap = QComboBox()
        for name, label in COLORMAPS:
            self.cmap.addItem(label, name)
        self.cmap.setToolTip("Colormap of scalar maps")
        self.cmap.currentIndexChanged.connect(lambda _: self._set_display(cmap=self.cmap.currentData()))
        self.vmin, self.vmax = QDoubleSpinBox(), QDoubleSpinBox()
        for sb, tip in ((self.vmin, "Value drawn with the lowest colour"),
                        (self.vmax, "Value drawn with the highest colour")):
            sb.setRange(-1e9, 1e9)
            sb.setDecimals(3)
            sb.setSingleStep(0.05)
            sb.setKeyboardTracking(False)
            sb.setToolTip(tip)
            sb.valueChanged.connect(lambda _: self._set_display(limits=(self.vmin.value(), self.vmax.value())))
        self.auto = QToolButton()
        self.auto.setText("Auto")
        self.auto.setToolTip("Reset limits to the 2nd–98th percentile of the map")
        self.auto.clicked.connect(self._auto_limits)
        self.threshold = QDoubleSpinBox()
        self.threshold.setRange(0, 1e9)
        self.threshold.setDecimals(3)
        self.threshold.setSingleStep(0.05)
        self.threshold.setKeyboardTracking(False)
        self.threshold.setToolTip("Hide voxels whose absolute value is below this threshold (0 shows all)")
        self.threshold.valueChanged.connect(lambda v: self._set_display(threshold=v))
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(100)
        self.opacity.setToolTip("Opacity of the map over the cortex")
        self.opacity.valueChanged.connect(lambda v: self._set_display(opacity=v / 100.0))
        row1 = QHBoxLayout()
        row1.addWidget(QLabel("Overlay"))
        row1.addWidget(self.overlay_box, 3)
        row1.addWidget(QLabel("View"))
        row1.addWidget(self.view_box)
        row1.addWidget(self.borders)
        row1.addWidget(self.labels)
        row1.addWidget(self.whole)
        row2 = QHBoxLayout()
        for label, w in (("Colormap", self.cmap), ("Min", self.vmin), ("Max", self.vmax)):
            row2.addWidget(QLabel(label))
            row2.addWidget(w)
        row2.addWidget(self.auto)
        row2.addWidget(QLabel("Threshold"))
        row2.addWidget(self.threshold)
        row2.addWidget(QLabel("Opacity"))
        row2.addWidget(self.opacity, 1)
        g.addLayout(row1, 0, 0)
        g.addLayout(row2, 1, 0)

    def _on_whole_toggled(self, on: bool) -> None:
        self.flatmap.whole_cortex = on
        self.flatmap.fit_view(on)

    def _rebuild_overlay_list(self) -> None:
        self.overlay_box.blockSignals(True)
        self.overlay_model.clear()
        for name in self.overlays.names():
            ov = self.overlays.get(name)
            it = QStandardItem(name)
            it.setData(name, Qt.ItemDataRole.UserRole)
            if ov.available:
                it.setToolTip(ov.description or name)
            else:
                it.setEnabled(False)
                it.setToolTip(f"Unavailable: {ov.reason}")
                it.setText(f"{name} (unavailable)")
            self.overlay_model.appendRow(it)
        self._select_in_box(self.overlays.current)
        self.overlay_box.blockSignals(False)

    def _select_in_box(self, name: str) -> None:
        for i in range(self.overlay_model.rowCount()):
            if self.overlay_model.item(i).data(Qt.ItemDataRole.UserRole) == name:
                self.overlay_box.setCurrentIndex(i)
                return
        self.overlay_box.setCurrentIndex(-1)

    def _on_overlay_chosen(self, index: int) -> None:
        if index < 0:
            return
        name = self.overlay_model.item(index).data(Qt.ItemDataRole.UserRole)
        if name in self.overlays and self.overlays.get(name).available:
            self.overlays.set_current(name)

    def _set_display(self, **changes) -> None:
        if self.overlays.current_overlay() is not None:
            self.overlays.set_display(**changes)

    def _auto_limits(self) -> None:
        ov = self.overlays.current_overlay()
        if ov is not None and ov.kind == "scalar":
            d = default_display(ov.values, "scalar")
            self.overlays.set_display(limits=d.limits)

    def _sync_controls(self) -> None:
        """Show the current overlay's display settings in the controls, without echoing back."""
        ov = self.overlays.current_overlay()
        scalar = ov is not None and ov.kind == "scalar"
        for w in (self.cmap, self.vmin, self.vmax, self.auto, self.threshold):
            w.setEnabled(scalar)
        self.opacity.setEnabled(ov is not None)
        if ov is None:
            return
        d = ov.display
        widgets = (self.cmap, self.vmin, self.vmax, self.threshold, self.opacity)
        for w in widgets:
            w.blockSignals(True)
        i = self.cmap.findData(d.cmap)
        if i >= 0:
            self.cmap.setCurrentIndex(i)
        span = abs(d.limits[1] - d.limits[0]) or 1.0
        step = 10 ** np.floor(np.log10(span / 20))
        for sb in (self.vmin, self.vmax, self.threshold):
            sb.setSingleStep(float(step))
        self.vmin.setValue(d.limits[0])
        self.vmax.setValue(d.limits[1])
        self.threshold.setValue(d.threshold)
        self.opacity.setValue(int(round(100 * d.opacity)))
        for w in widgets:
            w.blockSignals(False)

    # --- state → view --------------------------------------------------------------------------------------------
    def _title(self) -> str:
        s = self.state.subject
        name = self.overlays.current
        if s is None:
            return ""
        sim = "  <span style='color:#d97706'><b>SIMULATION</b></span>" if s.is_simulation else ""
        head = f"{s.name} — {name}{sim}" if name else f"{s.name}{sim}"
        if not s.voxels.has_surface and self.view_mode == "Flatmap":
            return head + "<br>" + NO_SURFACE
        return head

    def _on_subject_changed(self, subject) -> None:
        self.inspector.clear()
        if subject is None:
            self.flatmap.show_overlay(None)
            return
        vt = subject.voxels
        self._roi_labels, self._roi_names = subject.roi_labels()
        self._setup_flatmap(subject)
        has_surface, has_volume = vt.has_surface, vt.has_volume
        if has_volume:
            shape = subject.volume.get("shape") if subject.volume else None
            self.slices.set_grid(vt.ijk, shape)
        model = self.view_box.model()
        model.item(0).setEnabled(has_surface)
        model.item(1).setEnabled(has_surface)
        model.item(2).setEnabled(has_volume)
        for i, why in ((0, "no fsaverage5 mapping"), (1, "no fsaverage5 mapping"), (2, "no volume coordinates")):
            ok = model.item(i).isEnabled()
            model.item(i).setToolTip("" if ok else f"Unavailable: this subject has {why}")
        if not has_surface and has_volume:
            self.set_view_mode("Slices")
        elif has_surface and self.view_mode == "Slices":
            self.set_view_mode("Flatmap")
        self._draw()

    def _setup_flatmap(self, subject) -> None:
        """Place the subject's voxels on the flatmap: prepared in a pool thread, applied when ready."""
        self._raster_generation += 1
        self._raster_ready = False
        self.flatmap.set_raster(None)
        if self.mesh is None or not subject.voxels.has_surface:
            return
        gen, names = self._raster_generation, list(self._roi_names)
        self._raster_job = submit(prepare_raster, self.mesh, subject.voxels.hemi, subject.voxels.vertex,
                                  self._roi_labels, on_result=lambda r: self._on_raster(gen, r, names),
                                  on_error=lambda e, tb: self.context.error_raised.emit("Flatmap", e, tb))

    def _on_raster(self, generation: int, raster, names: list[str]) -> None:
        if generation != self._raster_generation:
            return  # another subject was opened meanwhile
        self.flatmap.set_raster(raster, names, redraw=False)  # _draw paints the overlay once
        self.flatmap.select_voxel(self.state.voxel)
        # the overlay in its own event-loop turn: placing the raster and colouring it are each a few tens of ms
        QTimer.singleShot(0, self, lambda: self._finish_raster(generation))

    def _finish_raster(self, generation: int) -> None:
        if generation != self._raster_generation:
            return
        self._raster_ready = True
        self._draw()

    def _on_current_changed(self, name: str) -> None:
        self.overlay_box.blockSignals(True)
        self._select_in_box(name)
        self.overlay_box.blockSignals(False)
        self._draw()

    def _on_values_changed(self, name: str) -> None:
        if name == self.overlays.current:
            self._draw()

    def _on_display_changed(self, name: str) -> None:
        if name != self.overlays.current:
            return
        self._sync_controls()
        mode = self.view_mode
        if mode == "Flatmap":
            self.flatmap.update_display()
        elif mode == "Slices":
            self.slices.update_display()
        elif self.surface3d is not None:
            self.surface3d.show_overlay(self.overlays.current_overlay(), self.flatmap._voxel_vertex, self._title())

    def _draw(self) -> None:
        """Draw the current overlay in the active view."""
        ov = self.overlays.current_overlay()
        self._sync_controls()
        mode = self.view_mode
        if mode == "Flatmap":
            self.flatmap.show_overlay(ov, self._title())
        elif mode == "Slices":
            self.slices.show_overlay(ov)
        elif self.surface3d is not None:
            self.surface3d.show_overlay(ov, self.flatmap._voxel_vertex, self._title())
        if self.is_drawn:
            self.drawn.emit()

    def _on_view_changed(self, mode: str) -> None:
        if mode == "3-D surface":
            self._ensure_surface3d()
            self.stack.setCurrentWidget(self.surface3d)
        else:
            self.stack.setCurrentWidget(self.slices if mode == "Slices" else self.flatmap)
        for w in (self.borders, self.labels, self.whole):
            w.setEnabled(mode == "Flatmap")
        self._draw()

    def _ensure_surface3d(self) -> None:
        if self.surface3d is not None:
            return
        from neurolens_app.widgets.surface3d import Surface3DWidget, load_inflated_mesh

        self.surface3d = Surface3DWidget()
        self.stack.addWidget(self.surface3d)
        self.context.show_status("Loading the inflated surface…", 0)

        def ready(mesh: dict) -> None:
            self.surface3d.set_mesh(mesh)
            self.context.show_status("3-D surface ready", 3000)
            self._draw()

        self._surface_job = submit(load_inflated_mesh, on_result=ready,
                                   on_error=lambda e, tb: self.context.error_raised.emit("3-D view", e, tb))

    # --- hover and selection -------------------------------------------------------------------------------------
    def _on_hover(self, voxel: int, vertex: int) -> None:
        parts = []
        if vertex >= 0:
            parts.append(f"{'LR'[vertex // N_PER_HEMI]} vertex {vertex % N_PER_HEMI}")
        if voxel >= 0:
            parts.append(f"voxel {voxel}")
            k = int(self._roi_labels[voxel]) if voxel < len(self._roi_labels) else 0
            parts.append(self._roi_names[k - 1] if k > 0 else "no ROI")
            ov = self.overlays.current_overlay()
            if ov is not None and voxel < len(ov.values):
                v = ov.values[voxel]
                if ov.kind == "categorical":
                    txt = ov.categories[int(v)] if np.isfinite(v) and int(v) < len(ov.categories) else "–"
                    if ov.alpha is not None:
                        txt += f" (weight {ov.alpha[voxel]:.2f})"
                else:
                    txt = f"{v:.4g}" if np.isfinite(v) else "–"
                parts.append(f"{ov.name}: {txt}")
        elif vertex >= 0:
            parts.append("no voxel")
        self.hover_text.emit(" · ".join(parts))

    def _on_voxel_changed(self, voxel: int) -> None:
        s = self.state.subject
        self.flatmap.select_voxel(voxel)
        if voxel >= 0 and s is not None and s.voxels.has_volume:
            self.slices.select_voxel(voxel, s.voxels.ijk[voxel])
        ov = self.overlays.current_overlay()
        run_data = self.context.sources.run_data
        extra = {"routing": run_data.get("routing"), "encoding_tuning": run_data.get("encoding_tuning"),
                 "encoding_categories": run_data.get("encoding_categories")}
        if ov is not None and 0 <= voxel < len(ov.values) and ov.kind == "scalar":
            extra.update(overlay=ov.name, value=float(ov.values[voxel]))
        self.inspector.show_voxel(s, voxel, extra)

    def apply_palette(self) -> None:
        self.flatmap.apply_palette()
        self.inspector.apply_palette()
        self.flatmap.title.setText(self._title())
