"""Light and dark themes: Qt's Fusion style with a palette, plus a small style sheet from ``resources/themes``."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtGui import QColor, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("light", "dark")
RESOURCES = Path(__file__).resolve().parents[2] / "resources"

_DARK = {
    "Window": "#2b2d31", "WindowText": "#e6e6e6", "Base": "#1f2023", "AlternateBase": "#2a2b2f",
    "ToolTipBase": "#3a3c41", "ToolTipText": "#f0f0f0", "Text": "#e6e6e6", "Button": "#35373c",
    "ButtonText": "#e6e6e6", "BrightText": "#ff5555", "Highlight": "#3d7bd9", "HighlightedText": "#ffffff",
    "Link": "#6ea8fe", "PlaceholderText": "#8a8d93", "Mid": "#45474d", "Dark": "#18191b", "Light": "#4a4c52",
}
_LIGHT = {
    "Window": "#f3f3f4", "WindowText": "#1d1d1f", "Base": "#ffffff", "AlternateBase": "#f4f6f8",
    "ToolTipBase": "#ffffe6", "ToolTipText": "#1d1d1f", "Text": "#1d1d1f", "Button": "#eaeaec",
    "ButtonText": "#1d1d1f", "BrightText": "#c00000", "Highlight": "#2f6fd0", "HighlightedText": "#ffffff",
    "Link": "#1f5fbf", "PlaceholderText": "#7a7a80", "Mid": "#c8c8cc", "Dark": "#a0a0a6", "Light": "#ffffff",
}


def palette(name: str) -> QPalette:
    colours = _DARK if name == "dark" else _LIGHT
    pal = QPalette()
    for role, hexcol in colours.items():
        pal.setColor(getattr(QPalette.ColorRole, role), QColor(hexcol))
    disabled = QColor("#6f7278") if name == "dark" else QColor("#9a9aa0")
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.ButtonText, QPalette.ColorRole.WindowText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, disabled)
    return pal


def apply_theme(app: QApplication, name: str) -> str:
    """Apply theme ``name`` ("light" or "dark") to ``app``; returns the name applied."""
    if name not in THEMES:
        raise ValueError(f"theme must be one of {THEMES}, got {name!r}")
    app.setStyle("Fusion")
    app.setPalette(palette(name))
    qss = RESOURCES / "themes" / f"{name}.qss"
    app.setStyleSheet(qss.read_text() if qss.is_file() else "")
    app.setProperty("neurolens_theme", name)
    return name
