"""Where the demo subject's voxels lie: visual areas laid out on nilearn's bundled fsaverage5 flat mesh.

No surface atlas ships offline, so the areas are drawn from the flat-mesh geometry. The flat patch is cut along the
calcarine sulcus, whose two banks form the posterior edge of the patch; the notch where the two banks meet is the
occipital pole. Each point of the occipital flat map gets two coordinates:

- ``t``: position along the posterior edge from the pole (mm, positive dorsal, i.e. towards the cuneus),
- ``d``: distance inwards from the posterior edge (mm, i.e. away from the calcarine).

Areas (widths jittered per subject): V1 is the strip ``0 <= d < w1`` along the calcarine, V2 and V3 are the next two
strips (their dorsal halves above the pole, ventral halves below), hV4 lies ventrally beyond V3v, LO laterally beyond
V3 around the pole, VOT ventral and anterior (occipitotemporal). Retinotopy follows the textbook layout: eccentricity
grows with ``|t|`` away from the pole, polar angle runs from the horizontal meridian at the calcarine to the vertical
meridian at the V1/V2 border and mirrors at every area border; dorsal areas see the lower visual field, ventral ones
the upper field, the left hemisphere the right visual field.

Coordinates in the visual field are image coordinates: ``x`` right and ``y`` down in [0, 1] of the image width,
fixation at (0.5, 0.5).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

ROI_NAMES = ("V1", "V2", "V3", "hV4", "LO", "VOT")
HEMI_SIGN = (1.0, -1.0)  # flat x is mirrored for the right hemisphere so both share one frame (posterior = +x)


@dataclass(frozen=True)
class FlatHemisphere:
    """One hemisphere of the fsaverage5 flat mesh in the occipital frame.

    Attributes
    ----------
    xy : (10242, 2) float64, flat coordinates (x mirrored for the right hemisphere)
    faces : (n_faces, 3) int
    pole : (2,) float64, flat position of the occipital pole (the notch of the calcarine cut)
    edge_y, edge_x : (n_bins,) the posterior edge of the patch: for each height ``y`` its largest ``x``
    """

    xy: np.ndarray
    faces: np.ndarray
    pole: np.ndarray
    edge_y: np.ndarray
    edge_x: np.ndarray

    def frame(self, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(d, t) of flat points (n, 2): distance in from the posterior edge and position along it from the pole."""
        edge = np.interp(xy[:, 1], self.edge_y, self.edge_x)
        return edge - xy[:, 0], xy[:, 1] - self.pole[1]


@functools.lru_cache(maxsize=1)
def flat_hemispheres() -> tuple[FlatHemisphere, FlatHemisphere]:
    """Left and right fsaverage5 flat hemispheres (nilearn's bundled meshes; works offline)."""
    out = []
    for h, name in enumerate(("left", "right")):
        coords, faces = _flat_mesh(name)
        faces = np.asarray(faces, np.int64)
        xy = np.asarray(coords, np.float64)[:, :2] * np.array([HEMI_SIGN[h], 1.0])
        used = np.unique(faces)
        # Posterior edge: the largest x in 2 mm bins of y, smoothed over 3 bins.
        bins = np.arange(np.floor(xy[used, 1].min()), np.ceil(xy[used, 1].max()) + 2, 2.0)
        idx = np.digitize(xy[used, 1], bins)
        ex = np.full(len(bins) + 1, np.nan)
        np.fmax.at(ex, idx, xy[used, 0])
        centres = np.concatenate([[bins[0] - 1], bins + 1])
        ok = np.isfinite(ex)
        ex, centres = ex[ok], centres[ok]
        ex = np.convolve(np.pad(ex, 1, mode="edge"), np.ones(3) / 3, mode="valid")
        # The pole: the notch of the posterior edge (where the calcarine banks meet), near the middle height.
        mid = (centres > -45) & (centres < 15)
        k = np.flatnonzero(mid)[np.argmin(ex[mid])]
        out.append(FlatHemisphere(xy=xy, faces=faces, pole=np.array([ex[k], centres[k]]), edge_y=centres, edge_x=ex))
    return out[0], out[1]


def _flat_mesh(hemi: str) -> tuple[np.ndarray, np.ndarray]:
    """(coordinates, faces) of nilearn's bundled fsaverage5 flat mesh for ``hemi`` ("left" or "right").

    Reads the GIfTI file nilearn ships (the one ``load_fsaverage("fsaverage5")["flat"]`` reads) with nibabel, which
    avoids importing nilearn (several seconds); falls back to nilearn when the file is not where expected.
    """
    import importlib.util
    import os

    spec = importlib.util.find_spec("nilearn")
    if spec is not None and spec.submodule_search_locations:
        path = os.path.join(spec.submodule_search_locations[0], "datasets", "data", "fsaverage5", f"flat_{hemi}.gii.gz")
        if os.path.isfile(path):
            import nibabel

            g = nibabel.load(path)
            return g.darrays[0].data, g.darrays[1].data
    from nilearn.datasets import load_fsaverage

    part = load_fsaverage("fsaverage5")["flat"].parts[hemi]
    return part.coordinates, part.faces


