"""``AboutDialog``: versions of NeuroLens and its main libraries, and the provenance of the open subject."""

from __future__ import annotations

import json
import platform
import sys
from importlib import metadata

from PySide6.QtWidgets import QDialog, QDialogButtonBox, QLabel, QPlainTextEdit, QVBoxLayout

LIBRARIES = ("numpy", "scipy", "torch", "diffusers", "transformers", "peft", "nilearn", "nibabel", "h5py",
             "PySide6-Essentials", "pyqtgraph")


def versions() -> dict[str, str]:
    """Installed versions, read from package metadata (imports nothing heavy)."""
    import engine

    out = {"neurolens": engine.__version__, "python": sys.version.split()[0], "platform": platform.platform()}
    for lib in LIBRARIES:
        try:
            out[lib] = metadata.version(lib)
        except metadata.PackageNotFoundError:
            out[lib] = "not installed"
    return out


class AboutDialog(QDialog):
    def __init__(self, subject=None, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("About NeuroLens")
        lay = QVBoxLayout(self)
        v = versions()
        head = QLabel(f"<h2>NeuroLens {v['neurolens']}</h2>"
                      "<p>Decode what a person saw from their fMRI: encoding models, Mixture-of-Experts and "
                      "latent-diffusion reconstruction.</p>")
        head.setWordWrap(True)
        lay.addWidget(head)
        text = "Versions\n" + "\n".join(f"  {k}: {val}" for k, val in v.items())
        if subject is not None:
            sim = "  (SIMULATION: the built-in demo subject)" if subject.is_simulation else ""
            text += f"\n\nSubject: {subject.name}{sim}\n  path: {subject.path}\n  format: {subject.format}\n"
            text += "Provenance\n" + json.dumps(subject.provenance, indent=2, default=str)
        else:
            text += "\n\nNo subject open."
        self.text = QPlainTextEdit(text)
        self.text.setReadOnly(True)
        self.text.setToolTip("Versions and provenance; copy them into your methods section or a bug report")
        lay.addWidget(self.text, 1)
        b = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        b.rejected.connect(self.reject)
        lay.addWidget(b)
        em = self.fontMetrics().height()
        self.resize(36 * em, 28 * em)
