"""``stretch_splitter``: a QSplitter of widgets with their stretch factors, the layout every panel builds."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QSplitter, QWidget

H, V = Qt.Orientation.Horizontal, Qt.Orientation.Vertical


def stretch_splitter(orientation: Qt.Orientation, *parts: tuple[QWidget, int]) -> QSplitter:
    """``stretch_splitter(H, (left, 1), (right, 3))``: the widgets side by side (H) or stacked (V), sharing extra
    space in proportion to their stretch factors."""
    split = QSplitter(orientation)
    for i, (widget, stretch) in enumerate(parts):
        split.addWidget(widget)
        split.setStretchFactor(i, stretch)
    return split
