"""``RunState``: the one selected run folder. Every panel that shows a run shows this one; choosing a run in any
panel (a run picker, the Data panel's list, the Training panel's runs, a finished job, ``--run``) selects it here."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtCore import QObject, Signal


class RunState(QObject):
    """The selected run folder of the open subject (None when no run is selected).

    A run belongs to its subject: opening another subject clears the selection. ``select`` emits only on change,
    so views can bind both ways without echo.

    Signals
    -------
    run_changed(object)  the selected run folder (``Path``) or None
    """

    run_changed = Signal(object)

    def __init__(self, subject_state, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._folder: Path | None = None
        # connected before any panel's slot (the context makes this state right after the subject's), so a panel
        # reacting to a new subject already sees no run selected
        subject_state.subject_changed.connect(lambda _subject: self.select(None))

    @property
    def folder(self) -> Path | None:
        return self._folder

    def select(self, run: str | Path | None) -> None:
        run = None if run is None else Path(run)
        if run != self._folder:
            self._folder = run
            self.run_changed.emit(run)
