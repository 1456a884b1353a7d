"""``Surface3DWidget``: both hemispheres of the inflated fsaverage5 mesh in OpenGL (pyqtgraph.opengl).

Created only when the user asks for the 3-D view (OpenGL start-up is slow under software rendering). The meshes are
built once; an overlay change only recomputes vertex colours (``setVertexColors`` + ``meshDataChanged``), ≈26 ms per
frame with Mesa llvmpipe, instead of ≈250 ms for ``setMeshData``. Picking is done on the flatmap.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtWidgets import QVBoxLayout, QWidget

from neurolens_app.state.overlay_state import Overlay
from neurolens_app.widgets.colormaps import colorize_categorical, colorize_scalar
from neurolens_app.widgets.flatmap_mesh import N_PER_HEMI


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
        lay.addWidget(self.view)
        self.item = None
        self.meshdata = None
        self._base = None

    def set_mesh(self, mesh: dict) -> None:
        gl = self._gl
        v = mesh["vertices"] - mesh["vertices"].mean(0)
        self.meshdata = gl.MeshData(vertexes=v, faces=mesh["faces"])
        shade = np.clip(0.78 - 0.1 * np.asarray(mesh["sulc"], np.float32), 0.5, 0.95)
        self._base = np.stack([shade, shade, shade, np.ones_like(shade)], 1).astype(np.float32)
        self.meshdata.setVertexColors(self._base.copy())
        self.item = gl.GLMeshItem(meshdata=self.meshdata, smooth=True, shader="shaded", glOptions="opaque")
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

    def show_overlay(self, overlay: Overlay | None, voxel_vertex: np.ndarray) -> None:
        """Colour the surface by ``overlay`` (values per voxel; ``voxel_vertex`` (n_voxels,) global vertex or -1)."""
        rgba = np.zeros((2 * N_PER_HEMI, 4), np.uint8)
        if overlay is not None and overlay.available and len(overlay.values) == len(voxel_vertex):
            ok = voxel_vertex >= 0
            d = overlay.display
            if overlay.kind == "categorical":
                alpha = overlay.alpha[ok] if overlay.alpha is not None else None
                rgba[voxel_vertex[ok]] = colorize_categorical(overlay.values[ok], len(overlay.categories), alpha,
                                                              d.opacity)
            else:
                rgba[voxel_vertex[ok]] = colorize_scalar(overlay.values[ok], d.cmap, d.limits, d.threshold,
                                                         d.opacity)
        self.set_vertex_colors(rgba)

    def grab_image(self):
        return self.view.grabFramebuffer()
