"""``AppSettings``: what the app remembers between sessions (QSettings): layout, folders, recent subjects, theme,
device. Only UI state lives here; experiment configs live as YAML in run folders.
"""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QByteArray, QSettings

ORGANIZATION = "NeuroLens"
APPLICATION = "neurolens-app"
MAX_RECENT = 10


class AppSettings:
    """Typed access to QSettings.

    Parameters
    ----------
    path : str or Path, optional
        An INI file to use instead of the user's settings (tests, ``--settings``).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        if path is None:
            self.qsettings = QSettings(ORGANIZATION, APPLICATION)
        else:
            self.qsettings = QSettings(str(path), QSettings.Format.IniFormat)

    def snapshot(self, path: str | Path) -> "AppSettings":
        """A copy of every setting in the INI file ``path``: a run that must not change the user's settings (a
        ``--screenshot``) works on the copy."""
        copy = AppSettings(path)
        copy.qsettings.clear()
        for key in self.qsettings.allKeys():
            copy.qsettings.setValue(key, self.qsettings.value(key))
        copy.qsettings.sync()
        return copy

    def _get(self, key: str, default, type_=str):
        v = self.qsettings.value(key, default)
        if v is None:
            return default
        try:
            return type_(v)
        except (TypeError, ValueError):
            return default

    # --- recent subjects and folders -----------------------------------------------------------------------------
    def recent_subjects(self) -> list[str]:
        v = self.qsettings.value("recent/subjects", [])
        if isinstance(v, str):
            v = [v]
        return [str(p) for p in (v or []) if p]

    def add_recent_subject(self, path: str | Path) -> list[str]:
        path = str(Path(path))
        items = [path] + [p for p in self.recent_subjects() if p != path]
        self.qsettings.setValue("recent/subjects", items[:MAX_RECENT])
        return items[:MAX_RECENT]

    def remove_recent_subject(self, path: str | Path) -> None:
        self.qsettings.setValue("recent/subjects", [p for p in self.recent_subjects() if p != str(path)])

    def last_folder(self, kind: str = "subject") -> str:
        return self._get(f"folders/{kind}", str(Path.home()))

    def set_last_folder(self, folder: str | Path, kind: str = "subject") -> None:
        self.qsettings.setValue(f"folders/{kind}", str(folder))

    # --- appearance and device -----------------------------------------------------------------------------------
    @property
    def theme(self) -> str:
        t = self._get("ui/theme", "light")
        return t if t in ("light", "dark") else "light"

    @theme.setter
    def theme(self, value: str) -> None:
        self.qsettings.setValue("ui/theme", value)

    @property
    def device(self) -> str:
        return self._get("engine/device", "cpu")

    @device.setter
    def device(self, value: str) -> None:
        self.qsettings.setValue("engine/device", value)

    @property
    def first_launch(self) -> bool:
        return not self._get("app/launched", False, lambda v: str(v).lower() in ("1", "true"))

    def mark_launched(self) -> None:
        self.qsettings.setValue("app/launched", True)

    # --- window layout -------------------------------------------------------------------------------------------
    def window_state(self) -> tuple[QByteArray | None, QByteArray | None]:
        g = self.qsettings.value("window/geometry")
        s = self.qsettings.value("window/state")
        return (g if isinstance(g, QByteArray) else None, s if isinstance(s, QByteArray) else None)

    def save_window_state(self, geometry: QByteArray, state: QByteArray) -> None:
        self.qsettings.setValue("window/geometry", geometry)
        self.qsettings.setValue("window/state", state)

    def value(self, key: str, default=None):
        return self.qsettings.value(key, default)

    def set_value(self, key: str, value) -> None:
        self.qsettings.setValue(key, value)

    def sync(self) -> None:
        self.qsettings.sync()
