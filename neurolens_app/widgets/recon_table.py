"""``ReconTableView``: the metrics of every reconstructed image of the run (sortable; Best and Worst of a chosen
metric; export buttons) and the mean ± SD line. It observes ``ReconState``: redrawn when the results change, the
shown image's row selected. A click on a row emits ``image_clicked(int)``."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QComboBox, QGroupBox, QHBoxLayout, QHeaderView, QLabel,
                               QPushButton, QTableWidget, QTableWidgetItem, QVBoxLayout)

from engine.metrics.aggregate import higher_is_better
from engine.recon.results import metric_names


class _NumItem(QTableWidgetItem):
    """Table cell sorted by its number."""

    def __lt__(self, other) -> bool:
        a, b = self.data(Qt.ItemDataRole.UserRole), other.data(Qt.ItemDataRole.UserRole)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return super().__lt__(other)


def num_item(value: float, fmt: str = "{:.3f}") -> _NumItem:
    """A right-aligned cell showing ``value`` ("–" when not finite) that sorts by it."""
    it = _NumItem(fmt.format(value) if np.isfinite(value) else "–")
    it.setData(Qt.ItemDataRole.UserRole, float(value) if np.isfinite(value) else float("-inf"))
    it.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
    return it


def metric_header(name: str) -> str:
    return name + (" ↑" if higher_is_better(name) else " ↓")


class ReconTableView(QGroupBox):
    """Signals: ``image_clicked(int)`` (a row was clicked)."""

    image_clicked = Signal(int)

    def __init__(self, state, parent=None) -> None:
        super().__init__("Metrics of every reconstructed image", parent)
        self.state = state
        em = self.fontMetrics().height()
        tl = QVBoxLayout(self)
        trow = QHBoxLayout()
        self.rank_metric = QComboBox()
        self.rank_metric.setToolTip("Metric used by Best and Worst")
        self.best_btn = QPushButton("Best")
        self.best_btn.setToolTip("Show the image with the best value of the chosen metric")
        self.worst_btn = QPushButton("Worst")
        self.worst_btn.setToolTip("Show the image with the worst value of the chosen metric")
        self.export_png_btn = QPushButton("Export grid…")
        self.export_png_btn.setToolTip("Save ground truth, blurry and samples of every image in the table as a PNG")
        self.export_csv_btn = QPushButton("Export CSV…")
        self.export_csv_btn.setToolTip("Save the metrics table (per image, mean and SD) as CSV")
        for w in (QLabel("Rank by"), self.rank_metric, self.best_btn, self.worst_btn):
            trow.addWidget(w)
        trow.addStretch(1)
        trow.addWidget(self.export_png_btn)
        trow.addWidget(self.export_csv_btn)
        tl.addLayout(trow)
        self.table = QTableWidget(0, 0)
        self.table.setSortingEnabled(True)
        self.table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
        self.table.verticalHeader().setVisible(False)
        self.table.verticalHeader().setDefaultSectionSize(int(1.5 * em))
        self.table.setToolTip("Click a column header to sort; click a row to show that image")
        self.table.itemSelectionChanged.connect(self._on_selected)
        tl.addWidget(self.table, 1)
        self.aggregate = QLabel("")
        self.aggregate.setWordWrap(True)
        self.aggregate.setToolTip("Mean ± SD over the reconstructed images")
        tl.addWidget(self.aggregate)
        state.results_changed.connect(self.show_results)
        state.image_changed.connect(self.select_row)
        self._enable(False)

    def ordered_images(self) -> list[int]:
        """Image indices in the table's current (sorted) order."""
        out = []
        for row in range(self.table.rowCount()):
            it = self.table.item(row, 0)
            if it is not None and int(it.data(Qt.ItemDataRole.UserRole)) in self.state.results:
                out.append(int(it.data(Qt.ItemDataRole.UserRole)))
        return out

    def show_results(self) -> None:
        results = [self.state.results[k] for k in sorted(self.state.results)]
        names = metric_names(results)
        t = self.table
        t.blockSignals(True)
        t.setSortingEnabled(False)
        t.clear()
        t.setRowCount(len(results))
        t.setColumnCount(3 + len(names))
        t.setHorizontalHeaderLabels(["Image", "Category", "Trials"] + [metric_header(n) for n in names])
        for i, r in enumerate(results):
            s = r.summary()
            it = num_item(r.image_index, "{:.0f}")
            it.setData(Qt.ItemDataRole.UserRole, r.image_index)
            t.setItem(i, 0, it)
            t.setItem(i, 1, QTableWidgetItem(r.category))
            t.setItem(i, 2, QTableWidgetItem(" ".join(map(str, r.trials))))
            for j, n in enumerate(names):
                t.setItem(i, 3 + j, num_item(s.get(n, np.nan)))
        t.setSortingEnabled(True)
        t.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
        t.horizontalHeader().setSectionResizeMode(2, QHeaderView.ResizeMode.Stretch)  # the trials list
        t.blockSignals(False)
        current = self.rank_metric.currentText()
        self.rank_metric.clear()
        self.rank_metric.addItems(names)
        if current in names:
            self.rank_metric.setCurrentText(current)
        if results:
            table = np.array([[r.summary().get(n, np.nan) for n in names] for r in results])
            mean, sd = np.nanmean(table, 0), np.nanstd(table, 0)
            parts = [f"{n} {m:.3f} ± {d:.3f}" for n, m, d in zip(names, mean, sd)]
            self.aggregate.setText(f"{len(results)} images · " + " · ".join(parts))
        else:
            self.aggregate.setText("No reconstructions of this run yet")
        self._enable(bool(results))

    def _enable(self, has_results: bool) -> None:
        for b in (self.best_btn, self.worst_btn, self.export_png_btn, self.export_csv_btn):
            b.setEnabled(has_results)

    def select_row(self, image) -> None:
        t = self.table
        t.blockSignals(True)
        t.clearSelection()
        for row in range(t.rowCount()):
            it = t.item(row, 0)
            if image is not None and it is not None and int(it.data(Qt.ItemDataRole.UserRole)) == image:
                t.selectRow(row)
                t.scrollToItem(it)
                break
        t.blockSignals(False)

    def _on_selected(self) -> None:
        rows = self.table.selectionModel().selectedRows()
        if rows:
            img = int(self.table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole))
            if img != self.state.image:
                self.image_clicked.emit(img)
