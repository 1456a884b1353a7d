"""Volumetric subjects without a surface mapping get the slice view; clicking a voxel selects it."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, Qt

from tests.helpers import make_tiny_subject


def _volume_subject():
    s = make_tiny_subject(n_voxels=60)
    grid = np.stack(np.meshgrid(np.arange(5), np.arange(4), np.arange(3), indexing="ij"), -1).reshape(-1, 3)
    from engine.data.subject import VoxelTable

    s.voxels = VoxelTable(hemi=np.full(60, -1, np.int8), vertex=np.full(60, -1, np.int32),
                          ijk=(grid + 1).astype(np.int32), noise_ceiling=np.linspace(0, 0.8, 60).astype(np.float32))
    s.volume = {"shape": [7, 6, 5], "affine": np.eye(4).tolist(), "space": "native"}
    return s


def test_volume_subject_uses_slices(qtbot, window):
    s = _volume_subject()
    window.context.subject.set_subject(s)
    brain = window.brain
    assert brain.view_mode == "Slices"
    assert not brain.view_box.model().item(0).isEnabled()
    window.context.overlays.set_current("Noise ceiling")
    sl = brain.slices
    assert sl.shape == (7, 6, 5)
    img = sl.items[2].image  # axial slice through the centre
    assert img is not None and np.isfinite(img).sum() == 20
    # click the voxel at ijk (2, 3, centre) on the axial view
    k = sl.spins[2].value()
    target = int(np.flatnonzero((s.voxels.ijk == [2, 3, k]).all(1))[0])
    view = sl.views[2]
    scene_pos = view.mapViewToScene(QPointF(2.5, 3.5))
    assert sl._voxel_at(scene_pos) == target
    pos = sl.graphics.mapFromScene(scene_pos)
    qtbot.mouseClick(sl.graphics.viewport(), Qt.MouseButton.LeftButton, pos=pos)
    qtbot.waitUntil(lambda: window.context.subject.voxel == target, timeout=5000)
    assert f"Voxel {target}" in brain.inspector.header.text()


def test_a_view_the_subject_cannot_show_is_refused_with_the_reason(qtbot, window):
    s = _volume_subject()
    window.context.subject.set_subject(s)
    brain = window.brain
    why = brain.set_view_mode("Flatmap")  # this subject has no surface mapping
    assert why and "fsaverage5" in why and brain.view_mode == "Slices"
    assert brain.set_view_mode("Slices") is None
    assert "unknown view" in brain.set_view_mode("Sideways")


def test_screenshot_of_an_unavailable_view_fails_clearly(tmp_path):
    """`--screenshot --view slices` on the demo (no volume) must not write an empty picture."""
    import os
    import subprocess
    import sys

    out = tmp_path / "x.png"
    env = {**os.environ, "QT_QPA_PLATFORM": "offscreen", "NEUROLENS_CACHE_DIR": os.environ.get(
        "NEUROLENS_CACHE_DIR", str(tmp_path / "cache"))}
    r = subprocess.run([sys.executable, "-m", "neurolens_app.main", "--demo", "--screenshot", str(out), "--panel",
                        "brain", "--view", "slices"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 2 and "no volume coordinates" in r.stderr and not out.exists()
