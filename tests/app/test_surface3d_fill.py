"""The 3-D view's gap filling: empty vertices next to a voxel show that voxel; nothing spreads further."""

from __future__ import annotations

import numpy as np

from neurolens_app.widgets.surface3d import vertex_voxel_index


def test_empty_neighbours_take_the_lowest_neighbouring_voxel():
    # a strip of triangles over vertices 0..5: (0,1,2), (1,2,3), (2,3,4), (3,4,5)
    faces = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]])
    voxel_vertex = np.array([1, -1, 5, 1])  # voxels 0 and 3 share vertex 1; voxel 1 has no vertex
    out = vertex_voxel_index(faces, voxel_vertex, 7)
    assert out[1] == 0 and out[5] == 2  # a voxel's own vertex (lowest voxel when shared)
    assert out[0] == 0 and out[2] == 0 and out[3] == 0  # neighbours of vertex 1 (vertex 3 also touches 5: lower wins)
    assert out[4] == 2  # neighbour of vertex 5 only
    assert out[6] == -1  # not on any face next to a voxel


def test_on_the_real_mesh_filling_covers_the_gaps_between_sparse_voxels():
    from neurolens_app.widgets.surface3d import load_inflated_mesh

    mesh = load_inflated_mesh()
    n = len(mesh["vertices"])
    rng = np.random.default_rng(0)
    voxel_vertex = np.sort(rng.choice(n // 2, 2000, replace=False))  # sparse voxels on the left hemisphere
    out = vertex_voxel_index(mesh["faces"], voxel_vertex, n)
    assert (out[voxel_vertex] == np.arange(2000)).all()
    assert (out >= 0).sum() > 3 * 2000  # each voxel vertex has ~6 neighbours
    assert (out[n // 2:] == -1).all()  # no voxel, no colour on the other hemisphere
