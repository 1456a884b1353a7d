"""``HeatmapTable``: a small labelled matrix drawn as coloured cells with their values; rows are clickable.

Used for the expert × ROI routing-share matrix: few rows and columns, where reading the numbers matters as much as the
colours, and a click on a row (an expert) is the natural gesture.
"""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QBrush, QColor
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTableWidget, QTableWidgetItem

from neurolens_app.widgets.colormaps import scalar_lut


class HeatmapTable(QTableWidget):
    """Signals: ``row_clicked(int)``."""

    row_clicked = Signal(int)

    def __init__(self, parent=None, cmap: str = "viridis") -> None:
        super().__init__(parent)
        self.cmap = cmap
        self.values = np.zeros((0, 0))
        self.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.setSelectionMode(QAbstractItemView.SelectionMode.NoSelection)  # a selection fill would hide the colours
        self.row_labels: list[str] = []
        self.marked = -1
        self.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.verticalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.cellClicked.connect(lambda row, _col: self.row_clicked.emit(row))
        self.verticalHeader().sectionClicked.connect(self.row_clicked.emit)

    def set_matrix(self, values: np.ndarray, row_labels: list[str], col_labels: list[str],
                   limits: tuple[float, float] | None = None, center: float | None = None,
                   fmt: str = "{:.2f}") -> None:
        """Show ``values`` (n_rows, n_cols); NaN cells stay blank.

        Colours span ``limits`` (default 0..max) with ``self.cmap``; with ``center``, a diverging map spans
        ``center ± max |value - center|`` instead (e.g. the uniform share 1/n: which cells are above or below it).
        """
        v = np.asarray(values, np.float64)
        self.values = v
        self.clear()
        self.setRowCount(v.shape[0])
        self.setColumnCount(v.shape[1])
        self.row_labels = list(row_labels)
        self.marked = -1
        self.setVerticalHeaderLabels(row_labels)
        self.setHorizontalHeaderLabels(col_labels)
        finite = v[np.isfinite(v)]
        if center is not None:
            # at least ±10 % of the centre: differences in the third decimal stay pale instead of saturating
            m = max(float(np.abs(finite - center).max()) if finite.size else 0.0, 0.1 * abs(center), 1e-6)
            lo, hi = center - m, center + m
            lut = scalar_lut("RdBu_r")
        else:
            lo, hi = limits if limits is not None else (0.0, float(finite.max()) if finite.size else 1.0)
            lut = scalar_lut(self.cmap)
        for i in range(v.shape[0]):
            for j in range(v.shape[1]):
                x = v[i, j]
                text = fmt.format(x) if np.isfinite(x) else ""
                it = QTableWidgetItem(text)
                it.setTextAlignment(Qt.AlignmentFlag.AlignCenter)
                it.setToolTip(f"{row_labels[i]} · {col_labels[j]}: {text or 'n/a'}")
                if np.isfinite(x):
                    t = min(max((x - lo) / max(hi - lo, 1e-12), 0.0), 1.0)
                    r, g, b, _ = (int(c) for c in lut[int(round(t * (len(lut) - 1)))])
                    it.setBackground(QBrush(QColor(r, g, b)))
                    light = 0.299 * r + 0.587 * g + 0.114 * b > 140
                    it.setForeground(QBrush(QColor("black" if light else "white")))
                self.setItem(i, j, it)

    def mark_row(self, row: int) -> None:
        """Show ``row`` as the chosen one (a marker in its header; cell colours stay visible)."""
        self.marked = int(row)
        self.setVerticalHeaderLabels([("▶ " if i == row else "") + lab for i, lab in enumerate(self.row_labels)])
