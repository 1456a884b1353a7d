"""``CurvesWidget``: live training curves (pyqtgraph), buffered and redrawn from a timer, not on every event.

Every ``Metric`` event is appended to a buffer (cheap, GUI thread); ``refresh()`` (called by the owner's QTimer at
about 10 Hz) redraws only the series that changed. Series are grouped by unit, one plot each: training losses (log
scale), test scores in [0, 1] (higher is better), test errors (MSE, distances: lower is better) and the learning
rate. A second run's curves can be overlaid (dashed) to compare two runs.
"""

from __future__ import annotations

import math

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, QTimer
from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QSizePolicy, QVBoxLayout, QWidget

from neurolens_app.widgets.colormaps import CATEGORICAL

# A new curve and its legend entry cost ~5 ms to create (pyqtgraph, Python). The first refresh of a run can meet a
# dozen series at once, so new curves are spread over a few refreshes to keep each GUI-thread turn short.
NEW_CURVES_PER_REFRESH = 1
LEFT_AXIS_PX = 56
PLOTS = (("loss", "Training loss"), ("test", "Test scores (higher is better)"),
         ("test_error", "Test error (lower is better)"), ("lr", "Learning rate"))
Y_LABELS = {"loss": "loss (log)", "test": "score", "test_error": "error", "lr": "lr"}
ROW_STRETCH = {"loss": 3, "test": 3, "test_error": 2, "lr": 1}
# test metrics that are errors (a different unit from the scores in [0, 1]: their own axis)
TEST_ERRORS = ("mse", "loss", "dist")


def grown_range(current: tuple[float, float] | None, lo: float, hi: float, *, floor: float | None = None,
                headroom: float = 0.25) -> tuple[float, float]:
    """An axis range that holds ``[lo, hi]``: ``current`` when it already does, else one with ``headroom`` (a fraction
    of the span) beyond the data on the side that grew, so that the axes move rarely and in coarse steps.

    Why: pyqtgraph's auto-range refits every axis on every redraw and regenerates its ticks, ~10 ms per live
    refresh in the GUI thread (~40 ms when a training worker competes for the GIL); a range that changes once in a
    while costs nothing between changes. ``floor`` clamps the lower end (0 for steps).
    """
    span = max(hi - lo, abs(hi) * 0.1, 1e-6)
    if current is not None and current[0] <= lo and hi <= current[1]:
        return current
    new_lo = lo if current is None or lo < current[0] else current[0]
    new_hi = hi if current is None or hi > current[1] else current[1]
    if current is None or lo < current[0]:
        new_lo = lo - headroom * span
    if current is None or hi > current[1]:
        new_hi = hi + headroom * span
    if floor is not None:
        new_lo = max(floor, new_lo)
    return float(new_lo), float(new_hi)


def plot_of(name: str, split: str) -> str:
    """Which plot a metric goes to: ``lr``, ``test`` (evaluation scores), ``test_error`` (evaluation errors) or
    ``loss`` (everything logged while training)."""
    if name == "lr":
        return "lr"
    if split == "test":
        return "test_error" if any(w in name.lower() for w in TEST_ERRORS) else "test"
    return "loss"


def series_key(name: str, split: str) -> str:
    return name if split in ("train", "test") else f"{split}/{name}"


def metrics_from_events(events) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """``{series: (steps, values, plot)}`` from engine ``Metric`` events (e.g. a run's recorded events, ``Run.events``)."""
    buf: dict[str, tuple[list, list, str]] = {}
    for e in events:
        if type(e).__name__ != "Metric" or e.step is None:
            continue
        key = series_key(e.name, e.split)
        xs, ys, _ = buf.setdefault(key, ([], [], plot_of(e.name, e.split)))
        xs.append(float(e.step))
        ys.append(float(e.value))
    return {k: (np.asarray(x), np.asarray(y), p) for k, (x, y, p) in buf.items()}


