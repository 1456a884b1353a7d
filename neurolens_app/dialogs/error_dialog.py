"""``ErrorDialog``: the one-line message of an error, with the traceback behind "Details". Non-modal: the app keeps
running, and several errors can be open at once."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import (QDialog, QDialogButtonBox, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QStyle,
                               QVBoxLayout)

from engine.errors import NeuroLensError


def describe(exc: BaseException | str) -> tuple[str, str]:
    """(headline, message): engine errors already say what is wrong; others get their type named."""
    if isinstance(exc, str):
        return "Error", exc
    if isinstance(exc, NeuroLensError):
        return type(exc).__name__.replace("Error", " error").strip(), str(exc)
    return f"Unexpected {type(exc).__name__}", str(exc) or type(exc).__name__


class ErrorDialog(QDialog):
    """Shows ``exc`` (or a message) and its traceback ``details``."""

    def __init__(self, title: str, exc: BaseException | str, details: str = "", parent=None) -> None:
        super().__init__(parent)
        head, message = describe(exc)
        self.setWindowTitle(f"NeuroLens: {title}")
        self.message = message
        lay = QVBoxLayout(self)
        top = QHBoxLayout()
        icon = QLabel()
        size = self.style().pixelMetric(QStyle.PixelMetric.PM_MessageBoxIconSize)
        icon.setPixmap(self.style().standardIcon(QStyle.StandardPixmap.SP_MessageBoxCritical).pixmap(size, size))
        top.addWidget(icon)
        text = QLabel(f"<b>{title}: {head}</b><br>{_escape(message)}")
        text.setWordWrap(True)
        text.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        self.text = text
        top.addWidget(text, 1)
        lay.addLayout(top)
        self.details = QPlainTextEdit(details or "(no traceback)")
        self.details.setReadOnly(True)
        self.details.setVisible(False)
        self.details.setMinimumHeight(12 * self.fontMetrics().height())
        lay.addWidget(self.details, 1)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok)
        self.details_button = QPushButton("Details")
        self.details_button.setCheckable(True)
        self.details_button.setToolTip("Show the traceback (include it when you report a bug)")
        self.details_button.toggled.connect(self._toggle)
        buttons.addButton(self.details_button, QDialogButtonBox.ButtonRole.ActionRole)
        copy = QPushButton("Copy")
        copy.setToolTip("Copy the message and the traceback to the clipboard")
        copy.clicked.connect(lambda: QGuiApplication.clipboard().setText(f"{title}: {message}\n\n{details}"))
        buttons.addButton(copy, QDialogButtonBox.ButtonRole.ActionRole)
        buttons.accepted.connect(self.accept)
        lay.addWidget(buttons)
        self.setMinimumWidth(32 * self.fontMetrics().averageCharWidth() * 2)

    def _toggle(self, on: bool) -> None:
        self.details.setVisible(on)
        self.adjustSize()


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\n", "<br>")
