"""``OverlayState``: the maps that can be shown on the brain, which one is shown, and how (colormap, limits...).

Any part of the app adds a map with ``set_overlay(name, values, kind=...)`` (one value per voxel of the current
subject) or lists one it cannot show yet with ``set_unavailable(name, reason)``; the brain view redraws on the signals.
Display settings are kept per overlay, so switching back restores the user's colormap and limits.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass, field

import numpy as np
from PySide6.QtCore import QObject, Signal

KINDS = ("scalar", "categorical")


@dataclass(frozen=True)
class DisplaySettings:
    """How a scalar overlay is drawn. ``threshold`` hides voxels with ``|value| < threshold``; 0 shows all."""

    cmap: str = "viridis"
    limits: tuple[float, float] = (0.0, 1.0)
    threshold: float = 0.0
    opacity: float = 1.0


@dataclass
class Overlay:
    """One map on the brain.

    Attributes
    ----------
    name : str
        Unique name shown in the overlay list.
    values : (n_voxels,) float32, or None when unavailable
        Scalar value, or for ``kind="categorical"`` an integer label (``NaN`` = not shown).
    kind : "scalar" or "categorical"
    categories : list of str
        Label names for categorical overlays (label k is ``categories[k]``).
    alpha : (n_voxels,) float in [0, 1], optional
        Per-voxel opacity (e.g. routing weight of the dominant expert).
    reason : str
        Why the overlay is unavailable ("" when it is available).
    description : str
        One sentence for the tooltip.
    display : DisplaySettings
    """

    name: str
    values: np.ndarray | None = None
    kind: str = "scalar"
    categories: list[str] = field(default_factory=list)
    alpha: np.ndarray | None = None
    reason: str = ""
    description: str = ""
    display: DisplaySettings = field(default_factory=DisplaySettings)
    group: str = ""

    @property
    def available(self) -> bool:
        return self.values is not None and not self.reason


def default_display(values: np.ndarray, kind: str, cmap: str | None = None,
                    limits: tuple[float, float] | None = None) -> DisplaySettings:
    """Robust limits (2nd-98th percentile; symmetric around 0 for signed data) and a matching colormap."""
    if kind == "categorical":
        return DisplaySettings(cmap=cmap or "categorical", limits=limits or (0.0, 1.0))
    finite = values[np.isfinite(values)]
    if limits is None:
        if finite.size == 0:
            limits = (0.0, 1.0)
        else:
            lo, hi = np.percentile(finite, [2, 98])
            if lo < 0 < hi:
                m = float(max(-lo, hi))
                lo, hi = -m, m
            if hi <= lo:
                hi = lo + 1.0
            limits = (float(lo), float(hi))
    if cmap is None:
        cmap = "RdBu_r" if limits[0] < 0 < limits[1] else "viridis"
    return DisplaySettings(cmap=cmap, limits=(float(limits[0]), float(limits[1])))


class OverlayState(QObject):
    """The overlay catalogue and the current selection.

    Signals
    -------
    overlays_changed()       an overlay was added, replaced, removed or became (un)available
    current_changed(str)     the shown overlay ("" for none)
    values_changed(str)      the values of overlay ``name`` changed (e.g. another trial)
    display_changed(str)     colormap, limits, threshold or opacity of overlay ``name`` changed
    """

    overlays_changed = Signal()
    current_changed = Signal(str)
    values_changed = Signal(str)
    display_changed = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._overlays: dict[str, Overlay] = {}
        self._current = ""
        self._batch_depth = 0
        self._batch_dirty = False

    @contextlib.contextmanager
    def batch(self):
        """Group many catalogue changes into one ``overlays_changed`` (e.g. when a subject opens)."""
        self._batch_depth += 1
        try:
            yield self
        finally:
            self._batch_depth -= 1
            if self._batch_depth == 0 and self._batch_dirty:
                self._batch_dirty = False
                self.overlays_changed.emit()

    def _catalogue_changed(self) -> None:
        if self._batch_depth:
            self._batch_dirty = True
        else:
            self.overlays_changed.emit()

    # --- catalogue -----------------------------------------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._overlays)

    def get(self, name: str) -> Overlay:
        return self._overlays[name]

    def __contains__(self, name: str) -> bool:
        return name in self._overlays

    def set_overlay(self, name: str, values, kind: str = "scalar", *, categories: list[str] | None = None,
                    alpha=None, cmap: str | None = None, limits: tuple[float, float] | None = None,
                    description: str = "", group: str = "", select: bool = False) -> Overlay:
        """Add or replace overlay ``name`` with ``values`` (n_voxels,). Keeps the user's display settings on replace.

        Parameters
        ----------
        values : array-like (n_voxels,)
            Scalar values, or integer labels for ``kind="categorical"`` (NaN or negative = not shown).
        kind : "scalar" or "categorical"
        categories : list of str, for categorical overlays
        alpha : array-like (n_voxels,) in [0, 1], optional per-voxel opacity
        cmap, limits : defaults for a new overlay (robust percentiles when omitted)
        select : make it the current overlay
        """
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
        values = np.asarray(values, dtype=np.float32).ravel()
        if kind == "categorical":
            values = np.where(np.isfinite(values) & (values >= 0), values, np.nan).astype(np.float32)
        if alpha is not None:
            alpha = np.clip(np.asarray(alpha, dtype=np.float32).ravel(), 0.0, 1.0)
            if alpha.shape != values.shape:
                raise ValueError(f"alpha has shape {alpha.shape}, values {values.shape}")
        old = self._overlays.get(name)
        display = old.display if (old is not None and old.available and old.kind == kind) else \
            default_display(values, kind, cmap, limits)
        ov = Overlay(name=name, values=values, kind=kind, categories=list(categories or []), alpha=alpha,
                     description=description or (old.description if old else ""), display=display,
                     group=group or (old.group if old else ""))
        was_available = old is not None and old.available
        self._overlays[name] = ov
        if not was_available:
            self._catalogue_changed()
        if select:
            self.set_current(name)
        if name == self._current:
            self.values_changed.emit(name)
        return ov

    def set_unavailable(self, name: str, reason: str, description: str = "", group: str = "") -> None:
        """List ``name`` disabled, with ``reason`` as its tooltip (e.g. "no encoding model in this run")."""
        old = self._overlays.get(name)
        self._overlays[name] = Overlay(name=name, reason=reason, description=description, group=group,
                                       display=old.display if old else DisplaySettings())
        self._catalogue_changed()
        if name == self._current:
            self.set_current("")

    def remove_overlay(self, name: str) -> None:
        if self._overlays.pop(name, None) is not None:
            self._catalogue_changed()
            if name == self._current:
                self.set_current("")

    def clear(self) -> None:
        self._overlays.clear()
        self._current = ""
        self._catalogue_changed()
        self.current_changed.emit("")

    # --- selection and display -----------------------------------------------------------------------------------
    @property
    def current(self) -> str:
        return self._current

    def current_overlay(self) -> Overlay | None:
        ov = self._overlays.get(self._current)
        return ov if ov is not None and ov.available else None

    def set_current(self, name: str) -> None:
        if name and name not in self._overlays:
            raise KeyError(f"no overlay named {name!r} (have {self.names()})")
        if name and not self._overlays[name].available:
            raise ValueError(f"overlay {name!r} is unavailable: {self._overlays[name].reason}")
        if name != self._current:
            self._current = name
            self.current_changed.emit(name)

    def set_display(self, name: str | None = None, **changes) -> None:
        """Change ``cmap``, ``limits``, ``threshold`` or ``opacity`` of overlay ``name`` (default: current)."""
        name = name or self._current
        ov = self._overlays[name]
        if "limits" in changes:
            lo, hi = (float(v) for v in changes["limits"])
            changes["limits"] = (lo, hi if hi > lo else lo + 1e-6)
        new = dataclasses.replace(ov.display, **changes)
        if new != ov.display:
            ov.display = new
            self.display_changed.emit(name)
