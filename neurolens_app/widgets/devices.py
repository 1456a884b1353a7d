"""Where jobs run: ``DeviceMenu`` (Settings → Device: the CPU and every CUDA device) and ``DeviceBox`` (the Training
panel's device choice, with each GPU's name and memory). Both detect the devices in a pool thread (it imports torch)
and write the choice into ``AppSettings.device``, which training and reconstruction read."""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtGui import QActionGroup
from PySide6.QtWidgets import QComboBox, QMenu

from neurolens_app.workers.short_job import submit


class DeviceMenu(QMenu):
    """Detects the devices the first time it opens; choosing one emits ``device_chosen(str)``."""

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


def detect_devices() -> list:
    """``engine.train.device.list_devices()`` (imports torch: call it in a pool thread)."""
    from engine.train.device import list_devices

    return list_devices()


class DeviceBox(QComboBox):
    """The CPU until ``detect()`` has listed the devices; choosing one sets ``AppSettings.device``.
    ``detection_failed(str)`` says why the list stays as it is."""

    detection_failed = Signal(str)

    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.job = None  # the detection's ShortJob, once started
        self.setToolTip("Where to train: the CPU, a CUDA GPU (with its memory) or Apple MPS")
        self.addItem("cpu", "cpu")
        self.currentIndexChanged.connect(self._on_chosen)

    def detect(self) -> None:
        if self.job is None:
            self.job = submit(detect_devices, on_result=self._fill,
                              on_error=lambda e, tb: self.detection_failed.emit(str(e)))

    def _fill(self, devices: list) -> None:
        current = self.context.settings.device
        self.blockSignals(True)
        self.clear()
        for d in devices:
            mem = f", {d.memory_gb:g} GB" if d.memory_gb else ""
            self.addItem(f"{d.id} — {d.name}{mem}", d.id)
        i = self.findData(current)
        self.setCurrentIndex(i if i >= 0 else 0)
        self.blockSignals(False)

    def _on_chosen(self, _index: int) -> None:
        dev = self.currentData()
        if dev and dev != self.context.settings.device:
            self.context.settings.device = dev
            self.context.show_status(f"Training and reconstruction will run on {dev}", 5000)
