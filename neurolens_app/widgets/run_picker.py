"""``RunPicker``: a panel's "Run" combo box, a view of ``RunState`` (the one selected run).

It lists the subject's finished runs that the panel can show. Choosing one selects it in every panel
(``RunState.select``); a run selected elsewhere (the Data or Training panel, a finished job, ``--run``) is shown in
the box, and a selected run the box does not list (not finished, or not of the panel's kind) leaves the box empty,
with the run's name as placeholder. The panel itself follows ``RunState.run_changed``, never the box.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from PySide6.QtWidgets import QComboBox

from neurolens_app.widgets.runs_list import RunSummary, list_runs, runs_folder


class RunPicker(QComboBox):
    """Finished runs passing ``accept``, labelled by ``label``; ``why_not(run)`` is the placeholder for a selected run
    the box does not list."""

    def __init__(self, context, accept: Callable[[RunSummary], bool] = lambda r: True,
                 label: Callable[[RunSummary], str] = lambda r: r.path.name,
                 why_not: Callable[[Path], str] = lambda run: f"{run.name} (not finished)", parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.accept = accept
        self.label = label
        self.why_not = why_not
        self.setMinimumWidth(int(16 * self.fontMetrics().height()))
        self.currentIndexChanged.connect(self._on_chosen)
        context.run.run_changed.connect(self._show_selected)

    def current_run(self) -> Path | None:
        data = self.currentData()
        return Path(data) if data else None

    def refresh(self) -> None:
        """List the runs again and show the selected one."""
        runs = [r for r in list_runs(runs_folder(self.context)) if r.status == "done" and self.accept(r)]
        self.blockSignals(True)
        self.clear()
        for r in runs:
            self.addItem(self.label(r), str(r.path))
        self.blockSignals(False)
        self._show_selected(self.context.run.folder, relist=False)

    def _on_chosen(self, _index: int) -> None:
        run = self.current_run()
        if run is not None:
            self.context.run.select(run)  # every panel follows, this box too (in _show_selected)

    def _show_selected(self, run, relist: bool = True) -> None:
        i = self.findData(str(run)) if run is not None else -1
        if i < 0 and run is not None and relist:
            self.refresh()  # a run this box has not listed yet (just trained, or made by the CLI)
            return
        self.blockSignals(True)  # showing the selection is no choice (an empty placeholder also moves to item 0)
        self.setPlaceholderText("" if run is None or i >= 0 else self.why_not(Path(run)))
        self.setCurrentIndex(i)
        self.blockSignals(False)
