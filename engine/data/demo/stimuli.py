"""Procedural stimulus images of the demo subject: one coloured object of a known category on a varied background.

Every image is drawn with numpy from signed distance functions (SDFs) of simple parts, anti-aliased by a one-pixel
soft edge, so objects have clean outlines at any ``size``. Each image's attributes (category, colour, position, size,
rotation, background) are drawn from its own generator ``default_rng([seed, i])``: ``render_stimuli(n, seed)`` is a
prefix of ``render_stimuli(m, seed)`` for ``m > n``, and the same seed always gives the same pixels.

Coordinates: ``x`` grows to the right and ``y`` downwards, both in [0, 1] of the image width (row 0 is the top).
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

CATEGORIES = ("circle", "square", "triangle", "star", "cross", "ring",
              "house", "tree", "fish", "car", "face", "flower")
# Object colours: (name, hue in [0, 1), saturation, value). Strong and saturated, so they stand out.
COLOURS = (("red", 0.0, 0.9, 0.9), ("orange", 0.075, 0.9, 0.95), ("yellow", 0.15, 0.85, 0.95),
           ("green", 0.33, 0.8, 0.75), ("cyan", 0.5, 0.8, 0.85), ("blue", 0.62, 0.85, 0.9),
           ("purple", 0.77, 0.7, 0.8), ("pink", 0.9, 0.55, 0.95), ("white", 0.0, 0.0, 0.97))
BACKGROUNDS = ("plain", "gradient", "striped", "noisy")
# Background colours: muted, so the object keeps the strongest colour contrast. (name, r, g, b) in [0, 1].
BACKGROUND_COLOURS = (("grey", 0.5, 0.5, 0.5), ("black", 0.08, 0.08, 0.1), ("beige", 0.82, 0.76, 0.62),
                      ("blue", 0.2, 0.27, 0.45), ("green", 0.25, 0.4, 0.28), ("brown", 0.4, 0.28, 0.2),
                      ("light", 0.88, 0.88, 0.9))
_DARK = np.array([0.07, 0.07, 0.08])
_LIGHT = np.array([0.92, 0.95, 1.0])
_TRUNK = np.array([0.42, 0.26, 0.12])


@dataclass(frozen=True)
class StimulusSet:
    """Rendered images with their labels, captions and per-image attributes.

    Attributes
    ----------
    images : (n, size, size, 3) uint8
    labels : (n,) int64, index into ``categories``
    categories : list of str
    captions : list of str, e.g. "a small red star at the top left on a striped blue background"
    attributes : dict of (n,) arrays
        ``x``, ``y`` (object centre in [0, 1], y downwards), ``scale`` (object radius as a fraction of the image
        width), ``rotation`` (degrees), ``hue`` (in [0, 1)), ``colour`` (index into ``colour_names``),
        ``background`` (index into ``background_types``), ``background_colour`` (index into
        ``background_colour_names``), all float32 or int64.
    """

    images: np.ndarray
    labels: np.ndarray
    categories: list[str]
    captions: list[str]
    attributes: dict[str, np.ndarray]
    colour_names: list[str] = field(default_factory=lambda: [c[0] for c in COLOURS])
    background_types: list[str] = field(default_factory=lambda: list(BACKGROUNDS))
    background_colour_names: list[str] = field(default_factory=lambda: [c[0] for c in BACKGROUND_COLOURS])

    def __len__(self) -> int:
        return int(self.images.shape[0])


def render_stimuli(n_images: int, seed: int, size: int = 64, *, start: int = 0) -> StimulusSet:
    """Render ``n_images`` procedural object images, deterministically for ``seed``.

    Parameters
    ----------
    n_images : int
    seed : int
    size : int
        Image height and width in pixels (>= 16).
    start : int
        Index of the first image: ``render_stimuli(n, seed, start=k)`` gives images ``k .. k+n-1`` of the sequence
        for ``seed`` (so a long set can be rendered in chunks).

    Returns
    -------
    StimulusSet with images of shape (n_images, size, size, 3) uint8.
    """
    if n_images < 0 or start < 0:
        raise ValueError(f"n_images and start must be >= 0, got {n_images} and {start}")
    if size < 16:
        raise ValueError(f"size must be >= 16 pixels, got {size}")
    coords = (np.arange(size, dtype=np.float32) + 0.5) / size
    gx, gy = np.meshgrid(coords, coords)  # gx: x to the right, gy: y downwards
    images = np.empty((n_images, size, size, 3), np.uint8)
    keys = ("x", "y", "scale", "rotation", "hue", "colour", "background", "background_colour")
    attrs: dict[str, list] = {k: [] for k in keys}
    labels = np.empty(n_images, np.int64)
    captions = []
    for i in range(n_images):
        rng = np.random.default_rng([int(seed), int(start) + i])
        a = _draw_attributes(rng)
        labels[i] = a["label"]
        for k in keys:
            attrs[k].append(a[k])
        img = _background(rng, a, gx, gy, size)
        _draw_object(img, a, gx, gy, size)
        images[i] = np.clip(img * 255.0 + 0.5, 0, 255).astype(np.uint8)
        captions.append(_caption(a))
    attributes = {k: np.asarray(v, np.int64 if k in ("colour", "background", "background_colour") else np.float32)
                  for k, v in attrs.items()}
    return StimulusSet(images=images, labels=labels, categories=list(CATEGORIES), captions=captions,
                       attributes=attributes)


# ----------------------------------------------------------------------------------------------------------------------
# Attributes and captions


def concat_stimuli(parts: list[StimulusSet]) -> StimulusSet:
    """One StimulusSet from consecutive chunks (e.g. rendered with ``start``)."""
    if not parts:
        raise ValueError("concat_stimuli needs at least one StimulusSet")
    return StimulusSet(images=np.concatenate([p.images for p in parts]),
                       labels=np.concatenate([p.labels for p in parts]), categories=list(parts[0].categories),
                       captions=[c for p in parts for c in p.captions],
                       attributes={k: np.concatenate([p.attributes[k] for p in parts]) for k in parts[0].attributes})


def _draw_attributes(rng: np.random.Generator) -> dict:
    label = int(rng.integers(len(CATEGORIES)))
    colour = int(rng.integers(len(COLOURS)))
    name, hue, sat, val = COLOURS[colour]
    hue = (hue + rng.uniform(-0.02, 0.02)) % 1.0
    rgb = np.array(colorsys.hsv_to_rgb(hue, sat, val * rng.uniform(0.9, 1.0)))
    scale = float(rng.uniform(0.13, 0.3))
    margin = 0.85 * scale
    x = float(rng.uniform(margin, 1.0 - margin))
    y = float(rng.uniform(margin, 1.0 - margin))
    upright = CATEGORIES[label] in ("house", "tree", "car", "face", "fish")
    rotation = float(rng.uniform(-15, 15) if upright else rng.uniform(-45, 45))
    background = int(rng.integers(len(BACKGROUNDS)))
    # A background colour that contrasts with the object (by luminance or colour distance).
    bgc = int(rng.integers(len(BACKGROUND_COLOURS)))
    while np.abs(np.array(BACKGROUND_COLOURS[bgc][1:]) - rgb).sum() < 0.9:
        bgc = int(rng.integers(len(BACKGROUND_COLOURS)))
    flip = bool(rng.integers(2))
    return {"label": label, "colour": colour, "hue": float(hue), "rgb": rgb, "scale": scale, "x": x, "y": y,
            "rotation": rotation, "background": background, "background_colour": bgc, "flip": flip}


def _caption(a: dict) -> str:
    size = "small" if a["scale"] < 0.18 else ("large" if a["scale"] > 0.24 else "medium-sized")
    col = "left" if a["x"] < 0.4 else ("right" if a["x"] > 0.6 else "")
    row = "top" if a["y"] < 0.4 else ("bottom" if a["y"] > 0.6 else "")
    where = "in the centre" if not (row or col) else "at the " + " ".join(w for w in (row, col) if w)
    bg_name = BACKGROUND_COLOURS[a["background_colour"]][0]
    words = {"plain": "plain", "gradient": "shaded", "striped": "striped", "noisy": "mottled"}
    kind = words[BACKGROUNDS[a["background"]]]
    cat = CATEGORIES[a["label"]]
    obj = {"face": "smiling face", "flower": "flower", "car": "car"}.get(cat, cat)
    return f"a {size} {COLOURS[a['colour']][0]} {obj} {where} on a {kind} {bg_name} background"


# ----------------------------------------------------------------------------------------------------------------------
# Backgrounds


def _background(rng: np.random.Generator, a: dict, gx: np.ndarray, gy: np.ndarray, size: int) -> np.ndarray:
    base = np.array(BACKGROUND_COLOURS[a["background_colour"]][1:], np.float32)
    # A second tone: lighter for dark colours, darker for light ones, so textures stay visible but soft.
    other = base + (0.22 if base.mean() < 0.5 else -0.22)
    kind = BACKGROUNDS[a["background"]]
    if kind == "plain":
        t = np.zeros_like(gx)
    elif kind == "gradient":
        ang = rng.uniform(0, 2 * np.pi)
        t = (gx - 0.5) * np.cos(ang) + (gy - 0.5) * np.sin(ang) + 0.5
    elif kind == "striped":
        ang = rng.uniform(0, np.pi)
        freq = rng.uniform(4, 8)
        phase = rng.uniform(0, 2 * np.pi)
        t = 0.5 + 0.5 * np.tanh(3.0 * np.sin(2 * np.pi * freq * (gx * np.cos(ang) + gy * np.sin(ang)) + phase))
        t = 0.7 * t
    else:  # noisy: smooth value noise from a coarse random grid, bilinearly upsampled
        g = int(rng.integers(4, 9))
        coarse = rng.random((g + 1, g + 1)).astype(np.float32)
        u, v = gx * g, gy * g
        i0, j0 = np.minimum(u.astype(int), g - 1), np.minimum(v.astype(int), g - 1)
        fu, fv = u - i0, v - j0
        t = (coarse[j0, i0] * (1 - fu) * (1 - fv) + coarse[j0, i0 + 1] * fu * (1 - fv)
             + coarse[j0 + 1, i0] * (1 - fu) * fv + coarse[j0 + 1, i0 + 1] * fu * fv)
    t = np.clip(t, 0, 1)[..., None]
    img = base * (1 - t) + other * t
    return np.clip(img, 0, 1).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------------------
# Objects: parts are SDFs in object coordinates (u right, w up, object radius 1); negative inside.


def _circle(u, w, cx, cy, r):
    return np.hypot(u - cx, w - cy) - r


def _ellipse(u, w, cx, cy, a, b):
    return (np.hypot((u - cx) / a, (w - cy) / b) - 1.0) * min(a, b)


def _box(u, w, cx, cy, hx, hy):
    dx, dy = np.abs(u - cx) - hx, np.abs(w - cy) - hy
    return np.hypot(np.maximum(dx, 0), np.maximum(dy, 0)) + np.minimum(np.maximum(dx, dy), 0)


def _polygon(u, w, pts):
    """Convex polygon: max of the edge half-plane distances (exact inside, slightly low outside near corners)."""
    pts = np.asarray(pts, np.float32)
    area2 = np.sum(pts[:, 0] * np.roll(pts[:, 1], -1) - np.roll(pts[:, 0], -1) * pts[:, 1])
    if area2 < 0:  # make the order counter-clockwise so the normals point outwards
        pts = pts[::-1]
    d = None
    for k in range(len(pts)):
        p0, p1 = pts[k], pts[(k + 1) % len(pts)]
        e = p1 - p0
        n = np.array([e[1], -e[0]]) / np.hypot(*e)  # outward normal for counter-clockwise order
        dk = (u - p0[0]) * n[0] + (w - p0[1]) * n[1]
        d = dk if d is None else np.maximum(d, dk)
    return d


def _star_parts(u, w):
    outer = [(np.cos(np.pi / 2 + k * 2 * np.pi / 5), np.sin(np.pi / 2 + k * 2 * np.pi / 5)) for k in range(5)]
    inner = [(0.4 * np.cos(np.pi / 2 + (k + 0.5) * 2 * np.pi / 5), 0.4 * np.sin(np.pi / 2 + (k + 0.5) * 2 * np.pi / 5))
             for k in range(5)]
    d = _polygon(u, w, inner)
    for k in range(5):
        # Kites (centre, inner, tip, inner) overlap the pentagon, so no seam shows along shared edges.
        d = np.minimum(d, _polygon(u, w, [(0.0, 0.0), inner[k - 1], outer[k], inner[k]]))
    return d


def _parts(cat: str, u, w) -> list[tuple[np.ndarray, str]]:
    """(sdf, role) pairs painted in order; role: main colour, shade (darker main), dark, light, trunk."""
    if cat == "circle":
        return [(_circle(u, w, 0, 0, 0.95), "main")]
    if cat == "square":
        return [(_box(u, w, 0, 0, 0.78, 0.78), "main")]
    if cat == "triangle":
        return [(_polygon(u, w, [(-0.95, -0.6), (0.95, -0.6), (0, 1.0)]), "main")]
    if cat == "star":
        return [(_star_parts(u, w), "main")]
    if cat == "cross":
        return [(np.minimum(_box(u, w, 0, 0, 0.95, 0.3), _box(u, w, 0, 0, 0.3, 0.95)), "main")]
    if cat == "ring":
        return [(np.abs(np.hypot(u, w) - 0.72) - 0.25, "main")]
    if cat == "house":
        return [(_box(u, w, 0, -0.35, 0.7, 0.6), "main"),
                (_polygon(u, w, [(-0.92, 0.2), (0.92, 0.2), (0, 0.95)]), "shade"),
                (_box(u, w, 0.25, -0.65, 0.17, 0.3), "dark"),
                (_box(u, w, -0.32, -0.25, 0.15, 0.13), "light")]
    if cat == "tree":
        crown = np.minimum(_circle(u, w, 0, 0.3, 0.62), np.minimum(_circle(u, w, -0.38, 0.05, 0.4),
                                                                   _circle(u, w, 0.38, 0.05, 0.4)))
        return [(_box(u, w, 0, -0.6, 0.15, 0.4), "trunk"), (crown, "main")]
    if cat == "fish":
        return [(_ellipse(u, w, 0.2, 0, 0.78, 0.5), "main"),
                (_polygon(u, w, [(-1.0, -0.55), (-0.4, 0.0), (-1.0, 0.55)]), "main"),
                (_circle(u, w, 0.58, 0.12, 0.11), "dark")]
    if cat == "car":
        return [(_box(u, w, 0, -0.1, 0.95, 0.28), "main"), (_box(u, w, -0.05, 0.3, 0.5, 0.2), "main"),
                (_box(u, w, -0.05, 0.3, 0.38, 0.12), "light"),
                (_circle(u, w, -0.55, -0.42, 0.22), "dark"), (_circle(u, w, 0.55, -0.42, 0.22), "dark")]
    if cat == "face":
        mouth = np.maximum(np.abs(np.hypot(u, w - 0.05) - 0.5) - 0.08, w + 0.1)
        return [(_circle(u, w, 0, 0, 0.95), "main"), (_circle(u, w, -0.33, 0.28, 0.13), "dark"),
                (_circle(u, w, 0.33, 0.28, 0.13), "dark"), (mouth, "dark")]
    if cat == "flower":
        petals = None
        for k in range(6):
            ang = k * np.pi / 3
            d = _circle(u, w, 0.55 * np.cos(ang), 0.55 * np.sin(ang), 0.4)
            petals = d if petals is None else np.minimum(petals, d)
        return [(petals, "main"), (_circle(u, w, 0, 0, 0.3), "centre")]
    raise ValueError(f"unknown category {cat!r}")


def _draw_object(img: np.ndarray, a: dict, gx: np.ndarray, gy: np.ndarray, size: int) -> None:
    r = a["scale"]
    # Only the object's bounding square (every part lies within 1.25 radii of the centre) is drawn: 3-5x faster.
    reach = 1.25 * r
    r0, r1 = max(0, int((a["y"] - reach) * size) - 1), min(size, int((a["y"] + reach) * size) + 2)
    c0, c1 = max(0, int((a["x"] - reach) * size) - 1), min(size, int((a["x"] + reach) * size) + 2)
    img, gx, gy = img[r0:r1, c0:c1], gx[r0:r1, c0:c1], gy[r0:r1, c0:c1]
    th = np.deg2rad(a["rotation"])
    dx, dy = (gx - a["x"]) / r, (a["y"] - gy) / r  # object frame: w points up
    u = np.cos(th) * dx + np.sin(th) * dy
    w = -np.sin(th) * dx + np.cos(th) * dy
    if a["flip"]:
        u = -u
    px = 1.0 / (size * r)  # one pixel in object units: the width of the anti-aliased edge
    main = a["rgb"].astype(np.float32)
    centre = _DARK if main.mean() > 0.75 and main.min() > 0.6 else np.array([0.98, 0.85, 0.2])
    if CATEGORIES[a["label"]] == "flower" and a["colour"] == 2:  # yellow flower: dark centre
        centre = np.array([0.35, 0.2, 0.08])
    colours = {"main": main, "shade": main * 0.72, "dark": _DARK, "light": _LIGHT, "trunk": _TRUNK,
               "centre": centre}
    for sdf, role in _parts(CATEGORIES[a["label"]], u, w):
        alpha = np.clip(0.5 - sdf / px, 0.0, 1.0)[..., None]
        img *= 1.0 - alpha
        img += alpha * colours[role].astype(np.float32)
