"""``RunPicker``: a panel's "Run" combo box — the subject's finished runs that the panel can show, kept in step with
the window's selected run.

Choosing a run in the box makes it the selected run of every panel (``SubjectState.set_run``); a run selected
elsewhere (the Data or Training panel, a finished job) is shown in the box. Either way the owner hears it through
``on_pick(run, force)``: ``run`` is the folder (None when the box is empty) and ``force`` is True when the run was
selected on purpose, so its folder should be read again even if it is the one already shown.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtWidgets import QComboBox

from neurolens_app.widgets.runs_list import RunSummary, list_runs, runs_folder


class RunPicker(QComboBox):
    """Finished runs passing ``accept``, labelled by ``label``; see the module docstring for ``on_pick``."""

    def __init__(self, context, on_pick: Callable[[Path | None, bool], None],
                 accept: Callable[[RunSummary], bool] = lambda r: True,
                 label: Callable[[RunSummary], str] = lambda r: r.path.name, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.on_pick = on_pick
        self.accept = accept
        self.label = label
        self.setMinimumWidth(int(16 * self.fontMetrics().height()))
        self.currentIndexChanged.connect(self._on_chosen)
        context.subject.run_changed.connect(self._on_selected_elsewhere)

    def current_run(self) -> Path | None:
        data = self.currentData()
        return Path(data) if data else None

    def refresh(self) -> None:
        """List the runs again, keep the selected run (else the first), and report the current one."""
        runs = [r for r in list_runs(runs_folder(self.context)) if r.status == "done" and self.accept(r)]
        self.blockSignals(True)
        self.clear()
        for r in runs:
            self.addItem(self.label(r), str(r.path))
        want = self.context.subject.run
        i = self.findData(str(want)) if want is not None else -1
        self.setCurrentIndex(i if i >= 0 else (0 if runs else -1))
        self.blockSignals(False)
        self.on_pick(self.current_run(), False)

    def _on_chosen(self, _index: int) -> None:
        run = self.current_run()
        if run is not None and self.context.subject.run != run:
            self.context.subject.set_run(run)  # every panel follows; this box hears it in _on_selected_elsewhere
        else:
            self.on_pick(run, False)

    def _on_selected_elsewhere(self, run) -> None:
        if run is None:
            return
        i = self.findData(str(run))
        if i < 0:
            self.refresh()  # a run this box has not listed yet (just trained, or made by the CLI)
            return
        self.blockSignals(True)
        self.setCurrentIndex(i)
        self.blockSignals(False)
        self.on_pick(Path(run), True)
