"""The desktop entry and its installer (packaging/install_desktop.sh). The frozen bundle itself is checked by
packaging/smoke_test.sh (minutes: it builds nothing here)."""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENTRY = ROOT / "resources" / "desktop" / "neurolens.desktop"


def read_entry(path: Path) -> dict[str, str]:
    cp = configparser.ConfigParser(interpolation=None)
    cp.optionxform = str  # desktop keys are case-sensitive
    cp.read_string(path.read_text(encoding="utf-8"))
    return dict(cp["Desktop Entry"])


def test_desktop_entry_starts_the_gui_with_the_shipped_icon():
    entry = read_entry(ENTRY)
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entry["Type"] == "Application"
    assert entry["Exec"] == "neurolens-app" and scripts["neurolens-app"] == "neurolens_app.main:main"
    assert (ROOT / "resources" / "icons" / f"{entry['Icon']}.svg").is_file()
    assert entry["StartupWMClass"] == "neurolens-app"  # Qt's WM_CLASS is the executable's name
    if shutil.which("desktop-file-validate"):
        r = subprocess.run(["desktop-file-validate", str(ENTRY)], capture_output=True, text=True)
        assert r.returncode == 0 and not r.stdout.strip(), r.stdout + r.stderr


@pytest.fixture
def fake_bundle(tmp_path):
    """A folder shaped like dist/neurolens (a path with a space, as users' folders have)."""
    bundle = tmp_path / "my apps" / "neurolens"
    bundle.mkdir(parents=True)
    app = bundle / "neurolens-app"
    app.write_text("#!/bin/sh\nexit 0\n")
    app.chmod(app.stat().st_mode | stat.S_IXUSR)
    return bundle


def test_install_desktop_points_the_entry_at_the_bundle(fake_bundle, tmp_path):
    data = tmp_path / "data"
    env = dict(os.environ, XDG_DATA_HOME=str(data))
    script = ROOT / "packaging" / "install_desktop.sh"
    r = subprocess.run(["bash", str(script), str(fake_bundle)], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
    entry = read_entry(data / "applications" / "neurolens.desktop")
    assert entry["Exec"] == f'"{fake_bundle / "neurolens-app"}"'
    assert entry["TryExec"] == str(fake_bundle / "neurolens-app")
    icon = data / "icons" / "hicolor" / "scalable" / "apps" / "neurolens.svg"
    assert icon.read_bytes() == (ROOT / "resources" / "icons" / "neurolens.svg").read_bytes()

    r = subprocess.run(["bash", str(script), "--uninstall"], env=env, capture_output=True, text=True)
    assert r.returncode == 0
    assert not (data / "applications" / "neurolens.desktop").exists() and not icon.exists()


def test_install_desktop_refuses_a_folder_without_the_app(tmp_path):
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "data"))
    r = subprocess.run(["bash", str(ROOT / "packaging" / "install_desktop.sh"), str(tmp_path)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 2
    assert "neurolens-app: not found" in r.stderr
    assert not (tmp_path / "data" / "applications" / "neurolens.desktop").exists()
