"""``LogPanel``: the app's and the engine's log messages, filterable by level."""

from __future__ import annotations

import logging
import os

from PySide6.QtCore import QUrl
from PySide6.QtGui import QDesktopServices, QFontDatabase
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from neurolens_app.log_handler import log_dir, setup_logging

_LEVELS = [("Debug", logging.DEBUG), ("Info", logging.INFO), ("Warning", logging.WARNING), ("Error", logging.ERROR)]


class LogPanel(QWidget):
    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Show"))
        self.level = QComboBox()
        self.level.setToolTip("Lowest level of messages to show")
        for name, lv in _LEVELS:
            self.level.addItem(name, lv)
        self.level.setCurrentIndex(1)
        self.level.currentIndexChanged.connect(self._refilter)
        row.addWidget(self.level)
        row.addStretch(1)
        clear = QPushButton("Clear")
        clear.setToolTip("Clear the messages shown here (the log file keeps them)")
        clear.clicked.connect(self._clear)
        row.addWidget(clear)
        folder = QPushButton("Open log folder")
        folder.setToolTip(f"Open {log_dir()} (rotating log files)")
        folder.clicked.connect(lambda: QDesktopServices.openUrl(QUrl.fromLocalFile(os.fspath(log_dir()))))
        row.addWidget(folder)
        lay.addLayout(row)
        self.text = QPlainTextEdit()
        self.text.setReadOnly(True)
        self.text.setMaximumBlockCount(5000)
        self.text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.text.setToolTip("Log messages; the same lines are written to the rotating log file")
        lay.addWidget(self.text, 1)
        self._records: list[tuple[int, str]] = []
        handler = setup_logging()
        for lv, msg in handler.history:
            self._on_record(lv, msg)
        handler.emitter.record.connect(self._on_record)

    def _on_record(self, level: int, text: str) -> None:
        self._records = (self._records + [(level, text)])[-5000:]
        if level >= self.level.currentData():
            self.text.appendPlainText(text)

    def _refilter(self) -> None:
        self.text.setPlainText("\n".join(t for lv, t in self._records if lv >= self.level.currentData()))

    def _clear(self) -> None:
        self._records = []
        self.text.clear()
