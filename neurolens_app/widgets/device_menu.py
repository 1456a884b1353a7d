"""``DeviceMenu``: Settings → Device, the CPU and every CUDA device. The devices are detected in a pool thread the
first time the menu opens (it imports torch); choosing one emits ``device_chosen(str)``."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QMenu

from neurolens_app.workers.short_job import submit


class DeviceMenu(QMenu):
    device_chosen = Signal(str)

    def __init__(self, settings, parent=None) -> None:
        super().__init__("&Device", parent)
        self.settings = settings
        self.setToolTipsVisible(True)
        self.group = QActionGroup(self)
        self._detected = False
        self._job = None
        self.fill(["cpu"])
        self.aboutToShow.connect(self.detect)

    def fill(self, devices: list[str]) -> None:
        self.clear()
        current = self.settings.device
        for d in dict.fromkeys(devices + [current]):
            a = self.addAction(d)
            a.setCheckable(True)
            a.setChecked(d == current)
            a.setToolTip(f"Run training and reconstruction on {d}")
            self.group.addAction(a)
            a.triggered.connect(lambda _=False, d=d: self.device_chosen.emit(d))

    def detect(self) -> None:
        if self._detected:
            return
        self._detected = True

        def detect() -> list[str]:
            from neurolens_app.workers.engine_preload import ensure_torch

            torch = ensure_torch()  # in a pool thread (never blocks the window), once for the whole app

            return ["cpu"] + [f"cuda:{i}" for i in range(torch.cuda.device_count())]

        self._job = submit(detect, on_result=self.fill)