@dataclass(frozen=True)
class AreaLayout:
    """Sizes of the visual areas in the occipital frame (mm of the flat map). Jittered per subject."""

    v1_width: float = 14.0
    v2_width: float = 11.0
    v3_width: float = 10.0
    dorsal_length: float = 55.0  # extent of V1–V3 along the edge above the pole
    ventral_length: float = 65.0  # and below it
    hv4: tuple[float, float, float, float] = (-55.0, -18.0, 0.0, 14.0)  # t0, t1, d beyond V3 start, d extent
    lo: tuple[float, float, float, float] = (-18.0, 18.0, 0.0, 24.0)
    vot: tuple[float, float, float, float] = (-85.0, -42.0, 16.0, 26.0)
    pole_shift: float = 0.0  # mm along the edge

    @classmethod
    def for_subject(cls, rng: np.random.Generator) -> "AreaLayout":
        j = lambda v, s=0.1: float(v * rng.uniform(1 - s, 1 + s))  # noqa: E731
        base = cls()
        return cls(v1_width=j(base.v1_width), v2_width=j(base.v2_width), v3_width=j(base.v3_width),
                   dorsal_length=j(base.dorsal_length, 0.05), ventral_length=j(base.ventral_length, 0.05),
                   pole_shift=float(rng.normal(0, 2.0)))

    @property
    def v3_outer(self) -> float:
        return self.v1_width + self.v2_width + self.v3_width

    def assign(self, d: np.ndarray, t: np.ndarray) -> np.ndarray:
        """ROI index into ``ROI_NAMES`` of each point, -1 outside every area."""
        t = t - self.pole_shift
        roi = np.full(d.shape, -1, np.int64)
        along = (t > -self.ventral_length) & (t < self.dorsal_length) & (d >= 0)
        roi[along & (d < self.v1_width)] = 0
        roi[along & (d >= self.v1_width) & (d < self.v1_width + self.v2_width)] = 1
        roi[along & (d >= self.v1_width + self.v2_width) & (d < self.v3_outer)] = 2
        for k, (t0, t1, d0, dd) in ((3, self.hv4), (4, self.lo), (5, self.vot)):
            dstart = self.v3_outer + d0
            roi[(roi < 0) & (t >= t0) & (t < t1) & (d >= dstart) & (d < dstart + dd)] = k
        return roi


@dataclass(frozen=True)
class CorticalVoxels:
    """Sampled voxel positions. All arrays (n_voxels,) unless noted.

    hemi : int8 (0 left, 1 right); vertex : int32 (fsaverage5 vertex within the hemisphere, nearest to the voxel);
    flat_xy : (n, 2) flat position in the occipital frame; d, t : frame coordinates (mm); roi : index into ROI_NAMES.
    """

    hemi: np.ndarray
    vertex: np.ndarray
    flat_xy: np.ndarray
    d: np.ndarray
    t: np.ndarray
    roi: np.ndarray


def sample_voxels(n_voxels: int, rng: np.random.Generator, layout: AreaLayout) -> CorticalVoxels:
    """Sample ``n_voxels`` positions uniformly by flat-map area inside the visual areas of both hemispheres.

    Each voxel is a random point in a flat-mesh triangle (triangles drawn with probability proportional to area);
    its vertex is the triangle's corner nearest to the point, so several voxels may share a vertex, as real voxels
    sampled onto fsaverage5 do.
    """
    hems = flat_hemispheres()
    cand_h, cand_f, cand_a = [], [], []
    for h, hem in enumerate(hems):
        tri = hem.xy[hem.faces]  # (n_faces, 3, 2)
        d, t = hem.frame(tri.mean(1))
        inside = np.flatnonzero(layout.assign(d, t) >= 0)
        e1, e2 = tri[inside, 1] - tri[inside, 0], tri[inside, 2] - tri[inside, 0]
        cand_h.append(np.full(len(inside), h))
        cand_f.append(inside)
        cand_a.append(0.5 * np.abs(e1[:, 0] * e2[:, 1] - e1[:, 1] * e2[:, 0]))
    cand_h, cand_f, cand_a = np.concatenate(cand_h), np.concatenate(cand_f), np.concatenate(cand_a)
    pick = rng.choice(len(cand_f), size=n_voxels, p=cand_a / cand_a.sum())
    # Uniform barycentric coordinates in each picked triangle.
    r1, r2 = rng.random(n_voxels), rng.random(n_voxels)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], 1)
    hemi = cand_h[pick].astype(np.int8)
    faces_all = [hems[0].faces, hems[1].faces]
    xy = np.empty((n_voxels, 2))
    vertex = np.empty(n_voxels, np.int32)
    d = np.empty(n_voxels)
    t = np.empty(n_voxels)
    for h, hem in enumerate(hems):
        m = hemi == h
        tri_v = faces_all[h][cand_f[pick[m]]]  # (m, 3)
        xy[m] = np.einsum("nk,nkc->nc", bary[m], hem.xy[tri_v])
        vertex[m] = tri_v[np.arange(m.sum()), np.argmax(bary[m], 1)]
        d[m], t[m] = hem.frame(xy[m])
    roi = layout.assign(d, t)
    # Points near an area edge can fall just outside (the triangle centroid was inside): put them in the nearest area.
    out = roi < 0
    if out.any():
        roi[out] = layout.assign(np.clip(d[out], 0, None), t[out])
        roi[roi < 0] = 0 if not (roi >= 0).any() else np.bincount(roi[roi >= 0]).argmax()
    order = np.lexsort((vertex, hemi, roi))  # voxels grouped by ROI, then hemisphere, then vertex
    return CorticalVoxels(hemi=hemi[order], vertex=vertex[order], flat_xy=xy[order].astype(np.float32),
                          d=d[order], t=t[order] - layout.pole_shift, roi=roi[order])


