"""The 3-D surface view (OpenGL). Needs a real X display: the README's test command (``xvfb-run -a -s "-screen 0
1280x1024x24 +extension GLX" python -m pytest``) provides one. The suite itself runs offscreen (tests/conftest.py: the
same pixels on every machine), where there is no OpenGL; there, with a display present, the test runs itself again in
a child process on the X display (``QT_QPA_PLATFORM=xcb``), so it runs and counts under the README's command."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

pytestmark = pytest.mark.gl


def test_3d_view_shows_overlay_colours(qtbot, request):
    if not os.environ.get("DISPLAY"):
        pytest.skip("OpenGL needs an X display: run the suite under xvfb-run (the README's test command)")
    if os.environ.get("QT_QPA_PLATFORM", "") == "offscreen":
        env = {**os.environ, "QT_QPA_PLATFORM": "xcb"}
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", __file__,
                            "-k", "test_3d_view_shows_overlay_colours"],
                           capture_output=True, text=True, timeout=240, env=env)
        assert r.returncode == 0 and "1 passed" in r.stdout, r.stdout[-3000:] + r.stderr[-2000:]
        return
    loaded_window = request.getfixturevalue("loaded_window")
    win = loaded_window
    win.act_3d.trigger()
    brain = win.brain
    qtbot.waitUntil(lambda: brain.surface3d is not None and brain.surface3d.item is not None, timeout=60000)
    ov = win.context.overlays
    ov.set_current("Noise ceiling")
    colors = brain.surface3d.meshdata.vertexColors()
    g = brain.flatmap._voxel_vertex
    # vertices with voxels are coloured by the map, the others keep the grey shading
    assert not np.allclose(colors[g, 0], colors[g, 1])
    key = brain.surface3d.key
    assert key.isVisible() and not key.bar.pixmap().isNull() and key.hi.text() and key.lo.text()
    assert key.name.text() == "Noise ceiling"  # the colour bar says what it measures
    assert "Noise ceiling" in brain.surface3d.title.text()  # the view has the flatmap's title
    ov.set_display(cmap="gray")
    colors = brain.surface3d.meshdata.vertexColors()
    assert np.allclose(colors[g, 0], colors[g, 1], atol=0.02)
    qtbot.wait(200)
    img = brain.surface3d.grab_image()
    assert img.width() > 0
    arr = np.frombuffer(img.constBits(), np.uint8)
    assert arr.std() > 5  # something was rendered, not a black frame
    ov.set_current("ROI labels")  # saturated label colours: lit from the camera they must stay bright
    qtbot.wait(200)
    img = brain.surface3d.grab_image().convertToFormat(img.Format.Format_RGB888)
    rgb = np.frombuffer(img.constBits(), np.uint8)[: img.height() * img.bytesPerLine()]
    rgb = rgb.reshape(img.height(), img.bytesPerLine())[:, : img.width() * 3].reshape(img.height(), img.width(), 3)
    rgb = rgb.astype(int)
    coloured = (rgb.max(-1) - rgb.min(-1)) > 40
    assert coloured.sum() > 500 and rgb.max(-1)[coloured].mean() > 120  # not the near-black of a back-lit surface
