"""The engine is GUI-free: nothing under engine/ imports Qt, pyqtgraph or the app (checked on source and at runtime)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

FORBIDDEN = ("PySide6", "shiboken6", "PyQt5", "PyQt6", "qtpy", "pyqtgraph", "neurolens_app")
ENGINE = Path(__file__).resolve().parents[1] / "engine"


def _imports(path: Path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield node.lineno, a.name
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module


def test_engine_sources_do_not_import_gui_modules():
    offenders = []
    for py in sorted(ENGINE.rglob("*.py")):
        for line, mod in _imports(py):
            if mod.split(".")[0] in FORBIDDEN:
                offenders.append(f"{py.relative_to(ENGINE.parent)}:{line} imports {mod}")
    assert not offenders, "engine/ must not import GUI modules:\n" + "\n".join(offenders)


def test_rule_detects_a_forbidden_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nfrom PySide6 import QtCore\n")
    assert [m for _, m in _imports(bad) if m.split(".")[0] in FORBIDDEN] == ["PySide6"]


def test_importing_every_engine_module_loads_no_gui_module():
    code = (
        "import importlib, pkgutil, sys, engine\n"
        "for m in pkgutil.walk_packages(engine.__path__, 'engine.'):\n"
        "    importlib.import_module(m.name)\n"
        f"bad = [m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r}]\n"
        "print(bad); sys.exit(1 if bad else 0)\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stdout + r.stderr
