"""The QApplication: names, icon, theme, and the global exception hook.

Any unhandled exception (main thread, Python threads, Qt slots) is logged and shown in the error dialog; the app
keeps running.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path

from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QIcon
from PySide6.QtWidgets import QApplication

from neurolens_app.state.settings import APPLICATION, ORGANIZATION

log = logging.getLogger("neurolens_app")
ICON = Path(__file__).resolve().parents[1] / "resources" / "icons" / "neurolens.svg"


def create_application(argv: list[str] | None = None) -> QApplication:
    """The running QApplication, or a new one named for QSettings, with garbage collection in its GUI thread."""
    app = QApplication.instance()
    if app is None:
        app = QApplication(list(argv) if argv is not None else sys.argv[:1])
    app.setOrganizationName(ORGANIZATION)
    app.setApplicationName(APPLICATION)
    app.setApplicationDisplayName("NeuroLens")
    import engine

    app.setApplicationVersion(engine.__version__)
    if ICON.is_file():
        app.setWindowIcon(QIcon(str(ICON)))
    from neurolens_app.gui_gc import install_gui_collector

    install_gui_collector(app)  # Qt objects in reference cycles must die in the GUI thread
    return app


class ExceptionRelay(QObject):
    """Carries exceptions from any thread to the GUI thread: ``raised(title, exc, traceback_text)``."""

    raised = Signal(str, object, str)


class ExceptionHook:
    """Installs ``sys.excepthook`` and ``threading.excepthook``; ``uninstall()`` restores the previous ones."""

    def __init__(self, relay: ExceptionRelay) -> None:
        self.relay = relay
        self._sys_prev = sys.excepthook
        self._thread_prev = threading.excepthook
        sys.excepthook = self._sys_hook
        threading.excepthook = self._thread_hook

    def _report(self, exc_type, exc, tb, where: str) -> None:
        if exc_type is not None and issubclass(exc_type, KeyboardInterrupt):
            self._sys_prev(exc_type, exc, tb)
            return
        text = "".join(traceback.format_exception(exc_type, exc, tb))
        log.error("unhandled exception in %s: %s\n%s", where, exc, text)
        try:
            self.relay.raised.emit("Unexpected error", exc, text)
        except RuntimeError:  # the relay was deleted at shutdown
            self._sys_prev(exc_type, exc, tb)

    def _sys_hook(self, exc_type, exc, tb) -> None:
        self._report(exc_type, exc, tb, "the main thread")

    def _thread_hook(self, args) -> None:
        name = args.thread.name if args.thread is not None else "a thread"
        self._report(args.exc_type, args.exc_value, args.exc_traceback, name)

    def uninstall(self) -> None:
        sys.excepthook = self._sys_prev
        threading.excepthook = self._thread_prev