def _extent(plot: str, x, y) -> tuple[float, float, float, float]:
    """(x min, x max, y min, y max) of a series' finite points in view coordinates (log10 y on the loss plot); NaN
    where it has none."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if plot == "loss":
        y = np.log10(np.clip(y, 1e-8, None))
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return (math.nan,) * 4
    x, y = x[ok], y[ok]
    return float(x.min()), float(x.max()), float(y.min()), float(y.max())


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
            # the legend sits beside the plot, not over it, so it never hides the latest points
            p.legend = pg.LegendItem(labelTextSize="8pt")
            p.legend.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Fixed)  # its own size, at the top
            self.view.addItem(p.legend, row=row, col=1)
            self.view.ci.layout.setAlignment(p.legend, Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft)
            p.setLabel("bottom", "step")
            p.setLabel("left", Y_LABELS[key])
            p.getAxis("left").setWidth(LEFT_AXIS_PX)  # equal widths keep the x-linked plots' steps aligned
            if row:
                p.setXLink(self.plots["loss"])
            self.plots[key] = p
        for row, (key, _title) in enumerate(PLOTS):
            self.view.ci.layout.setRowStretchFactor(row, ROW_STRETCH[key])
        self.plots["loss"].setLogMode(y=True)
        for p in self.plots.values():
            p.disableAutoRange()  # ranges follow the data in coarse steps (_follow_data), see grown_range
        self._ranges: dict[tuple[str, str], tuple[float, float]] = {}  # what _follow_data last set, per (plot, axis)
        self._planned: int | None = None  # the run's planned steps: the x axis spans them from the start
        self._data: dict[str, tuple[list, list, str]] = {}
        self._items: dict[str, pg.PlotDataItem] = {}
        self._dirty: set[str] = set()
        self._compare: list[tuple[str, pg.PlotDataItem]] = []
        # per series, its (x min, x max, y min, y max) in view coordinates (log10 y on the loss plot), kept up to date
        # as points arrive, so following the data costs O(series) per redraw, not O(points)
        self._extents: dict[str, tuple[str, tuple[float, float, float, float]]] = {}
        self._compare_extents: list[tuple[str, tuple[float, float, float, float]]] = []
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
        self._extents.clear()
        self._compare_extents.clear()
        self._ranges.clear()
        self._planned = None

    def add_metric(self, name: str, value: float, step: int | None, split: str = "train") -> None:
        if step is None or not np.isfinite(value):
            return
        key = series_key(name, split)
        xs, ys, plot = self._data.setdefault(key, ([], [], plot_of(name, split)))
        xs.append(float(step))
        ys.append(float(value))
        self._dirty.add(key)
        x, y = float(step), (math.log10(max(value, 1e-8)) if plot == "loss" else float(value))
        old = self._extents.get(key)
        e = (x, x, y, y) if old is None else old[1]
        self._extents[key] = (plot, (min(e[0], x), max(e[1], x), min(e[2], y), max(e[3], y)))

    def set_planned_steps(self, total: int | None) -> None:
        """The run's planned number of steps (its ``Started`` event): the x axis shows 0…total from the first point,
        so it never moves while the run trains."""
        self._planned = int(total) if total else None

    def load_events(self, events) -> None:
        """Replace the curves by those of recorded events (then live ``add_metric`` calls continue them)."""
        events = list(events)
        self.clear()
        started = [e for e in events if type(e).__name__ == "Started" and getattr(e, "total", None)]
        self.set_planned_steps(started[-1].total if started else None)
        for key, (x, y, plot) in metrics_from_events(events).items():
            self._data[key] = (list(x), list(y), plot)
            self._extents[key] = (plot, _extent(plot, x, y))
            self._dirty.add(key)
        self._drain()

    def _drain(self) -> None:
        """Draw pending curves a few per event-loop turn (a recorded run opens while a subject loads: creating its
        dozen curves at once held the GUI thread ~17 ms inside that burst)."""
        if self.refresh() and self._dirty:
            QTimer.singleShot(0, self, self._drain)

    def series(self) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        """A copy of the buffered series ``{name: (steps, values)}``."""
        return {k: (np.asarray(x), np.asarray(y)) for k, (x, y, _) in self._data.items()}

    def refresh(self, max_new: int | None = NEW_CURVES_PER_REFRESH) -> int:
        """Redraw the series that changed since the last call; returns how many were redrawn.

        At most ``max_new`` curves are created per call (None: all); the others stay pending for the next call.
        """
        n = 0
        created = 0
        for key in sorted(self._dirty):
            xs, ys, plot = self._data[key]
            item = self._items.get(key)
            if item is None:
                if max_new is not None and created == max_new:
                    continue  # stays dirty: drawn on the next refresh
                created += 1
                color = pg.mkColor(*CATEGORICAL[len(self._items) % len(CATEGORICAL)])
                item = self.plots[plot].plot([], [], name=key, pen=pg.mkPen(color, width=2))
                self._items[key] = item
            y = np.asarray(ys)
            if plot == "loss":
                y = np.clip(y, 1e-8, None)  # log axis
            item.setData(np.asarray(xs), y)
            self._dirty.discard(key)
            n += 1
        if n:
            self._follow_data()
        return n

    def _follow_data(self) -> None:
        """Keep every point in view, moving the axes only when data leave them; a range the user changed (zoom, pan,
        pyqtgraph's auto-range button) is left alone."""
        # every buffered series, drawn or still pending, so the axes take their final extent at the first redraw
        extents = [*self._extents.values(), *self._compare_extents]
        for plot, p in self.plots.items():
            vb = p.getViewBox()
            ys = [e[2:] for pl, e in extents if pl == plot and math.isfinite(e[2])]
            if ys and self._owns(vb, plot, 1):
                lo, hi = min(y[0] for y in ys), max(y[1] for y in ys)
                self._set_range(vb, plot, 1, grown_range(self._ranges.get((plot, "y")), lo, hi))
        xs = [e[1] for _, e in extents if math.isfinite(e[1])]
        vb = self.plots["loss"].getViewBox()  # the other plots are x-linked to this one
        if xs and self._owns(vb, "loss", 0):
            hi = max(xs)
            if self._planned is not None and hi <= self._planned:
                rng = (0.0, self._planned * 1.02)  # the whole run from the start: the axis never moves
            else:
                rng = grown_range(self._ranges.get(("loss", "x")), 0.0, hi, floor=0.0, headroom=0.5)
            self._set_range(vb, "loss", 0, rng)

    def _owns(self, vb, plot: str, axis: int) -> bool:
        """Whether the view still shows what ``_follow_data`` set last (nothing set yet counts as ours)."""
        if vb.state["autoRange"][axis]:
            return False  # the user pressed pyqtgraph's "A": its auto-range has the axis now
        mine = self._ranges.get((plot, "xy"[axis]))
        return mine is None or np.allclose(vb.viewRange()[axis], mine, rtol=1e-6, atol=1e-9)

    def _set_range(self, vb, plot: str, axis: int, rng: tuple[float, float]) -> None:
        if self._ranges.get((plot, "xy"[axis])) == rng:
            return
        self._ranges[(plot, "xy"[axis])] = rng
        (vb.setXRange if axis == 0 else vb.setYRange)(*rng, padding=0)

    def overlay(self, label: str, curves: dict[str, tuple[np.ndarray, np.ndarray, str]]) -> None:
        """Draw another run's curves dashed over the current ones (``metrics_from_events`` output)."""
        for plot, item in self._compare:
            self.plots[plot].removeItem(item)  # also drops its legend entry
        self._compare = []
        self._compare_extents = [(plot, _extent(plot, x, y)) for x, y, plot in curves.values()]
        for i, (key, (x, y, plot)) in enumerate(sorted(curves.items())):
            color = pg.mkColor(*CATEGORICAL[(i + 10) % len(CATEGORICAL)])
            if plot == "loss":
                y = np.clip(y, 1e-8, None)
            item = self.plots[plot].plot(x, y, name=f"{key} ({label})",
                                         pen=pg.mkPen(color, width=2, style=Qt.PenStyle.DashLine))
            self._compare.append((plot, item))
        self._follow_data()

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
