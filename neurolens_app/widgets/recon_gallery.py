"""``TestImagesGallery``: the subject's held-out test images as thumbnails (✓ on the reconstructed ones, from
``ReconState``). A click emits ``trial_clicked(int)``: the first test trial of that image."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QGroupBox, QListWidget, QListWidgetItem, QVBoxLayout

from neurolens_app.widgets.image_strip import pixmap


class TestImagesGallery(QGroupBox):
    __test__ = False  # not a pytest test class

    trial_clicked = Signal(int)

    def __init__(self, state, parent=None) -> None:
        super().__init__("Test images", parent)
        self.state = state
        em = self.fontMetrics().height()
        self.gallery = QListWidget()
        self.gallery.setViewMode(QListWidget.ViewMode.IconMode)
        self.gallery.setResizeMode(QListWidget.ResizeMode.Adjust)
        self.gallery.setMovement(QListWidget.Movement.Static)
        self.gallery.setUniformItemSizes(True)
        self.gallery.setIconSize(QSize(int(3.5 * em), int(3.5 * em)))
        self.gallery.setGridSize(QSize(int(4.6 * em), int(5.2 * em)))
        self.gallery.setToolTip("Held-out test images: click one to reconstruct it (✓ = reconstructed)")
        self.gallery.itemClicked.connect(lambda it: self.trial_clicked.emit(int(it.data(Qt.ItemDataRole.UserRole))))
        gl = QVBoxLayout(self)
        gl.setContentsMargins(4, 4, 4, 4)
        gl.addWidget(self.gallery)
        self.setMinimumWidth(int(12 * em))
        state.results_changed.connect(self.mark_reconstructed)

    def clear(self) -> None:
        self.gallery.clear()

    def fill(self, subject) -> None:
        """One thumbnail per test image of ``subject`` (None: empty)."""
        self.gallery.clear()
        if subject is not None:
            test = np.asarray(subject.split_indices("test"))
            images = np.asarray(subject.trials.image_index)[test]
            _, first = np.unique(images, return_index=True)
            cats, labels = subject.stimuli.categories, subject.stimuli.labels
            for j in sorted(first):
                img, trial = int(images[j]), int(test[j])
                it = QListWidgetItem(QIcon(pixmap(subject.images[img], self.gallery.iconSize().width())), str(img))
                it.setData(Qt.ItemDataRole.UserRole, trial)
                it.setData(Qt.ItemDataRole.UserRole + 1, img)
                cat = cats[int(labels[img])] if labels is not None and 0 <= int(labels[img]) < len(cats) else ""
                it.setToolTip(f"Image {img} ({cat}), first test trial {trial}")
                self.gallery.addItem(it)
        self.mark_reconstructed()

    def mark_reconstructed(self) -> None:
        """✓ on the gallery's reconstructed images."""
        for i in range(self.gallery.count()):
            it = self.gallery.item(i)
            img = int(it.data(Qt.ItemDataRole.UserRole + 1))
            it.setText(f"{img} ✓" if img in self.state.results else str(img))
