"""Export a view as a PNG or SVG figure at a chosen size, independent of the window size.

The view's QGraphicsScene (map, title, colour bar, legend) is rendered into a painter of the requested size; the
content keeps its aspect ratio and is centred on the view's background colour.
"""

from __future__ import annotations

import re
from pathlib import Path

from PySide6.QtCore import QRectF, QSize, Qt
from PySide6.QtGui import QColor, QImage, QPainter

FORMATS = {".png": "PNG image", ".svg": "SVG vector figure"}


def export_scene(scene, source: QRectF, path: str | Path, width: int, height: int,
                 background: QColor | None = None, title: str = "NeuroLens view") -> Path:
    """Render ``source`` (scene coordinates) of ``scene`` to ``path`` (.png or .svg) at ``width`` × ``height``.

    Parameters
    ----------
    scene : QGraphicsScene
    source : QRectF, the part of the scene to draw (usually ``view.sceneRect()``)
    width, height : int, output size in pixels (SVG: user units, also written as the document size)
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"{path}: unsupported figure format {suffix!r}; use one of {sorted(FORMATS)}")
    if width < 1 or height < 1:
        raise ValueError(f"figure size must be positive, got {width} × {height}")
    background = QColor(background) if background is not None else QColor("white")
    target = QRectF(0, 0, width, height)
    if suffix == ".png":
        img = QImage(width, height, QImage.Format.Format_ARGB32)
        img.fill(background)
        p = QPainter(img)
        p.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform
                         | QPainter.RenderHint.TextAntialiasing)
        scene.render(p, target, source, Qt.AspectRatioMode.KeepAspectRatio)
        p.end()
        if not img.save(str(path), "PNG"):
            raise OSError(f"{path}: could not write the PNG file")
        return path
    from PySide6.QtSvg import QSvgGenerator  # QtSvg ships with PySide6-Essentials

    gen = QSvgGenerator()
    gen.setFileName(str(path))
    gen.setSize(QSize(width, height))
    gen.setViewBox(target)
    gen.setTitle(title)
    gen.setDescription("Exported by NeuroLens")
    p = QPainter(gen)
    p.fillRect(target, background)
    scene.render(p, target, source, Qt.AspectRatioMode.KeepAspectRatio)
    p.end()
    if not path.is_file():
        raise OSError(f"{path}: could not write the SVG file")
    # QSvgGenerator writes the document size in mm; state it in pixels, as requested
    text = path.read_text(encoding="utf-8")
    text = re.sub(r'<svg width="[^"]*" height="[^"]*"', f'<svg width="{width}px" height="{height}px"', text, count=1)
    path.write_text(text, encoding="utf-8")
    return path


def export_image(image: QImage, path: str | Path, width: int, height: int, background: QColor | None = None) -> Path:
    """Save a raster ``image`` (e.g. the 3-D view's framebuffer) scaled into ``width`` × ``height`` as PNG."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"{path}: the 3-D view exports PNG only (switch to the flatmap for SVG)")
    out = QImage(width, height, QImage.Format.Format_ARGB32)
    out.fill(QColor(background) if background is not None else QColor("white"))
    scaled = image.scaled(width, height, Qt.AspectRatioMode.KeepAspectRatio,
                          Qt.TransformationMode.SmoothTransformation)
    p = QPainter(out)
    p.drawImage((width - scaled.width()) // 2, (height - scaled.height()) // 2, scaled)
    p.end()
    if not out.save(str(path), "PNG"):
        raise OSError(f"{path}: could not write the PNG file")
    return path
