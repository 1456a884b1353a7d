"""Colormaps and lookup tables shared by the flatmap, the 3-D view, the slice view and the colour bar."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# (name, label); names are matplotlib colormap names (pyqtgraph converts them).
COLORMAPS = [
    ("viridis", "viridis (sequential)"),
    ("plasma", "plasma (sequential)"),
    ("inferno", "inferno (sequential)"),
    ("magma", "magma (sequential)"),
    ("cividis", "cividis (sequential)"),
    ("hot", "hot (sequential)"),
    ("RdBu_r", "RdBu_r (diverging)"),
    ("coolwarm", "coolwarm (diverging)"),
    ("twilight", "twilight (cyclic)"),
    ("gray", "gray"),
]

# Tableau-20-like palette: distinct categorical colours (ROIs, experts).
CATEGORICAL = np.array([
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (174, 199, 232), (255, 187, 120),
    (152, 223, 138), (255, 152, 150), (197, 176, 213), (196, 156, 148), (247, 182, 210), (199, 199, 199),
    (219, 219, 141), (158, 218, 229),
], dtype=np.uint8)


@lru_cache(maxsize=32)
def get_cmap(name: str):
    """A ``pyqtgraph.ColorMap`` by matplotlib name (falls back to pyqtgraph's own maps)."""
    import pyqtgraph as pg

    try:
        return pg.colormap.get(name, source="matplotlib")
    except Exception:  # noqa: BLE001 - matplotlib missing or unknown name
        return pg.colormap.get(name if name in pg.colormap.listMaps() else "viridis")


@lru_cache(maxsize=32)
def scalar_lut(name: str, n: int = 256) -> np.ndarray:
    """(n, 4) uint8 lookup table of colormap ``name``."""
    return np.ascontiguousarray(get_cmap(name).getLookupTable(0.0, 1.0, n, alpha=True), dtype=np.uint8)


def categorical_lut(n: int) -> np.ndarray:
    """(n, 4) uint8 distinct opaque colours, cycling the palette when ``n`` > 20."""
    rgb = CATEGORICAL[np.arange(n) % len(CATEGORICAL)]
    return np.concatenate([rgb, np.full((n, 1), 255, np.uint8)], 1)


def colorize_scalar(values: np.ndarray, cmap: str, limits: tuple[float, float], threshold: float = 0.0,
                    opacity: float = 1.0, nan_color=(0, 0, 0, 0)) -> np.ndarray:
    """Map values (n,) to RGBA uint8 (n, 4); NaN and ``|v| < threshold`` get ``nan_color``."""
    lut = scalar_lut(cmap)
    lo, hi = limits
    v = np.asarray(values, np.float32)
    t = np.clip((v - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    idx = np.nan_to_num(t * (len(lut) - 1), nan=0.0).astype(np.intp)
    out = lut[idx].copy()
    out[:, 3] = np.uint8(round(255 * opacity))
    hidden = ~np.isfinite(v) | (np.abs(v) < threshold)
    out[hidden] = nan_color
    return out


def colorize_categorical(labels: np.ndarray, n_categories: int, alpha: np.ndarray | None = None,
                         opacity: float = 1.0, nan_color=(0, 0, 0, 0)) -> np.ndarray:
    """Map integer labels (n,) (NaN = hidden) to RGBA uint8 (n, 4); ``alpha`` (n,) scales the opacity."""
    lut = categorical_lut(max(n_categories, 1))
    lab = np.asarray(labels, np.float32)
    ok = np.isfinite(lab)
    out = np.zeros((lab.shape[0], 4), np.uint8)
    out[:] = nan_color
    out[ok] = lut[lab[ok].astype(np.intp) % len(lut)]
    a = np.full(lab.shape[0], opacity, np.float32)
    if alpha is not None:
        a = a * np.nan_to_num(np.asarray(alpha, np.float32), nan=0.0)
    out[ok, 3] = (255 * np.clip(a[ok], 0, 1)).astype(np.uint8)
    return out
