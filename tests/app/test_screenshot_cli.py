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
    assert "Traceback" not in r.stderr  # nothing left running in the background to break at exit
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


def _app(args, tmp_path, timeout=120):
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    return subprocess.run([sys.executable, "-m", "neurolens_app.main", *map(str, args),
                           "--settings", str(tmp_path / "s.ini")],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)


def test_a_screenshot_error_exits_2_with_the_message_at_once(surface_subject_path, tmp_path):
    import time

    t0 = time.perf_counter()
    r = _app(["--subject", surface_subject_path, "--screenshot", tmp_path / "x.png", "--panel", "brain",
              "--overlay", "MoE routing: dominant expert"], tmp_path)
    assert r.returncode == 2 and "MoE routing: dominant expert" in r.stderr and "--run RUN_DIR" in r.stderr
    r = _app(["--subject", surface_subject_path, "--screenshot", tmp_path / "x.png", "--panel", "experts"], tmp_path)
    assert r.returncode == 2 and "--run RUN_DIR" in r.stderr
    r = _app(["--run", tmp_path, "--screenshot", tmp_path / "x.png"], tmp_path)
    assert r.returncode == 2 and "not a run folder" in r.stderr
    assert time.perf_counter() - t0 < 90  # three launches, none waiting for a timeout
    assert not (tmp_path / "x.png").exists()


def test_run_opens_a_users_run_with_its_subject_and_writes_nothing_else(surface_subject_path, tmp_path):
    from engine.events import drive
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    runs = tmp_path / "runs"
    cfg = get_preset("tiny-mlp").with_overrides({"epochs": 1})
    drive(train_job(cfg, surface_subject_path, runs / "mine"))
    before = sorted(p.relative_to(tmp_path) for p in runs.rglob("*"))
    out = tmp_path / "training.png"
    r = _app(["--run", runs / "mine", "--screenshot", out, "--panel", "training", "--size", "1000x700"], tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    assert QImage(str(out)).width() > 400
    assert sorted(p.relative_to(tmp_path) for p in runs.rglob("*")) == before  # nothing trained or written
