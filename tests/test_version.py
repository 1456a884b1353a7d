"""The version lives in one place (engine/_version.py); the package metadata, both commands and the About dialog
show that value."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from engine._version import __version__

ROOT = Path(__file__).resolve().parents[1]


def test_version_is_pep440():
    assert re.fullmatch(r"\d+\.\d+\.\d+([ab]|rc)?\d*(\.dev\d+)?", __version__), __version__


def test_pyproject_reads_the_version_from_engine():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml must not repeat the version"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "engine._version.__version__"}


def test_no_other_source_file_spells_the_version():
    literal = re.compile(r"""["']""" + re.escape(__version__) + r"""["']""")
    offenders = [str(p.relative_to(ROOT))
                 for d in ("engine", "neurolens_app", "packaging")
                 for p in (ROOT / d).rglob("*")
                 if p.suffix in {".py", ".spec", ".sh", ".desktop", ".json", ".yaml"}
                 and p.name != "_version.py" and literal.search(p.read_text(errors="replace"))]
    assert offenders == []


def test_cli_version(capsys):
    from engine.cli.main import main

    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurolens {__version__}"


def test_app_version(capsys):
    from neurolens_app.main import parse_args

    with pytest.raises(SystemExit) as e:
        parse_args(["--version"])
    assert e.value.code == 0
    assert capsys.readouterr().out.strip() == f"neurolens-app {__version__}"


def test_about_dialog_shows_the_version(qtbot):
    from PySide6.QtWidgets import QLabel

    from neurolens_app.dialogs.about_dialog import AboutDialog

    dlg = AboutDialog(None)
    qtbot.addWidget(dlg)
    assert any(f"NeuroLens {__version__}" in label.text() for label in dlg.findChildren(QLabel))
    assert f"neurolens: {__version__}" in dlg.text.toPlainText()
