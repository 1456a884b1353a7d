"""``CurvesWidget``: live training curves (pyqtgraph), buffered and redrawn from a timer, not on every event.

Every ``Metric`` event is appended to a buffer (cheap, GUI thread); ``refresh()`` (called by the owner's QTimer at
about 10 Hz) redraws only the series that changed. Series are grouped in three plots: training losses, test metrics and
the learning rate. A second run's curves can be overlaid (dashed) to compare two runs.
"""

from __future__ import annotations

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QVBoxLayout, QWidget

from neurolens_app.widgets.colormaps import CATEGORICAL

PLOTS = (("loss", "Training loss"), ("test", "Test metrics"), ("lr", "Learning rate"))


def plot_of(name: str, split: str) -> str:
    """Which plot a metric goes to: ``lr``, ``test`` (evaluation) or ``loss`` (everything logged while training)."""
    if name == "lr":
        return "lr"
    return "test" if split == "test" else "loss"


def series_key(name: str, split: str) -> str:
    return name if split in ("train", "test") else f"{split}/{name}"


def metrics_from_events(events) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """``{series: (steps, values, plot)}`` from engine ``Metric`` events (e.g. a run's ``events.jsonl``)."""
    buf: dict[str, tuple[list, list, str]] = {}
    for e in events:
        if type(e).__name__ != "Metric" or e.step is None:
            continue
        key = series_key(e.name, e.split)
        xs, ys, _ = buf.setdefault(key, ([], [], plot_of(e.name, e.split)))
        xs.append(float(e.step))
        ys.append(float(e.value))
    return {k: (np.asarray(x), np.asarray(y), p) for k, (x, y, p) in buf.items()}


class CurvesWidget(QWidget):
    """Three stacked plots with a legend each; ``add_metric`` buffers, ``refresh`` draws."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        self.view = pg.GraphicsLayoutWidget()
        lay.addWidget(self.view)
        self.plots: dict[str, pg.PlotItem] = {}
        for row, (key, title) in enumerate(PLOTS):
            p = self.view.addPlot(row=row, col=0, title=title)
            # no grid: pyqtgraph draws it with the axes, which made every 10 Hz repaint cost ~40 ms (software raster)
            p.addLegend(offset=(-10, 10), labelTextSize="8pt")
            p.setLabel("bottom", "step")
            if row:
                p.setXLink(self.plots["loss"])
            self.plots[key] = p
        self.view.ci.layout.setRowStretchFactor(0, 3)
        self.view.ci.layout.setRowStretchFactor(1, 3)
        self.view.ci.layout.setRowStretchFactor(2, 1)
        self.plots["loss"].setLogMode(y=True)
        self._data: dict[str, tuple[list, list, str]] = {}
        self._items: dict[str, pg.PlotDataItem] = {}
        self._dirty: set[str] = set()
        self._compare: list[tuple[str, pg.PlotDataItem]] = []
        self.apply_palette()

    # --- data ----------------------------------------------------------------------------------------------------
    def clear(self) -> None:
        for p in self.plots.values():
            p.clear()
            if p.legend is not None:
                p.legend.clear()
        self._data.clear()
        self._items.clear()
        self._dirty.clear()
        self._compare.clear()

    def add_metric(self, name: str, value: float, step: int | None, split: str = "train") -> None:
        if step is None or not np.isfinite(value):
            return
        key = series_key(name, split)
        xs, ys, _ = self._data.setdefault(key, ([], [], plot_of(name, split)))
        xs.append(float(step))
        ys.append(float(value))
        self._dirty.add(key)

    def load_events(self, events) -> None:
        """Replace the curves by those of recorded events (then live ``add_metric`` calls continue them)."""
        self.clear()
        for key, (x, y, plot) in metrics_from_events(events).items():
            self._data[key] = (list(x), list(y), plot)
            self._dirty.add(key)
        self.refresh()

    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """A copy of the buffered series ``{name: (steps, values)}``."""
        return {k: (np.asarray(x), np.asarray(y)) for k, (x, y, _) in self._data.items()}

    def refresh(self) -> int:
        """Redraw the series that changed since the last call; returns how many were redrawn."""
        n = 0
        for key in sorted(self._dirty):
            xs, ys, plot = self._data[key]
            item = self._items.get(key)
            if item is None:
                color = pg.mkColor(*CATEGORICAL[len(self._items) % len(CATEGORICAL)])
                item = self.plots[plot].plot([], [], name=key, pen=pg.mkPen(color, width=2))
                self._items[key] = item
            y = np.asarray(ys)
            if plot == "loss":
                y = np.clip(y, 1e-8, None)  # log axis
            item.setData(np.asarray(xs), y)
            n += 1
        self._dirty.clear()
        return n

    def overlay(self, label: str, curves: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> None:
        """Draw another run's curves dashed over the current ones (``metrics_from_events`` output)."""
        for plot, item in self._compare:
            self.plots[plot].removeItem(item)  # also drops its legend entry
        self._compare = []
        for i, (key, (x, y, plot)) in enumerate(sorted(curves.items())):
            color = pg.mkColor(*CATEGORICAL[(i + 10) % len(CATEGORICAL)])
            if plot == "loss":
                y = np.clip(y, 1e-8, None)
            item = self.plots[plot].plot(x, y, name=f"{key} ({label})",
                                         pen=pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine))
            self._compare.append((plot, item))

    def apply_palette(self) -> None:
        pal = self.palette()
        self.view.setBackground(pal.color(QPalette.ColorRole.Base))
        fg = pal.color(QPalette.ColorRole.Text)
        for p in self.plots.values():
            p.setTitle(p.titleLabel.text, color=fg)
            p.legend.setLabelTextColor(fg)
            for ax in ("left", "bottom"):
                p.getAxis(ax).setTextPen(fg)
                p.getAxis(ax).setPen(fg)
