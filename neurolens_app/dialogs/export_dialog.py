"""``ExportDialog``: choose the file (PNG or SVG) and the size of an exported figure."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QHBoxLayout,
                               QLineEdit, QPushButton, QSpinBox)

PRESETS = [("1600 × 900", 1600, 900), ("1920 × 1080", 1920, 1080), ("3000 × 1500 (print)", 3000, 1500),
           ("1200 × 1200", 1200, 1200)]


class ExportDialog(QDialog):
    def __init__(self, folder: str, name: str = "brain-view.png", parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Export view")
        form = QFormLayout(self)
        self.path = QLineEdit(str(Path(folder) / name))
        self.path.setToolTip("Output file: .png (raster) or .svg (vector, for editing in Inkscape/Illustrator)")
        browse = QPushButton("Browse…")
        browse.setToolTip("Choose the output file")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.path, 1)
        row.addWidget(browse)
        form.addRow("File", row)
        self.preset = QComboBox()
        self.preset.setToolTip("Common figure sizes")
        for label, w, h in PRESETS:
            self.preset.addItem(label, (w, h))
        self.preset.currentIndexChanged.connect(self._on_preset)
        form.addRow("Preset", self.preset)
        self.width_box, self.height_box = QSpinBox(), QSpinBox()
        for sb, tip in ((self.width_box, "Figure width in pixels"), (self.height_box, "Figure height in pixels")):
            sb.setRange(16, 20000)
            sb.setToolTip(tip + " (independent of the window size)")
        form.addRow("Width", self.width_box)
        form.addRow("Height", self.height_box)
        self._on_preset(0)
        b = QDialogButtonBox(QDialogButtonBox.StandardButton.Save | QDialogButtonBox.StandardButton.Cancel)
        b.accepted.connect(self.accept)
        b.rejected.connect(self.reject)
        form.addRow(b)

    def _on_preset(self, i: int) -> None:
        w, h = self.preset.itemData(i)
        self.width_box.setValue(w)
        self.height_box.setValue(h)

    def _browse(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Export view", self.path.text(), "PNG image (*.png);;SVG (*.svg)")
        if p:
            self.path.setText(p)

    def values(self) -> tuple[Path, int, int]:
        return Path(self.path.text()), self.width_box.value(), self.height_box.value()
