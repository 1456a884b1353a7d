"""``AppContext``: what every panel receives: the state objects, the settings, the job manager, and requests to the
window (open a subject, show a status message). Panels never call each other; they share this context.
"""

from __future__ import annotations

import sys
from typing import Callable

from PySide6.QtCore import QObject, Signal

from neurolens_app.overlay_sources import OverlaySources
from neurolens_app.state.overlay_state import OverlayState
from neurolens_app.state.run_state import RunState
from neurolens_app.state.settings import AppSettings
from neurolens_app.state.subject_state import SubjectState
from neurolens_app.workers.idle_queue import IdleQueue
from neurolens_app.workers.job_manager import JobManager


class AppContext(QObject):
    """Shared state of one window.

    Attributes
    ----------
    settings : AppSettings
    subject : SubjectState
    run : RunState (the one selected run folder; every panel shows it)
    overlays : OverlayState
    sources : OverlaySources (fills ``overlays`` from the subject and the selected run)
    jobs : JobManager

    Signals
    -------
    status_message(str, int)       text for the status bar, and how long to show it (ms, 0 = until replaced)
    open_subject_requested(str)    a panel asks the window to open a subject path
    error_raised(str, object, str) title, exception, traceback: shown in the error dialog
    engine_loaded()                the engine's heavy libraries (torch...) are imported: work that needs them can
                                   start without freezing the window (see ``workers/engine_preload.py``)
    """

    status_message = Signal(str, int)
    open_subject_requested = Signal(str)
    error_raised = Signal(str, object, str)
    engine_loaded = Signal()

    def __init__(self, settings: AppSettings, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.settings = settings
        self.subject = SubjectState(self)
        self.run = RunState(self.subject, self)  # made right after the subject's state: see RunState.__init__
        self.overlays = OverlayState(self)
        self.engine_ready = False  # set when ``engine_loaded`` fires (or when the preload is switched off)
        self._engine_waiters: list[Callable[[], None]] = []
        self.engine_loaded.connect(self._on_engine_loaded)
        self.sources = OverlaySources(self.subject, self.run, self.overlays, self,
                                      when_engine_ready=self.when_engine_ready)
        self.jobs = JobManager(self)
        self.idle = IdleQueue(self)  # follow-up GUI work, one task per event-loop turn (see workers/idle_queue.py)
        self.jobs.failed.connect(self.error_raised)
        self.runs_folder_override = None  # (subject, folder) of a run opened with --run; see runs_folder()
        self.actions: dict = {}  # window actions panels may show as buttons: "open", "import", "demo", "export"

    def later(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` in the GUI thread in a later event-loop turn of its own (queued behind earlier ``later`` work)."""
        self.idle.add(fn)

    def when_engine_ready(self, fn: Callable[[], None]) -> None:
        """Call ``fn`` now if the engine's libraries are loaded, else right after ``engine_loaded``.

        Why: work that reads a model in a pool thread imports torch there, and that import holds the GIL for ~0.3 s;
        started while a subject opens, it froze the window for that long. Queued here, it waits for the preload,
        which imports torch once at a quiet moment.
        """
        if self.engine_ready or "torch" in sys.modules:
            fn()
        else:
            self._engine_waiters.append(fn)

    def _on_engine_loaded(self) -> None:
        self.engine_ready = True
        waiters, self._engine_waiters = self._engine_waiters, []
        for fn in waiters:
            fn()

    def show_status(self, text: str, timeout_ms: int = 5000) -> None:
        self.status_message.emit(text, timeout_ms)

    def request_open(self, path: str) -> None:
        self.open_subject_requested.emit(str(path))
