"""``ShortcutsDialog``: a table of every action with a keyboard shortcut, generated from the window's actions."""

from __future__ import annotations

from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QDialogButtonBox, QHeaderView, QTableWidget, QTableWidgetItem, QVBoxLayout


class ShortcutsDialog(QDialog):
    def __init__(self, actions, parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Keyboard shortcuts")
        rows = sorted(((a.text().replace("&", "").rstrip("…."), a.shortcut().toString(
            QKeySequence.SequenceFormat.NativeText), a.toolTip()) for a in actions if not a.shortcut().isEmpty()),
            key=lambda r: r[0])
        table = QTableWidget(len(rows), 2)
        table.setHorizontalHeaderLabels(["Action", "Shortcut"])
        for i, (name, key, tip) in enumerate(rows):
            a, k = QTableWidgetItem(name), QTableWidgetItem(key)
            a.setToolTip(tip)
            table.setItem(i, 0, a)
            table.setItem(i, 1, k)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        table.horizontalHeader().setSectionResizeMode(1, QHeaderView.ResizeMode.ResizeToContents)
        table.verticalHeader().setVisible(False)
        table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.table = table
        lay = QVBoxLayout(self)
        lay.addWidget(table)
        b = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        b.rejected.connect(self.reject)
        lay.addWidget(b)
        em = self.fontMetrics().height()
        self.resize(28 * em, min(30, len(rows) + 4) * int(1.6 * em))
