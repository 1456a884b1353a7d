"""``TensorBoardServer``: the Training panel's "Open in TensorBoard": one ``tensorboard --logdir RUN/tb`` subprocess
per window, started on demand, its page opened in the browser once it listens; stopped when the app quits.

The command and the folder come from ``engine.train.tensorboard`` (the same the CLI prints after training).
"""

from __future__ import annotations

import socket
from pathlib import Path

from PySide6.QtCore import QObject, QProcess, QTimer, QUrl, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import QApplication

START_TIMEOUT_S = 60  # tensorboard's first start imports its plugins: a few seconds, more on a busy machine
POLL_MS = 250


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.05)
        return s.connect_ex(("localhost", port)) == 0


class TensorBoardServer(QObject):
    """Signals: ``status(str)`` (what happens, for the status bar), ``opened(str)`` (the URL shown in the browser)."""

    status = Signal(str)
    opened = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.process: QProcess | None = None
        self.logdir: Path | None = None
        self.url = ""
        self._waited = 0
        self._timer = QTimer(self)
        self._timer.setInterval(POLL_MS)
        self._timer.timeout.connect(self._poll)
        app = QApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.stop)

    def open_run(self, run_dir) -> str | None:
        """Serve ``run_dir``'s scalars and open them in the browser; returns why it cannot (one line), else None."""
        from engine.train.tensorboard import (tensorboard_available, tensorboard_command, tensorboard_logdir,
                                              tensorboard_url)

        logdir = tensorboard_logdir(run_dir)
        if not logdir.is_dir():
            return (f"{Path(run_dir).name} has no TensorBoard scalars ({logdir} is missing: the run was trained "
                    f"without the tensorboard package)")
        if not tensorboard_available():
            return ("TensorBoard is not installed in NeuroLens's Python environment: install it with "
                    "'pip install tensorboard', then try again")
        running = self.process is not None and self.process.state() != QProcess.ProcessState.NotRunning
        if running and self.logdir == logdir:
            if not self._timer.isActive():
                self._show()
            return None
        self.stop()
        port = free_port()
        cmd = tensorboard_command(run_dir, port)
        self.process = QProcess(self)
        self.process.setProcessChannelMode(QProcess.ProcessChannelMode.MergedChannels)
        self.process.finished.connect(self._on_finished)
        self.logdir, self.url, self._waited = logdir, tensorboard_url(port), 0
        self.process.start(cmd[0], cmd[1:])
        self.status.emit(f"Starting TensorBoard for {Path(run_dir).name} on {self.url}…")
        self._timer.start()
        return None

    def _poll(self) -> None:
        self._waited += POLL_MS
        port = int(self.url.rstrip("/").rsplit(":", 1)[1])
        if listening(port):
            self._timer.stop()
            self._show()
        elif self._waited > START_TIMEOUT_S * 1000:
            self._timer.stop()
            self.status.emit(f"TensorBoard did not start within {START_TIMEOUT_S} s: {self._output()}")
            self.stop()

    def _show(self) -> None:
        QDesktopServices.openUrl(QUrl(self.url))
        self.status.emit(f"TensorBoard: {self.url} (the scalars of {self.logdir.parent.name})")
        self.opened.emit(self.url)

    def _on_finished(self, code: int, _status=None) -> None:
        if self._timer.isActive():  # it exited before it listened: say why
            self._timer.stop()
            self.status.emit(f"TensorBoard exited (status {code}): {self._output()}")

    def _output(self) -> str:
        if self.process is None:
            return ""
        text = bytes(self.process.readAll()).decode("utf-8", "replace").strip().splitlines()
        return text[-1] if text else "no output"

    def stop(self) -> None:
        """End the subprocess (the app is quitting, or another run is shown)."""
        self._timer.stop()
        p, self.process = self.process, None
        if p is not None and p.state() != QProcess.ProcessState.NotRunning:
            p.finished.disconnect(self._on_finished)
            p.terminate()
            if not p.waitForFinished(3000):
                p.kill()
                p.waitForFinished(1000)
