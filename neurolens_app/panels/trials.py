"""``TrialsPanel``: stimulus thumbnails of every trial with split, repeat and category; selecting one shows its betas.

The list is virtual (``QListView`` + model with uniform item sizes): thumbnails are made only for visible rows and
cached, so subjects with tens of thousands of trials scroll smoothly.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np
from PySide6.QtCore import QAbstractListModel, QModelIndex, QSize, Qt, QTimer
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QListView, QVBoxLayout, QWidget

_CACHE_SIZE = 3000


class TrialListModel(QAbstractListModel):
    """Rows are trials (after filtering); DecorationRole is a thumbnail made on first request."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.subject = None
        self.rows = np.zeros(0, np.int64)
        self.icon_px = 64
        self._cache: OrderedDict[int, QPixmap] = OrderedDict()

    def set_subject(self, subject, rows: np.ndarray | None = None) -> None:
        self.beginResetModel()
        if subject is not self.subject:
            self._cache.clear()
        self.subject = subject
        self.rows = np.zeros(0, np.int64) if subject is None else (
            np.arange(subject.n_trials) if rows is None else np.asarray(rows, np.int64))
        self.endResetModel()

    def rowCount(self, parent=QModelIndex()) -> int:  # noqa: N802 - Qt API
        return 0 if parent.isValid() else len(self.rows)

    def trial_at(self, row: int) -> int:
        return int(self.rows[row])

    def row_of(self, trial: int) -> int:
        hit = np.flatnonzero(self.rows == trial)
        return int(hit[0]) if hit.size else -1

    def data(self, index: QModelIndex, role=Qt.ItemDataRole.DisplayRole):
        if not index.isValid() or self.subject is None:
            return None
        t = int(self.rows[index.row()])
        s = self.subject
        tr = s.trials
        img = int(tr.image_index[t])
        split = "test" if int(tr.split[t]) == 1 else "train"
        cat = self._category(img)
        if role == Qt.ItemDataRole.DisplayRole:
            rep = f" r{int(tr.repeat[t]) + 1}" if split == "test" else ""
            return f"{t} · {split}{rep}\n{cat}"
        if role == Qt.ItemDataRole.DecorationRole:
            return self._thumbnail(img)
        if role == Qt.ItemDataRole.ToolTipRole:
            cap = s.stimuli.captions[img] if s.stimuli.captions is not None and img < len(s.stimuli.captions) else ""
            return (f"Trial {t}: image {img} ({cat}), {split}, presentation {int(tr.repeat[t]) + 1}, "
                    f"session {int(tr.session[t])}, run {int(tr.run[t])}" + (f"\n“{cap}”" if cap else ""))
        return None

    def _category(self, img: int) -> str:
        st = self.subject.stimuli
        if st.labels is None or img >= len(st.labels):
            return ""
        k = int(st.labels[img])
        return st.categories[k] if 0 <= k < len(st.categories) else ""

    def _thumbnail(self, img: int) -> QPixmap:
        pm = self._cache.get(img)
        if pm is not None:
            self._cache.move_to_end(img)
            return pm
        a = np.ascontiguousarray(self.subject.images[img], dtype=np.uint8)
        h, w = a.shape[:2]
        qimg = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
        # smooth filtering only pays off when shrinking a lot (e.g. 425-pixel NSD images); small stimuli go fast
        mode = Qt.TransformationMode.SmoothTransformation if max(h, w) > 2 * self.icon_px else \
            Qt.TransformationMode.FastTransformation
        pm = QPixmap.fromImage(qimg.scaled(self.icon_px, self.icon_px, Qt.AspectRatioMode.KeepAspectRatio, mode))
        self._cache[img] = pm
        if len(self._cache) > _CACHE_SIZE:
            self._cache.popitem(last=False)
        return pm


class TrialsPanel(QWidget):
    """Thumbnails of trials; choose split or category; selecting a trial sets ``SubjectState.trial``."""

    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        row.addWidget(QLabel("Split"))
        self.split = QComboBox()
        self.split.addItems(["all", "train", "test"])
        self.split.setToolTip("Show all trials, training trials or test trials (repeated images)")
        row.addWidget(self.split)
        row.addWidget(QLabel("Category"))
        self.category = QComboBox()
        self.category.setToolTip("Show only the trials whose image has this category")
        row.addWidget(self.category)
        self.count = QLabel("")
        row.addWidget(self.count)
        row.addStretch(1)
        lay.addLayout(row)
        self.model = TrialListModel(self)
        em = self.fontMetrics().height()
        self.model.icon_px = 4 * em
        self.view = QListView()
        self.view.setViewMode(QListView.ViewMode.IconMode)
        self.view.setFlow(QListView.Flow.LeftToRight)
        self.view.setResizeMode(QListView.ResizeMode.Adjust)
        self.view.setMovement(QListView.Movement.Static)
        self.view.setUniformItemSizes(True)
        self.view.setLayoutMode(QListView.LayoutMode.Batched)
        self.view.setBatchSize(200)
        self.view.setWrapping(True)
        self.view.setIconSize(QSize(4 * em, 4 * em))
        self.view.setGridSize(QSize(int(6.5 * em), int(7 * em)))
        self.view.setSpacing(int(0.2 * em))
        self.view.setWordWrap(True)
        self.view.setModel(self.model)
        self.view.setToolTip("Click a trial to show its betas on the brain view")
        self.view.selectionModel().currentChanged.connect(self._on_current)
        lay.addWidget(self.view, 1)
        self.split.currentIndexChanged.connect(self._refilter)
        self.category.currentIndexChanged.connect(self._refilter)
        self.state.subject_changed.connect(self._on_subject_changed)
        self.state.trial_changed.connect(self._on_trial_changed)
        self._on_subject_changed(self.state.subject)

    def _on_subject_changed(self, subject) -> None:
        self.category.blockSignals(True)
        self.category.clear()
        self.category.addItem("all", -1)
        if subject is not None:
            for k, c in enumerate(subject.stimuli.categories):
                self.category.addItem(c, k)
        self.category.blockSignals(False)
        self._refilter()

    def _refilter(self) -> None:
        s = self.state.subject
        if s is None:
            self.model.set_subject(None)
            self.count.setText("")
            return
        keep = np.ones(s.n_trials, bool)
        split = self.split.currentText()
        if split != "all":
            keep &= np.asarray(s.trials.split) == (1 if split == "test" else 0)
        k = self.category.currentData()
        if k is not None and k >= 0 and s.stimuli.labels is not None:
            keep &= np.asarray(s.stimuli.labels)[np.asarray(s.trials.image_index)] == k
        self.model.set_subject(s, np.flatnonzero(keep))
        self.count.setText(f"{int(keep.sum())} of {s.n_trials} trials")
        self._on_trial_changed(self.state.trial)

    def _on_current(self, current: QModelIndex, _previous=None) -> None:
        if current.isValid():
            self.state.set_trial(self.model.trial_at(current.row()))

    def _on_trial_changed(self, trial: int) -> None:
        row = self.model.row_of(trial) if trial >= 0 else -1
        sm = self.view.selectionModel()
        sm.blockSignals(True)
        if row >= 0:
            idx = self.model.index(row)
            self.view.setCurrentIndex(idx)
            # after the (batched) layout has placed the item
            QTimer.singleShot(0, lambda: self.view.scrollTo(idx, QListView.ScrollHint.PositionAtCenter))
        else:
            self.view.clearSelection()
        sm.blockSignals(False)
