"""FlatmapMesh: the pixel ↔ vertex raster of both fsaverage5 hemispheres, and its disk cache."""

from __future__ import annotations

import numpy as np

from neurolens_app.widgets.flatmap_mesh import N_PER_HEMI, FlatmapMesh, cache_dir


def test_raster_interpolates_and_picks(tmp_path, monkeypatch):
    mesh = FlatmapMesh.load(128)
    assert (cache_dir() / "flatmap-fsaverage5-128-v2.npz").is_file()
    h, w = mesh.shape
    assert h == 128 and w > 2 * h
    rows = np.asarray(mesh.weights.sum(1)).ravel()
    inside = mesh.nearest >= 0
    np.testing.assert_allclose(rows[inside], 1.0, atol=1e-5)
    assert np.all(rows[~inside] == 0)
    img = mesh.vertex_image(np.full(2 * N_PER_HEMI, 3.0, np.float32))
    assert np.allclose(img[np.isfinite(img)], 3.0) and np.isfinite(img).sum() == inside.sum()
    # left hemisphere on the left, right on the right
    hemi = np.where(inside, mesh.nearest // N_PER_HEMI, -1).reshape(h, w)
    assert set(np.unique(hemi[:, : w // 3])) <= {-1, 0} and set(np.unique(hemi[:, -w // 3:])) <= {-1, 1}
    r, c = np.argwhere(hemi == 1)[0]
    v = mesh.vertex_at(r, c)
    assert v >= N_PER_HEMI and mesh.label_image(np.arange(2 * N_PER_HEMI))[r, c] == v
    assert mesh.vertex_at(-1, 0) == -1
    # a reload from the cache gives the same raster
    again = FlatmapMesh.load(128)
    assert (again.weights != mesh.weights).nnz == 0


def test_borders_and_label_centres():
    lab = np.full((10, 20), np.nan, np.float32)
    lab[2:8, 2:8] = 0
    lab[2:8, 8:14] = 1
    b = FlatmapMesh.borders(lab)
    assert b[4, 7] and b[4, 8] and not b[4, 4] and not b[0, 0] and not b[2, 2]  # no border towards unlabelled
    centres = FlatmapMesh.label_centres(lab, np.array([[0, 9], [10, 19]]))
    assert {(k, h) for k, h, _, _ in centres} == {(0, 0), (1, 0), (1, 1)}
    spread = FlatmapMesh.label_centres(lab, np.array([[0, 19], [19, 19]]), min_separation=5)
    (r0, c0), (r1, c1) = [(r, c) for _, _, r, c in spread]
    assert np.hypot(r0 - r1, c0 - c1) >= 5
