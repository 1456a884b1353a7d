"""``neurolens-app --screenshot FILE`` renders the loaded window to a PNG and exits (offscreen, subprocess)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from PySide6.QtGui import QImage

ROOT = Path(__file__).resolve().parents[2]


def test_screenshot_of_one_panel(surface_subject_path, tmp_path):
    out = tmp_path / "brain.png"
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-m", "neurolens_app.main", "--subject", str(surface_subject_path),
                        "--screenshot", str(out), "--panel", "brain", "--size", "1000x700",
                        "--settings", str(tmp_path / "s.ini")],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    img = QImage(str(out))
    assert img.width() > 400 and img.height() > 300


def test_a_screenshot_leaves_the_users_settings_alone(surface_subject_path, tmp_path):
    from neurolens_app.state.settings import AppSettings

    ini = tmp_path / "s.ini"
    user = AppSettings(ini)
    user.theme = "light"
    user.set_value("folders/runs", str(tmp_path / "runs"))
    user.qsettings.sync()
    before = ini.read_bytes()
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    r = subprocess.run([sys.executable, "-m", "neurolens_app.main", "--subject", str(surface_subject_path),
                        "--screenshot", str(tmp_path / "log.png"), "--panel", "log", "--theme", "dark",
                        "--settings", str(ini)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stdout + r.stderr
    assert ini.read_bytes() == before  # no layout, theme or recent subject written back
