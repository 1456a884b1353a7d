"""Logging for the app: records go to the Log panel (through a Qt signal) and to a rotating file."""

from __future__ import annotations

import logging
import logging.handlers

from PySide6.QtCore import QObject, Signal

from engine.resources import log_dir  # one log folder for the app and the CLI

LOGGERS = ("neurolens_app", "engine")
_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _Emitter(QObject):
    record = Signal(int, str)  # level, formatted message


class QtLogHandler(logging.Handler):
    """A logging handler that emits each record as ``emitter.record(level, text)``; thread-safe (queued signal)."""

    def __init__(self, level: int = logging.INFO) -> None:
        super().__init__(level)
        self.emitter = _Emitter()
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
        self.history: list[tuple[int, str]] = []  # records before the Log panel connected

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = self.format(record)
        except Exception:  # noqa: BLE001 - logging must never raise
            text = record.getMessage()
        self.history = (self.history + [(record.levelno, text)])[-2000:]
        try:
            self.emitter.record.emit(record.levelno, text)
        except RuntimeError:  # the emitter went with the application's objects at exit: history and file keep it
            pass


_HANDLER: QtLogHandler | None = None


def setup_logging(level: int = logging.INFO) -> QtLogHandler:
    """Install (once) the Qt handler and a rotating file ``neurolens-app.log`` (1 MB × 3) in ``log_dir()``."""
    global _HANDLER
    if _HANDLER is not None:
        return _HANDLER
    _HANDLER = QtLogHandler(level)
    handlers: list[logging.Handler] = [_HANDLER]
    try:
        d = log_dir()
        d.mkdir(parents=True, exist_ok=True)
        fh = logging.handlers.RotatingFileHandler(d / "neurolens-app.log", maxBytes=1_000_000, backupCount=3,
                                                  encoding="utf-8")
        fh.setFormatter(logging.Formatter(_FORMAT))
        handlers.append(fh)
    except OSError:
        pass  # no writable log folder: the Log panel still works
    for name in LOGGERS:
        lg = logging.getLogger(name)
        lg.setLevel(min(lg.level or level, level) if lg.level else level)
        for h in handlers:
            lg.addHandler(h)
    return _HANDLER