def retinotopy(vox: CorticalVoxels, layout: AreaLayout, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Population receptive-field centres and sizes that follow the cortical layout.

    Returns
    -------
    dict of (n_voxels,) float32: ``x``, ``y`` (image coordinates, y down), ``ecc`` (distance from fixation in image
    widths), ``angle`` (polar angle in degrees in the contralateral hemifield: -90 lower vertical meridian, 0
    horizontal, +90 upper), ``size`` (Gaussian sigma in image widths).
    """
    n = len(vox.roi)
    d, t, roi = vox.d, vox.t, vox.roi
    w1, w2, w3 = layout.v1_width, layout.v2_width, layout.v3_width
    dorsal = t >= 0
    length = np.where(dorsal, layout.dorsal_length, layout.ventral_length)
    u = np.clip(np.abs(t) / length, 0, 1)
    # Cortical magnification: eccentricity grows faster than distance from the pole.
    ecc = 0.62 * (np.exp(1.6 * u) - 1) / (np.exp(1.6) - 1)
    frac = np.zeros(n)  # 0 at the horizontal meridian, 1 at the vertical meridian
    frac = np.where(roi == 0, np.clip(d / w1, 0, 1), frac)
    frac = np.where(roi == 1, 1 - np.clip((d - w1) / w2, 0, 1), frac)
    frac = np.where(roi == 2, np.clip((d - w1 - w2) / w3, 0, 1), frac)
    angle = np.where(dorsal, -90.0, 90.0) * frac
    # hV4: a full hemifield map (polar angle from -80 to +80 degrees along the edge), eccentricity growing inwards.
    t0, t1, d0, dd = layout.hv4
    m = roi == 3
    angle[m] = -80 + 160 * np.clip((t[m] - t0) / (t1 - t0), 0, 1)
    ecc[m] = 0.05 + 0.45 * np.clip((d[m] - layout.v3_outer - d0) / dd, 0, 1)
    # LO and VOT: coarse, mostly central fields.
    for k, (spread, centre_ecc) in ((4, (60.0, 0.18)), (5, (40.0, 0.1))):
        m = roi == k
        angle[m] = rng.normal(0, spread, m.sum())
        ecc[m] = np.abs(rng.normal(centre_ecc, 0.08, m.sum()))
    # Scatter: real pRF maps are noisy.
    angle = angle + rng.normal(0, 8.0, n)
    ecc = np.abs(ecc * np.exp(rng.normal(0, 0.15, n)) + rng.normal(0, 0.01, n))
    side = np.where(vox.hemi == 0, 1.0, -1.0)  # left hemisphere -> right visual field
    rad = np.deg2rad(angle)
    x = 0.5 + side * ecc * np.cos(rad)
    y = 0.5 - ecc * np.sin(rad)
    # Size grows with eccentricity and along the hierarchy (sigma = a + b * ecc, image widths).
    a = np.array([0.025, 0.035, 0.045, 0.07, 0.16, 0.22])[roi]
    b = np.array([0.15, 0.2, 0.3, 0.45, 0.5, 0.5])[roi]
    size = (a + b * ecc) * np.exp(rng.normal(0, 0.1, n))
    return {"x": x.astype(np.float32), "y": y.astype(np.float32), "ecc": ecc.astype(np.float32),
            "angle": angle.astype(np.float32), "size": size.astype(np.float32)}
