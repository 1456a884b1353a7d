"""``FlatmapWidget``: both fsaverage5 hemispheres as a 2-D flatmap, with an overlay, ROI borders and labels.

The raster is restricted once per subject to the pixels its voxels can colour (``FlatmapSubset``); drawing an overlay
is then one small sparse product plus a colormap lookup into an RGBA image, and changing the colormap or limits
only repeats the lookup. Categorical overlays (ROIs, dominant expert) use the nearest vertex so labels are never
blended, with optional per-voxel opacity.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyqtgraph as pg
import scipy.sparse as sp
from PySide6.QtCore import QPointF, Qt, Signal
from PySide6.QtGui import QColor, QFont, QPalette

from neurolens_app.state.overlay_state import Overlay
from neurolens_app.widgets.colormaps import categorical_lut, get_cmap, scalar_lut
from neurolens_app.widgets.flatmap_mesh import N_PER_HEMI, FlatmapMesh, FlatmapSubset


@dataclass
class SubjectRaster:
    """Where one subject's voxels fall on a ``FlatmapMesh``: built once per subject, off the GUI thread.

    Attributes
    ----------
    voxel_vertex : (n_voxels,) int, global vertex of each voxel (-1 = not on the surface)
    vertex_to_voxel : (2 × 10242,) int, voxel at each vertex (-1 = none)
    subset : FlatmapSubset of the voxels' vertices
    voxel_pos : (n_voxels,) int, each voxel's index in ``subset.vertices`` (-1 = none)
    mean_op : sparse (len(subset.vertices), n_voxels), averages the voxels that share a vertex (real voxels
        sampled onto fsaverage5, and the demo's, often do)
    borders : (height, width, 4) uint8 RGBA image of the ROI borders, or None without ROIs
    label_centres : list of (label, row, col), where to write each ROI's name (per hemisphere)
    """

    voxel_vertex: np.ndarray
    vertex_to_voxel: np.ndarray
    subset: FlatmapSubset
    voxel_pos: np.ndarray
    mean_op: object = None
    borders: np.ndarray | None = None
    label_centres: list = field(default_factory=list)


def prepare_raster(mesh: FlatmapMesh, hemi: np.ndarray, vertex: np.ndarray,
                   roi_labels: np.ndarray | None = None) -> SubjectRaster:
    """Build a ``SubjectRaster`` (pure numpy, thread-safe).

    Parameters
    ----------
    hemi, vertex : (n_voxels,) int, hemisphere (0/1) and fsaverage5 vertex of each voxel (-1 = unknown)
    roi_labels : (n_voxels,) int, 0 = no ROI, k = k-th ROI (``Subject.roi_labels``), optional
    """
    hemi = np.asarray(hemi, np.int64)
    vertex = np.asarray(vertex, np.int64)
    ok = (hemi >= 0) & (vertex >= 0) & (vertex < N_PER_HEMI)
    g = np.where(ok, hemi * N_PER_HEMI + vertex, -1)
    v2v = np.full(2 * N_PER_HEMI, -1, np.int64)
    v2v[g[ok]] = np.flatnonzero(ok)
    subset = mesh.subset(g[ok])
    pos = subset.position(g)
    has = pos >= 0
    counts = np.bincount(pos[has], minlength=len(subset.vertices)).astype(np.float32)
    mean_op = sp.csr_matrix((1.0 / counts[pos[has]], (pos[has], np.flatnonzero(has))),
                            shape=(len(subset.vertices), len(g)), dtype=np.float32)
    borders, centres = None, []
    if roi_labels is not None and np.any(np.asarray(roi_labels) > 0):
        lab = np.asarray(roi_labels, np.float32).copy()
        lab[lab <= 0] = np.nan
        vs = np.full(len(subset.vertices), np.nan, np.float32)
        vs[pos[pos >= 0]] = lab[pos >= 0]
        img = subset.label_image(vs)
        edge = FlatmapMesh.borders(img)
        borders = np.zeros(edge.shape + (4,), np.uint8)
        borders[edge] = (255, 255, 255, 230)
        sep = 0.06 * mesh.shape[0]  # about one label width at the usual zoom
        centres = [(k, r, c) for k, _h, r, c in FlatmapMesh.label_centres(img, mesh.hemi_columns, sep)]
    return SubjectRaster(g, v2v, subset, pos, mean_op, borders, centres)


class FlatmapWidget(pg.GraphicsLayoutWidget):
    """The flatmap view.

    Signals
    -------
    hovered(int, int)   voxel (-1 if none) and global vertex (-1 outside cortex) under the mouse
    clicked(int, int)   voxel and global vertex clicked (left button)
    """

    hovered = Signal(int, int)
    clicked = Signal(int, int)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setToolTip("Flatmap of both hemispheres (fsaverage5). Hover for vertex, ROI and value; "
                        "click a voxel to inspect it; drag to pan, wheel to zoom.")
        self.ci.setContentsMargins(*(4,) * 4)
        self.mesh: FlatmapMesh | None = None
        self._vertex_to_voxel = np.zeros(0, np.int64)
        self._voxel_vertex = np.zeros(0, np.int64)
        self._voxel_pos = np.zeros(0, np.int64)
        self._subset = None
        self._overlay: Overlay | None = None
        self.raster: SubjectRaster | None = None
        self._pixel_values: np.ndarray | None = None  # scalar overlay at the subset's pixels
        self._drawn_threshold = 0.0

        self.title = self.addLabel("", row=0, col=0, colspan=2)
        self.view = self.addViewBox(row=1, col=0, lockAspect=True, invertY=True, enableMenu=False)
        self.view.setDefaultPadding(0.01)
        self.background_item = pg.ImageItem(axisOrder="row-major")
        self.overlay_item = pg.ImageItem(axisOrder="row-major")
        self.border_item = pg.ImageItem(axisOrder="row-major")
        for z, item in enumerate((self.background_item, self.overlay_item, self.border_item)):
            item.setZValue(z)
            self.view.addItem(item)
        self.marker = pg.ScatterPlotItem(size=self._em(0.9), pen=pg.mkPen("w", width=max(1, self._em(0.12))),
                                         brush=None, symbol="o")
        self.marker.setZValue(10)
        self.view.addItem(self.marker)
        self._labels: list[pg.TextItem] = []
        self.colorbar = pg.ColorBarItem(values=(0, 1), colorMap=get_cmap("viridis"), interactive=False,
                                        width=self._em(1.1))
        self.addItem(self.colorbar, row=1, col=1)
        self.legend = pg.LegendItem(offset=(-5, 5), labelTextSize=f"{self.font().pointSizeF():.0f}pt")
        self.legend.setParentItem(self.view)
        self.legend.setVisible(False)
        self._legend_key: tuple | None = None
        self.show_borders = True
        self.show_labels = True
        self.whole_cortex = False  # zoom: the subject's voxels (False) or the whole flatmap (True)
        self.scene().sigMouseMoved.connect(self._on_mouse_moved)
        self.scene().sigMouseClicked.connect(self._on_mouse_clicked)
        self.apply_palette()

    def _em(self, k: float) -> int:
        """Sizes follow the font, so the view scales with HiDPI and user font settings."""
        return max(1, int(round(k * self.fontMetrics().height())))

    # --- geometry ------------------------------------------------------------------------------------------------
    def set_mesh(self, mesh: FlatmapMesh) -> None:
        """Show the cortex of ``mesh``; a subject's voxels are placed with ``set_raster`` afterwards."""
        self.mesh = mesh
        bg = mesh.background
        self.background_item.setImage(bg, autoLevels=False, levels=(np.nanmin(bg) - 1.5, np.nanmax(bg) + 1.0))
        self.background_item.setLookupTable(scalar_lut("gray"))
        self.view.autoRange(padding=0.01)
        if self.raster is not None and self.raster.subset.mesh is not mesh:
            self.set_raster(None)

    def set_raster(self, raster: "SubjectRaster | None", roi_names: list[str] = (), *, redraw: bool = True) -> None:
        """Place a subject's voxels (``prepare_raster``, built off the GUI thread) and draw its ROI outlines.

        ``redraw=False`` when the caller draws an overlay right after: one redraw instead of two in the GUI thread.
        """
        self.raster = raster
        for t in self._labels:
            self.view.removeItem(t)
        self._labels = []
        if raster is None:
            self._voxel_vertex = np.zeros(0, np.int64)
            self._vertex_to_voxel = np.zeros(0, np.int64)
            self._subset, self._voxel_pos = None, np.zeros(0, np.int64)
            self.border_item.clear()
            self._redraw()
            return
        self._voxel_vertex, self._vertex_to_voxel = raster.voxel_vertex, raster.vertex_to_voxel
        self._subset, self._voxel_pos = raster.subset, raster.voxel_pos
        if raster.borders is None:
            self.border_item.clear()
        else:
            self.border_item.setImage(raster.borders, autoLevels=False, levels=None, lut=None)
        font = QFont(self.font())
        font.setBold(True)
        font.setPointSizeF(font.pointSizeF() * 0.85)
        for k, r, c in raster.label_centres:
            if 1 <= k <= len(roi_names):
                t = pg.TextItem(roi_names[k - 1], anchor=(0.5, 0.5), color=(255, 255, 255),
                                fill=pg.mkBrush(0, 0, 0, 140))
                t.setFont(font)
                t.setPos(c + 0.5, r + 0.5)
                t.setZValue(5)
                t.setVisible(self.show_labels)
                self.view.addItem(t)
                self._labels.append(t)
        self.fit_view(self.whole_cortex)
        if redraw:
            self._redraw()

    def fit_view(self, whole_cortex: bool = False) -> None:
        """Zoom to the subject's voxels (with a margin of surrounding cortex), or to the whole flatmap."""
        if self.mesh is None:
            return
        if whole_cortex or self._subset is None or len(self._subset.rows) == 0:
            self.view.autoRange(padding=0.01)
            return
        h, w = self.mesh.shape
        rows, cols = self._subset.rows // w, self._subset.rows % w
        r0, r1, c0, c1 = rows.min(), rows.max(), cols.min(), cols.max()
        mr, mc = 0.45 * (r1 - r0) + 10, 0.45 * (c1 - c0) + 10
        self.view.setRange(xRange=(max(0, c0 - mc), min(w, c1 + mc)), yRange=(max(0, r0 - mr), min(h, r1 + mr)),
                           padding=0)

    def set_voxel_vertices(self, hemi: np.ndarray, vertex: np.ndarray, roi_labels: np.ndarray | None = None,
                           roi_names: list[str] = ()) -> None:
        """Synchronous ``prepare_raster`` + ``set_raster`` (scripts and benchmarks; the app prepares in a worker)."""
        self.set_raster(prepare_raster(self.mesh, hemi, vertex, roi_labels), list(roi_names))

    def _mean_to_subset(self, voxel_values: np.ndarray) -> np.ndarray:
        """Scalar values per vertex: the mean over the voxels at each vertex (NaN voxels ignored)."""
        v = np.asarray(voxel_values, np.float32)
        valid = np.isfinite(v)
        op = self.raster.mean_op
        num = op @ np.where(valid, v, 0.0).astype(np.float32)
        den = op @ valid.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den > 0, num / den, np.nan).astype(np.float32)

    def _to_subset(self, voxel_values: np.ndarray) -> np.ndarray:
        """Per-vertex value of one of its voxels (labels: no averaging)."""
        vs = np.full(len(self._subset.vertices), np.nan, np.float32)
        ok = self._voxel_pos >= 0
        vs[self._voxel_pos[ok]] = np.asarray(voxel_values, np.float32)[ok]
        return vs

    def voxel_of_vertex(self, vertex: int) -> int:
        if vertex < 0 or vertex >= len(self._vertex_to_voxel):
            return -1
        return int(self._vertex_to_voxel[vertex])

    def vertex_of_voxel(self, voxel: int) -> int:
        return int(self._voxel_vertex[voxel]) if 0 <= voxel < len(self._voxel_vertex) else -1

    def set_borders_visible(self, borders: bool, labels: bool) -> None:
        self.show_borders, self.show_labels = borders, labels
        self.border_item.setVisible(borders)
        for t in self._labels:
            t.setVisible(labels)

    def show_overlay(self, overlay: Overlay | None, title: str = "") -> None:
        """Draw ``overlay`` (values per voxel) with its display settings; None clears the overlay."""
        self._overlay = overlay
        self.title.setText(title)
        self._redraw()

    @property
    def scalar_image(self) -> np.ndarray | None:
        """The drawn scalar map as a float image (height, width), NaN where nothing is drawn."""
        if self._pixel_values is None or self.mesh is None:
            return None
        out = np.full(self.mesh.shape[0] * self.mesh.shape[1], np.nan, np.float32)
        out[self._subset.rows] = self._pixel_values
        return out.reshape(self.mesh.shape)

    def _redraw(self) -> None:
        ov = self._overlay
        self._pixel_values = None
        if self._subset is None or ov is None or not ov.available or len(self._voxel_vertex) != len(ov.values):
            self.overlay_item.clear()
            self.colorbar.setVisible(False)
            self.legend.setVisible(False)
            return
        d = ov.display
        h, w = self.mesh.shape
        if ov.kind == "categorical":
            n = max(len(ov.categories), int(np.nanmax(ov.values)) + 1 if np.isfinite(ov.values).any() else 1)
            lut = categorical_lut(n)
            sub = self._subset
            lab = self._to_subset(ov.values)[sub.label_pos]
            ok = np.isfinite(lab)
            rgba = np.zeros((h * w, 4), np.uint8)
            pix = sub.label_pixels[ok]
            rgba[pix] = lut[lab[ok].astype(np.intp)]
            if ov.alpha is not None:
                a = np.nan_to_num(self._to_subset(ov.alpha)[sub.label_pos][ok], nan=0.0)
                rgba[pix, 3] = (255 * np.clip(a, 0, 1)).astype(np.uint8)
            self.overlay_item.setImage(rgba.reshape(h, w, 4), autoLevels=False, levels=None, lut=None)
            self.overlay_item.setOpacity(d.opacity)
            self.colorbar.setVisible(False)
            self._set_legend(ov.categories, lut)
            return
        values = ov.values
        if d.threshold > 0:
            values = np.where(np.abs(values) >= d.threshold, values, np.nan)
        self._drawn_threshold = d.threshold
        self._pixel_values = self._subset.interpolate(self._mean_to_subset(values))
        self._colorize_scalar()
        self.colorbar.setVisible(True)
        self.legend.setVisible(False)

    def _colorize_scalar(self) -> None:
        """Map the scalar pixels through the colormap ourselves: an RGBA uint8 image draws without pyqtgraph's
        per-paint float lookup, so a paint costs one ``drawImage``."""
        d = self._overlay.display
        h, w = self.mesh.shape
        v = self._pixel_values
        fin = np.isfinite(v)
        lut = scalar_lut(d.cmap)
        lo, hi = d.limits
        t = (v[fin] - lo) * ((len(lut) - 1) / max(hi - lo, 1e-12))
        rgba = np.zeros((h * w, 4), np.uint8)
        rgba[self._subset.rows[fin]] = lut[np.clip(t, 0, len(lut) - 1).astype(np.intp)]
        self.overlay_item.setImage(rgba.reshape(h, w, 4), autoLevels=False, levels=None, lut=None)
        self.overlay_item.setOpacity(d.opacity)
        self.colorbar.setColorMap(get_cmap(d.cmap))
        self.colorbar.setLevels(d.limits)

    def update_display(self) -> None:
        """Redraw after a display change (colormap, limits, threshold or opacity)."""
        ov = self._overlay
        if ov is None or not ov.available or self.mesh is None:
            return
        if ov.kind == "scalar" and self._pixel_values is not None and ov.display.threshold == self._drawn_threshold:
            self._colorize_scalar()  # colours only: no new interpolation
        else:
            self._redraw()

    def _set_legend(self, categories: list[str], lut: np.ndarray) -> None:
        # Rebuilding a pyqtgraph legend costs tens of ms of GUI-thread time: keep it when nothing changed.
        key = (tuple(categories), lut.tobytes())
        if key == self._legend_key:
            self.legend.setVisible(bool(categories))
            return
        self._legend_key = key
        self.legend.clear()
        if not categories:
            self.legend.setVisible(False)
            return
        for k, name in enumerate(categories):
            if not name:
                continue
            sample = pg.ScatterPlotItem(symbol="s", size=self._em(0.7), pen=None,
                                        brush=pg.mkBrush(*lut[k % len(lut)][:3]))
            self.legend.addItem(sample, name)
        self.legend.setVisible(True)

    # --- selection -----------------------------------------------------------------------------------------------
    def select_voxel(self, voxel: int) -> None:
        g = self.vertex_of_voxel(voxel)
        pos = self.mesh.vertex_pixel(g) if (self.mesh is not None and g >= 0) else None
        if pos is None:
            self.marker.setData([], [])
        else:
            r, c = pos
            self.marker.setData([c + 0.5], [r + 0.5])

    # --- mouse ---------------------------------------------------------------------------------------------------
    def _pixel_at(self, scene_pos) -> tuple[int, int] | None:
        if self.mesh is None or not self.view.sceneBoundingRect().contains(scene_pos):
            return None
        p = self.view.mapSceneToView(scene_pos)
        return int(np.floor(p.y())), int(np.floor(p.x()))

    def vertex_at_scene(self, scene_pos) -> int:
        rc = self._pixel_at(scene_pos)
        return -1 if rc is None else self.mesh.vertex_at(*rc)

    def scene_pos_of_voxel(self, voxel: int) -> QPointF | None:
        """Scene position of a voxel's pixel (used by tests and the benchmark to hover/click)."""
        g = self.vertex_of_voxel(voxel)
        pos = self.mesh.vertex_pixel(g) if (self.mesh is not None and g >= 0) else None
        if pos is None:
            return None
        return self.view.mapViewToScene(QPointF(pos[1] + 0.5, pos[0] + 0.5))

    def _on_mouse_moved(self, scene_pos) -> None:
        g = self.vertex_at_scene(scene_pos)
        self.hovered.emit(self.voxel_of_vertex(g), g)

    def _on_mouse_clicked(self, ev) -> None:
        if ev.button() != Qt.MouseButton.LeftButton or ev.double():
            return
        g = self.vertex_at_scene(ev.scenePos())
        if g >= 0:
            self.clicked.emit(self.voxel_of_vertex(g), g)

    # --- theme ---------------------------------------------------------------------------------------------------
    def apply_palette(self) -> None:
        pal = self.palette()
        self.setBackground(pal.color(QPalette.ColorRole.Base))
        fg = pal.color(QPalette.ColorRole.Text)
        self.title.setAttr("color", fg.name())
        self.title.setText(self.title.text)
        self.colorbar.axis.setPen(pg.mkPen(fg))
        self.colorbar.axis.setTextPen(pg.mkPen(fg))
        self.legend.setBrush(pg.mkBrush(QColor(pal.color(QPalette.ColorRole.Window)).darker(105)))
        self.legend.setLabelTextColor(fg)
