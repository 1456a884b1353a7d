"""Where NeuroLens finds the files it ships (``resources/`` at the repository root).

Works from a source checkout, an editable install and a PyInstaller bundle (which unpacks ``resources/`` under
``sys._MEIPASS``). ``NEUROLENS_RESOURCES`` overrides the location.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path


def resources_root() -> Path:
    """The folder holding ``models/``, ``themes/``, ``icons/``...: the first candidate that exists."""
    candidates = []
    env = os.environ.get("NEUROLENS_RESOURCES")
    if env:
        candidates.append(Path(env))
    bundle = getattr(sys, "_MEIPASS", None)
    if bundle:
        candidates.append(Path(bundle) / "resources")
    candidates.append(Path(__file__).resolve().parent.parent / "resources")
    for c in candidates:
        if c.is_dir():
            return c
    return candidates[-1]


def resource_path(*parts: str) -> Path:
    """Path of a shipped file or folder, e.g. ``resource_path("models", "demo-image-embedder")``."""
    return resources_root().joinpath(*parts)


def log_dir() -> Path:
    """Where the app and the CLI write their log files: ``$NEUROLENS_LOG_DIR``, else
    ``$XDG_STATE_HOME/neurolens/logs`` (``~/.local/state/neurolens/logs``)."""
    env = os.environ.get("NEUROLENS_LOG_DIR")
    if env:
        return Path(env)
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "neurolens" / "logs"
