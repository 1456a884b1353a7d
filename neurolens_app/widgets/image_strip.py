"""Small image helpers for the panels: numpy RGB → QPixmap, and a captioned image tile."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import Qt
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QLabel, QVBoxLayout, QWidget


def to_uint8_rgb(image) -> np.ndarray:
    """(H, W, 3) uint8 from uint8 or float [0, 1] arrays, HWC or CHW, grey or RGB."""
    a = np.asarray(image)
    if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[2] not in (1, 3):
        a = np.moveaxis(a, 0, -1)
    if a.ndim == 2:
        a = a[..., None]
    if a.shape[2] == 1:
        a = np.repeat(a, 3, axis=2)
    if a.dtype != np.uint8:
        a = (np.clip(np.nan_to_num(a.astype(np.float32)), 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    return np.ascontiguousarray(a[..., :3])


def pixmap(image, size: int) -> QPixmap:
    """A QPixmap of ``image`` scaled to ``size`` pixels (nearest neighbour when enlarging small stimuli)."""
    a = to_uint8_rgb(image)
    h, w = a.shape[:2]
    qimg = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
    mode = Qt.TransformationMode.SmoothTransformation if max(h, w) > size else Qt.TransformationMode.FastTransformation
    return QPixmap.fromImage(qimg.scaled(size, size, Qt.AspectRatioMode.KeepAspectRatio, mode))


class ImageTile(QWidget):
    """An image with a caption under it; ``set_image(None)`` shows an empty frame."""

    def __init__(self, caption: str = "", size: int = 128, parent=None) -> None:
        super().__init__(parent)
        self.size_px = size
        lay = QVBoxLayout(self)
        lay.setContentsMargins(2, 2, 2, 2)
        lay.setSpacing(2)
        self.image = QLabel()
        self.image.setFixedSize(size, size)
        self.image.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.image.setStyleSheet("QLabel { border: 1px solid palette(mid); }")
        self.caption = QLabel(caption)
        self.caption.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.caption.setWordWrap(True)
        self.caption.setFixedWidth(size)
        lay.addWidget(self.image)
        lay.addWidget(self.caption)
        self.has_image = False

    def set_image(self, image, caption: str | None = None) -> None:
        if image is None:
            self.image.clear()
            self.has_image = False
        else:
            self.image.setPixmap(pixmap(image, self.size_px))
            self.has_image = True
        if caption is not None:
            self.caption.setText(caption)
