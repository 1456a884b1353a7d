"""``FlatmapMesh``: the pixel ↔ vertex mapping of a 2-D flatmap of both fsaverage5 hemispheres.

Built once from nilearn's bundled fsaverage5 flat mesh (offline) and cached on disk in ``NEUROLENS_CACHE_DIR``
(default ``~/.cache/neurolens``). Drawing a map is then a sparse matrix product: ``image = W @ vertex_values``, where
``W`` (n_pixels, 2 × 10,242) holds the barycentric weights of the triangle under each pixel. The left hemisphere is
drawn on the left, the right one on the right, occipital poles facing each other in the middle (pycortex layout).
Global vertex numbers are ``hemi * 10242 + vertex``.
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.sparse as sp

N_PER_HEMI = 10242
CACHE_VERSION = 2
_GAP_MM = 12.0  # between the two hemispheres
_MARGIN_PX = 4


def cache_dir() -> Path:
    return Path(os.environ.get("NEUROLENS_CACHE_DIR") or Path.home() / ".cache" / "neurolens")


@dataclass
class FlatmapMesh:
    """Precomputed flatmap raster.

    Attributes
    ----------
    shape : (height, width) of the image in pixels
    weights : scipy.sparse.csr_matrix (height * width, 2 * 10242), barycentric weights, rows sum to 1 inside cortex
    nearest : (height * width,) int32, global vertex nearest to each pixel, -1 outside cortex
    background : (height, width) float32, sulcal depth (for grey shading), NaN outside cortex
    hemi_columns : (2, 2) int, first and last image column of each hemisphere
    """

    shape: tuple[int, int]
    weights: sp.csr_matrix
    nearest: np.ndarray
    background: np.ndarray
    hemi_columns: np.ndarray

    # --- build and cache -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, height: int = 512, cache: bool = True) -> "FlatmapMesh":
        """The flatmap raster of ``height`` pixels, from the disk cache or built (≈0.5 s + nilearn import)."""
        path = cache_dir() / f"flatmap-fsaverage5-{height}-v{CACHE_VERSION}.npz"
        if cache and path.is_file():
            try:
                return cls._read(path)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache is rebuilt
        mesh = cls.build(height)
        if cache:
            try:
                mesh._write(path)
            except OSError:
                pass  # a read-only cache folder only costs the rebuild next time
        return mesh

    @classmethod
    def build(cls, height: int = 512) -> "FlatmapMesh":
        from matplotlib.tri import Triangulation  # fast C++ point location
        from nilearn.datasets import load_fsaverage, load_fsaverage_data

        fs = load_fsaverage("fsaverage5")
        sulc = load_fsaverage_data(mesh="fsaverage5", mesh_type="inflated", data_type="sulcal")
        parts = [fs["flat"].parts[h] for h in ("left", "right")]
        xy = [p.coordinates[:, :2].astype(np.float64) for p in parts]
        used = [np.unique(p.faces) for p in parts]
        lo = [c[u].min(0) for c, u in zip(xy, used)]
        hi = [c[u].max(0) for c, u in zip(xy, used)]
        span_y = max(h[1] - l[1] for l, h in zip(lo, hi))
        scale = (height - 2 * _MARGIN_PX) / span_y  # pixels per mm
        # x offsets (mm) that put the left hemisphere first, then a gap, then the right one
        x0 = [-lo[0][0], (hi[0][0] - lo[0][0]) + _GAP_MM - lo[1][0]]
        width_mm = (hi[0][0] - lo[0][0]) + _GAP_MM + (hi[1][0] - lo[1][0])
        width = int(np.ceil(width_mm * scale)) + 2 * _MARGIN_PX
        cy = 0.5 * (max(h[1] for h in hi) + min(l[1] for l in lo))

        cols = np.arange(width) + 0.5
        rows = np.arange(height) + 0.5
        # pixel centre -> mm; rows go top to bottom, y goes up
        px_x = (cols - _MARGIN_PX) / scale
        px_y = cy + (height / 2 - rows) / scale
        gx, gy = np.meshgrid(px_x, px_y)
        gx, gy = gx.ravel(), gy.ravel()
        n_pix = height * width

        row_idx, col_idx, vals = [], [], []
        nearest = np.full(n_pix, -1, np.int32)
        hemi_columns = np.zeros((2, 2), int)
        for h in range(2):
            x = xy[h][:, 0] + x0[h]
            y = xy[h][:, 1]
            faces = parts[h].faces.astype(np.int64)
            tri = Triangulation(x, y, faces)
            t = tri.get_trifinder()(gx, gy)
            inside = np.flatnonzero(t >= 0)
            f = faces[t[inside]]
            a, b, c = (np.stack([x[f[:, k]], y[f[:, k]]], 1) for k in range(3))
            p = np.stack([gx[inside], gy[inside]], 1)
            v0, v1, v2 = b - a, c - a, p - a
            d00 = (v0 * v0).sum(1); d01 = (v0 * v1).sum(1); d11 = (v1 * v1).sum(1)
            d20 = (v2 * v0).sum(1); d21 = (v2 * v1).sum(1)
            den = d00 * d11 - d01 * d01
            den[den == 0] = 1.0
            wb = (d11 * d20 - d01 * d21) / den
            wc = (d00 * d21 - d01 * d20) / den
            w = np.clip(np.stack([1 - wb - wc, wb, wc], 1), 0, 1)
            w /= w.sum(1, keepdims=True)
            g = f + h * N_PER_HEMI
            row_idx.append(np.repeat(inside, 3))
            col_idx.append(g.ravel())
            vals.append(w.ravel())
            nearest[inside] = g[np.arange(len(inside)), w.argmax(1)]
            hemi_cols = inside % width
            hemi_columns[h] = (hemi_cols.min(), hemi_cols.max())
        weights = sp.csr_matrix(
            (np.concatenate(vals).astype(np.float32), (np.concatenate(row_idx), np.concatenate(col_idx))),
            shape=(n_pix, 2 * N_PER_HEMI),
        )
        weights.eliminate_zeros()
        sulc_g = np.concatenate([np.asarray(sulc.data.parts[h], np.float32) for h in ("left", "right")])
        mesh = cls((height, width), weights, nearest, np.zeros((height, width), np.float32), hemi_columns)
        mesh.background = mesh.vertex_image(sulc_g)
        return mesh

    def _write(self, path: Path) -> None:
        from engine.atomic import atomic_write_bytes

        buf = io.BytesIO()
        w = self.weights
        np.savez(buf, shape=np.asarray(self.shape), data=w.data, indices=w.indices, indptr=w.indptr,
                 nearest=self.nearest, background=self.background, hemi_columns=self.hemi_columns,
                 version=np.asarray(CACHE_VERSION))
        atomic_write_bytes(path, buf.getvalue())

    @classmethod
    def _read(cls, path: Path) -> "FlatmapMesh":
        with np.load(path, allow_pickle=False) as z:
            if int(z["version"]) != CACHE_VERSION:
                raise ValueError("old cache")
            shape = tuple(int(s) for s in z["shape"])
            w = sp.csr_matrix((z["data"], z["indices"], z["indptr"]), shape=(shape[0] * shape[1], 2 * N_PER_HEMI))
            return cls(shape, w, z["nearest"], z["background"], z["hemi_columns"])

    @property
    def weights_csc(self) -> sp.csc_matrix:
        """Column-major copy of ``weights`` (built on first use) for fast column selection."""
        if getattr(self, "_csc", None) is None:
            self._csc = self.weights.tocsc()
        return self._csc

    def subset(self, vertices: np.ndarray) -> "FlatmapSubset":
        """The raster restricted to ``vertices`` (see ``FlatmapSubset``)."""
        return FlatmapSubset(self, vertices)

    # --- drawing -------------------------------------------------------------------------------------------------
    def vertex_image(self, vertex_values: np.ndarray, coverage: float = 0.5) -> np.ndarray:
        """Interpolate per-vertex values (2 × 10242,) to an image (height, width) float32.

        Vertices with NaN do not contribute; a pixel is NaN when less than ``coverage`` of its weight comes from
        finite vertices (so maps end cleanly at the edge of the measured voxels).
        """
        v = np.asarray(vertex_values, np.float32)
        valid = np.isfinite(v)
        num = self.weights @ np.where(valid, v, 0.0).astype(np.float32)
        den = self.weights @ valid.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            img = np.where(den >= coverage, num / den, np.nan).astype(np.float32)
        return img.reshape(self.shape)

    def label_image(self, vertex_labels: np.ndarray) -> np.ndarray:
        """Nearest-vertex image of per-vertex labels (height, width) float32; NaN outside cortex or unlabelled."""
        lab = np.asarray(vertex_labels, np.float32)
        out = np.full(self.nearest.shape, np.nan, np.float32)
        inside = self.nearest >= 0
        out[inside] = lab[self.nearest[inside]]
        return out.reshape(self.shape)

    def vertex_at(self, row: int, col: int) -> int:
        """Global vertex under pixel (row, col), -1 outside cortex or the image."""
        h, w = self.shape
        if not (0 <= row < h and 0 <= col < w):
            return -1
        return int(self.nearest[row * w + col])

    def vertex_pixel(self, vertex: int) -> tuple[float, float] | None:
        """(row, col) of a pixel whose nearest vertex is ``vertex`` (the one closest to their centre), or None."""
        idx = np.flatnonzero(self.nearest == vertex)
        if idx.size == 0:
            return None
        r, c = idx // self.shape[1], idx % self.shape[1]
        i = np.argmin((r - r.mean()) ** 2 + (c - c.mean()) ** 2)
        return float(r[i]), float(c[i])

    @staticmethod
    def borders(label_img: np.ndarray) -> np.ndarray:
        """Bool image (height, width): pixels next to a pixel of another label (borders between ROIs).

        Edges towards unlabelled pixels are not borders, so gaps between sampled voxels do not draw speckles.
        """
        lab = np.nan_to_num(label_img, nan=-1.0)
        edge = np.zeros(lab.shape, bool)
        dx = (lab[:, 1:] != lab[:, :-1]) & (lab[:, 1:] >= 0) & (lab[:, :-1] >= 0)
        dy = (lab[1:, :] != lab[:-1, :]) & (lab[1:, :] >= 0) & (lab[:-1, :] >= 0)
        edge[:, 1:] |= dx
        edge[:, :-1] |= dx
        edge[1:, :] |= dy
        edge[:-1, :] |= dy
        return edge

    @staticmethod
    def label_centres(label_img: np.ndarray, hemi_columns: np.ndarray,
                      min_separation: float = 0.0) -> list[tuple[int, int, float, float]]:
        """(label, hemi, row, col) where to write each label's name in each hemisphere.

        The position is the label's pixel closest to its centroid (so it lands on the ROI even if the ROI is
        curved) among those at least ``min_separation`` pixels from names already placed (thin parallel areas such
        as V1–V3 would otherwise get their names on top of each other). Smaller ROIs are placed first.
        """
        out = []
        lab = np.nan_to_num(label_img, nan=-1.0).astype(np.int32)
        for h in range(2):
            c0, c1 = hemi_columns[h]
            sub = lab[:, c0 : c1 + 1]
            ks, counts = np.unique(sub[sub >= 0], return_counts=True)
            placed: list[tuple[float, float]] = []
            for k in ks[np.argsort(counts)]:
                r, c = np.nonzero(sub == k)
                score = (r - r.mean()) ** 2 + (c - c.mean()) ** 2
                if placed and min_separation > 0:
                    pr = np.array(placed)
                    dist = np.sqrt(((r[:, None] - pr[None, :, 0]) ** 2 + (c[:, None] - pr[None, :, 1]) ** 2).min(1))
                    far = dist >= min_separation
                    if far.any():
                        score = np.where(far, score, np.inf)
                i = int(np.argmin(score))
                placed.append((float(r[i]), float(c[i])))
                out.append((int(k), h, float(r[i]), float(c[i] + c0)))
        return out


class FlatmapSubset:
    """The part of a ``FlatmapMesh`` that a fixed set of vertices (one subject's voxels) can colour.

    Built once per subject: the weight columns of those vertices and the pixel rows they touch. Drawing a map is
    then a product with a matrix a fraction of the full raster's size (occipital voxels cover ≈10 % of the pixels).

    Parameters
    ----------
    mesh : FlatmapMesh
    vertices : (n,) int, global vertex numbers (duplicates are merged)
    """

    def __init__(self, mesh: FlatmapMesh, vertices: np.ndarray) -> None:
        self.mesh = mesh
        self.vertices = np.unique(np.asarray(vertices, np.int64))
        wc = mesh.weights_csc[:, self.vertices].tocsr()
        self.rows = np.flatnonzero(np.diff(wc.indptr))  # pixels touched by at least one vertex
        self.weights = wc[self.rows]
        self.full_den = np.asarray(self.weights.sum(1), np.float32).ravel()
        inside = np.flatnonzero(mesh.nearest >= 0)
        nv = mesh.nearest[inside]
        pos = np.searchsorted(self.vertices, nv)
        pos = np.minimum(pos, max(len(self.vertices) - 1, 0))
        hit = (len(self.vertices) > 0) & (self.vertices[pos] == nv) if len(self.vertices) else np.zeros(0, bool)
        self.label_pixels = inside[hit]
        self.label_pos = pos[hit]

    def position(self, vertices: np.ndarray) -> np.ndarray:
        """Index of each global vertex in ``self.vertices`` (-1 when absent)."""
        v = np.asarray(vertices, np.int64)
        pos = np.minimum(np.searchsorted(self.vertices, v), max(len(self.vertices) - 1, 0))
        ok = (v >= 0) & (len(self.vertices) > 0)
        ok &= self.vertices[pos] == v if len(self.vertices) else ok
        return np.where(ok, pos, -1)

    def interpolate(self, values: np.ndarray, coverage: float = 0.5) -> np.ndarray:
        """Values at ``self.vertices`` (n,) → values of the touched pixels (len(rows),), NaN where uncovered."""
        v = np.asarray(values, np.float32)
        valid = np.isfinite(v)
        num = self.weights @ np.where(valid, v, 0.0).astype(np.float32)
        den = self.full_den if valid.all() else self.weights @ valid.astype(np.float32)
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(den >= coverage, num / den, np.nan).astype(np.float32)

    def image(self, values: np.ndarray, coverage: float = 0.5) -> np.ndarray:
        """Full image (height, width) float32, NaN outside the touched pixels."""
        out = np.full(self.mesh.shape[0] * self.mesh.shape[1], np.nan, np.float32)
        out[self.rows] = self.interpolate(values, coverage)
        return out.reshape(self.mesh.shape)

    def label_image(self, labels: np.ndarray) -> np.ndarray:
        """Nearest-vertex image (height, width) of values at ``self.vertices``; NaN elsewhere."""
        out = np.full(self.mesh.shape[0] * self.mesh.shape[1], np.nan, np.float32)
        out[self.label_pixels] = np.asarray(labels, np.float32)[self.label_pos]
        return out.reshape(self.mesh.shape)
