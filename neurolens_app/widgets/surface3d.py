"""``Surface3DWidget``: both hemispheres of the inflated fsaverage5 mesh in OpenGL (pyqtgraph.opengl).

Created only when the user asks for the 3-D view (OpenGL start-up is slow under software rendering). The meshes are
built once; an overlay change only recomputes vertex colours (``setVertexColors`` + ``meshDataChanged``), ≈26 ms per
frame with Mesa llvmpipe, instead of ≈250 ms for ``setMeshData``. Picking is done on the flatmap.

A subject's voxels usually sit on a subset of the 20,484 vertices (one voxel per vertex, gaps between them): each
empty vertex next to a voxel's vertex takes that voxel's value (``vertex_voxel_index``), so a map reads as a map and not
as coloured dots. The flatmap's title (SIMULATION on simulated subjects) sits above the surface, and a colour bar
labelled with the overlay's name (scalar maps) or a legend (categorical ones) beside it.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QHBoxLayout, QLabel, QVBoxLayout, QWidget

from neurolens_app.state.overlay_state import Overlay
from neurolens_app.widgets.colormaps import categorical_lut, colorize_categorical, colorize_scalar, get_cmap
from neurolens_app.widgets.flatmap_mesh import N_PER_HEMI


_HEADLIGHT = None


def headlight_shader():
    """A shader lit from the camera: a surface facing the viewer shows its map colours at full strength, one seen
    edge-on darkens to 40 %. pyqtgraph's ``shaded`` lights from a fixed eye-space direction that leaves the faces
    turned to the viewer at its 20 % ambient level, which made every map on the brain look near-black."""
    global _HEADLIGHT
    if _HEADLIGHT is None:
        from pyqtgraph.opengl import shaders

        _HEADLIGHT = shaders.ShaderProgram("neurolens_headlight", [
            shaders.VertexShader("""
                uniform mat4 u_mvp;
                uniform mat3 u_normal;
                attribute vec4 a_position;
                attribute vec3 a_normal;
                attribute vec4 a_color;
                varying vec4 v_color;
                varying vec3 v_normal;
                void main() {
                    v_normal = normalize(u_normal * a_normal);
                    v_color = a_color;
                    gl_Position = u_mvp * a_position;
                }
            """),
            shaders.FragmentShader("""
                #ifdef GL_ES
                precision mediump float;
                #endif
                varying vec4 v_color;
                varying vec3 v_normal;
                void main() {
                    float p = abs(normalize(v_normal).z);
                    gl_FragColor = vec4(v_color.rgb * (0.4 + 0.6 * p), v_color.a);
                }
            """),
        ])
    return _HEADLIGHT


def vertex_voxel_index(faces: np.ndarray, voxel_vertex: np.ndarray, n_vertices: int) -> np.ndarray:
    """For every vertex, the voxel drawn there: its own voxel, else (for a vertex that shares a face edge with a
    voxel's vertex) the lowest-numbered such neighbouring voxel, else -1.

    ``voxel_vertex`` (n_voxels,) global vertex per voxel or -1. Computed once per subject and mesh.
    """
    out = np.full(n_vertices, -1, np.int64)
    ok = np.flatnonzero(voxel_vertex >= 0)
    out[voxel_vertex[ok][::-1]] = ok[::-1]  # several voxels on one vertex: the lowest-numbered one is drawn
    f = np.asarray(faces, np.int64)
    a = np.concatenate([f[:, 0], f[:, 1], f[:, 2], f[:, 1], f[:, 2], f[:, 0]])
    b = np.concatenate([f[:, 1], f[:, 2], f[:, 0], f[:, 0], f[:, 1], f[:, 2]])
    src = out[b]
    take = (out[a] < 0) & (src >= 0)  # edge a–b: an empty vertex a next to a voxel at b
    filled = np.full(n_vertices, np.iinfo(np.int64).max)
    np.minimum.at(filled, a[take], src[take])
    gap = (out < 0) & (filled < np.iinfo(np.int64).max)
    out[gap] = filled[gap]
    return out


def load_inflated_mesh() -> dict:
    """Vertices (2 × 10242, 3), faces of both hemispheres (global numbering) and sulcal depth, from nilearn."""
    from nilearn.datasets import load_fsaverage, load_fsaverage_data

    fs = load_fsaverage("fsaverage5")
    sulc = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
    verts, faces = [], []
    gap = 12.0  # mm between the hemispheres, so the medial occipital cortex (V1, calcarine) shows from behind
    for h, name in enumerate(("left", "right")):
        p = fs["inflated"].parts[name]
        v = np.asarray(p.coordinates, np.float32).copy()
        v[:, 0] += (-gap / 2 - v[:, 0].max()) if h == 0 else (gap / 2 - v[:, 0].min())
        verts.append(v)
        faces.append(np.asarray(p.faces, np.int64) + h * N_PER_HEMI)
    sulc_g = np.concatenate([np.asarray(sulc.data.parts[h], np.float32) for h in ("left", "right")])
    return {"vertices": np.concatenate(verts), "faces": np.concatenate(faces).astype(np.uint32), "sulc": sulc_g}


class Surface3DWidget(QWidget):
    """The 3-D view. ``set_mesh(load_inflated_mesh())`` once, then ``set_vertex_values`` for each overlay."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        import pyqtgraph.opengl as gl  # imported here: OpenGL only when the 3-D view is asked for

        self._gl = gl
        self.setToolTip("Inflated fsaverage5 surface: drag to rotate, wheel to zoom. Pick voxels on the flatmap.")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.view = gl.GLViewWidget()
        self.view.setCameraPosition(distance=360, elevation=12, azimuth=-90)  # from behind: occipital poles
        self.view.setBackgroundColor(self.palette().color(self.backgroundRole()))
        self.title = QLabel("")  # the flatmap's title: subject, overlay, SIMULATION on simulated subjects
        self.title.setTextFormat(Qt.TextFormat.RichText)
        self.title.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        lay.addWidget(self.title)
        row = QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.addWidget(self.view, 1)
        self.key = _ColourKey()
        row.addWidget(self.key)
        lay.addLayout(row)
        self.item = None
        self.meshdata = None
        self._base = None
        self._faces = None
        self._fill_key = None
        self._vertex_voxel = None

    def set_mesh(self, mesh: dict) -> None:
        gl = self._gl
        v = mesh["vertices"] - mesh["vertices"].mean(0)
        self.meshdata = gl.MeshData(vertexes=v, faces=mesh["faces"])
        self._faces, self._fill_key = mesh["faces"], None
        shade = np.clip(0.78 - 0.1 * np.asarray(mesh["sulc"], np.float32), 0.5, 0.95)
        self._base = np.stack([shade, shade, shade, np.ones_like(shade)], 1).astype(np.float32)
        self.meshdata.setVertexColors(self._base.copy())
        self.item = gl.GLMeshItem(meshdata=self.meshdata, smooth=True, shader=headlight_shader(),
                                  glOptions="opaque")
        self.view.addItem(self.item)

    def set_vertex_colors(self, rgba: np.ndarray) -> None:
        """Blend RGBA uint8 (2 × 10242, 4) over the grey sulcal shading and upload only the colours."""
        if self.item is None:
            return
        a = rgba[:, 3:4].astype(np.float32) / 255.0
        col = self._base.copy()
        col[:, :3] = (1 - a) * col[:, :3] + a * (rgba[:, :3].astype(np.float32) / 255.0)
        self.meshdata.setVertexColors(col)
        self.item.meshDataChanged()

    def show_overlay(self, overlay: Overlay | None, voxel_vertex: np.ndarray, title: str = "") -> None:
        """Colour the surface by ``overlay`` (values per voxel; ``voxel_vertex`` (n_voxels,) global vertex or -1),
        under ``title`` (rich text)."""
        self.title.setText(title)
        rgba = np.zeros((2 * N_PER_HEMI, 4), np.uint8)
        if overlay is not None and overlay.available and len(overlay.values) == len(voxel_vertex):
            src = self._vertex_voxels(voxel_vertex)
            ok = np.flatnonzero(src >= 0)
            vox = src[ok]
            d = overlay.display
            if overlay.kind == "categorical":
                alpha = overlay.alpha[vox] if overlay.alpha is not None else None
                rgba[ok] = colorize_categorical(overlay.values[vox], len(overlay.categories), alpha, d.opacity)
                self.key.show_categories(overlay.categories)
            else:
                rgba[ok] = colorize_scalar(overlay.values[vox], d.cmap, d.limits, d.threshold, d.opacity)
                self.key.show_scale(d.cmap, d.limits, overlay.name)
        else:
            self.key.hide_key()
        self.set_vertex_colors(rgba)

    def _vertex_voxels(self, voxel_vertex: np.ndarray) -> np.ndarray:
        if self._faces is None:
            out = np.full(2 * N_PER_HEMI, -1, np.int64)
            ok = np.flatnonzero(voxel_vertex >= 0)
            out[voxel_vertex[ok]] = ok
            return out
        key = np.asarray(voxel_vertex).tobytes()
        if key != self._fill_key:
            self._vertex_voxel = vertex_voxel_index(self._faces, voxel_vertex, 2 * N_PER_HEMI)
            self._fill_key = key
        return self._vertex_voxel

    def grab_image(self):
        return self.view.grabFramebuffer()


class _ColourKey(QWidget):
    """A vertical colour bar with its limits (scalar overlays) or a list of colour swatches (categorical ones)."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        self.name = QLabel()  # what the colours measure: the overlay's name
        self.name.setWordWrap(True)
        self.name.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        self.name.setMaximumWidth(int(7 * self.fontMetrics().height()))
        self.hi = QLabel()
        self.bar = QLabel()
        self.lo = QLabel()
        self.legend = QLabel()
        self.legend.setTextFormat(Qt.TextFormat.RichText)
        for w in (self.hi, self.bar, self.lo):
            w.setAlignment(Qt.AlignmentFlag.AlignHCenter)
        lay.addStretch(1)  # the key sits centred beside the surface
        lay.addWidget(self.name)
        lay.addWidget(self.hi)
        lay.addWidget(self.bar)
        lay.addWidget(self.lo)
        lay.addWidget(self.legend)
        lay.addStretch(1)
        self.setToolTip("Colour key of the overlay shown on the surface")
        self.hide_key()

    def hide_key(self) -> None:
        self.setVisible(False)

    def show_scale(self, cmap: str, limits: tuple[float, float], name: str = "") -> None:
        from PySide6.QtGui import QImage, QPixmap

        em = self.fontMetrics().height()
        h = max(8 * em, 120)
        lut = np.ascontiguousarray(get_cmap(cmap).getLookupTable(0.0, 1.0, h, alpha=False)[::-1], np.uint8)
        img = np.ascontiguousarray(np.repeat(lut[:, None, :], int(1.2 * em), axis=1))
        q = QImage(img.data, img.shape[1], img.shape[0], img.strides[0], QImage.Format.Format_RGB888).copy()
        self.bar.setPixmap(QPixmap.fromImage(q))
        self.hi.setText(f"{limits[1]:.3g}")
        self.lo.setText(f"{limits[0]:.3g}")
        self.name.setText(name)
        for w in (self.name, self.hi, self.bar, self.lo):
            w.setVisible(True)
        self.legend.setVisible(False)
        self.setVisible(True)

    def show_categories(self, names) -> None:
        lut = categorical_lut(max(len(names), 1))
        rows = [f"<span style='color:#{r:02x}{g:02x}{b:02x}'>■</span> {n}"
                for (r, g, b, _), n in zip(lut, names) if n]
        self.legend.setText("<br>".join(rows))
        for w in (self.name, self.hi, self.bar, self.lo):
            w.setVisible(False)
        self.legend.setVisible(True)
        self.setVisible(True)
