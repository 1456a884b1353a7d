"""``DataPanel``: the open subject (summary, provenance, SIMULATION label for the demo), recent subjects, and the run
folders of the current project (select one to show its encoding and routing maps)."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (QFileDialog, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QPushButton,
                               QSplitter, QToolButton, QTreeWidget, QTreeWidgetItem, QVBoxLayout, QWidget)

from neurolens_app.workers.short_job import submit

SIMULATION_STYLE = "QLabel { background: #b45309; color: white; font-weight: bold; padding: 0.2em 0.5em; }"


def find_runs(folder: Path) -> list[Path]:
    """Sub-folders of ``folder`` that look like run folders (any file of a run, or encoding maps)."""
    from engine.models.encoding import MAPS_FILE
    from engine.train.run import Run

    if not folder.is_dir():
        return []
    runs = [p for p in folder.iterdir() if p.is_dir() and (Run.has_run_files(p) or (p / MAPS_FILE).exists())]
    return sorted(runs, key=lambda p: p.stat().st_mtime, reverse=True)


def run_status(run: Path) -> str:
    """The run's status ("" before its job wrote one, or when it cannot be read)."""
    from engine.errors import NeuroLensError
    from engine.train.run import Run

    try:
        status = str(Run(run).status().get("status", ""))
    except (NeuroLensError, OSError):
        return ""
    return "" if status == "unknown" else status


class DataPanel(QWidget):
    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        self.settings = context.settings
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self._build_head())
        lay.addLayout(self._build_buttons())
        split = QSplitter(Qt.Orientation.Vertical)
        lay.addWidget(split, 1)
        self.summary = QTreeWidget()
        self.summary.setHeaderLabels(["Property", "Value"])
        self.summary.setToolTip("Summary of the open subject (what `neurolens inspect` prints)")
        self.summary.setAlternatingRowColors(True)
        split.addWidget(self.summary)
        split.addWidget(self._build_recent())
        split.addWidget(self._build_runs())
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 1)
        split.setStretchFactor(2, 1)

        self.state.subject_changed.connect(self._on_subject_changed)
        context.run.run_changed.connect(self._on_run_changed)
        context.jobs.finished.connect(lambda _w: self.refresh_runs())  # a job may have written a new run folder
        self.refresh_recent()
        self._on_subject_changed(self.state.subject)

    # --- layout --------------------------------------------------------------------------------------------------
    def _build_head(self) -> QHBoxLayout:
        """The subject's name, and the SIMULATION label of the demo."""
        head = QHBoxLayout()
        self.name = QLabel("No subject open")
        f = self.name.font()
        f.setBold(True)
        f.setPointSizeF(f.pointSizeF() * 1.2)
        self.name.setFont(f)
        self.name.setToolTip("The subject shown in every panel")
        head.addWidget(self.name, 1)
        self.simulation = QLabel("SIMULATION")
        self.simulation.setStyleSheet(SIMULATION_STYLE)
        self.simulation.setToolTip("This is the built-in demo subject: simulated fMRI with known ground truth, "
                                   "not real brain data (see docs/demo-subject.md)")
        self.simulation.setVisible(False)
        head.addWidget(self.simulation)
        return head

    def _build_buttons(self) -> QHBoxLayout:
        """The window's Open, Import and Demo actions as buttons."""
        buttons = QHBoxLayout()
        for key in ("open", "import", "demo"):
            act = self.context.actions.get(key)
            if act is not None:
                b = QToolButton()
                b.setDefaultAction(act)
                b.setToolButtonStyle(Qt.ToolButtonStyle.ToolButtonTextOnly)
                buttons.addWidget(b)
        buttons.addStretch(1)
        return buttons

    def _build_recent(self) -> QWidget:
        recent_box = QWidget()
        rl = QVBoxLayout(recent_box)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(QLabel("Recent subjects"))
        self.recent = QListWidget()
        self.recent.setToolTip("Double-click to open a recent subject")
        self.recent.itemActivated.connect(lambda it: self.context.request_open(it.data(Qt.ItemDataRole.UserRole)))
        rl.addWidget(self.recent)
        return recent_box

    def _build_runs(self) -> QWidget:
        """The run folders of the runs folder; selecting one selects it in every panel."""
        runs_box = QWidget()
        ul = QVBoxLayout(runs_box)
        ul.setContentsMargins(0, 0, 0, 0)
        rh = QHBoxLayout()
        rh.addWidget(QLabel("Runs"))
        self.runs_folder = QLabel("")
        self.runs_folder.setToolTip("Folder searched for run folders")
        rh.addWidget(self.runs_folder, 1)
        choose = QPushButton("Choose…")
        choose.setToolTip("Choose the folder that holds your run folders")
        choose.clicked.connect(self._choose_runs_folder)
        rh.addWidget(choose)
        refresh = QPushButton("Refresh")
        refresh.setToolTip("Look for new run folders")
        refresh.clicked.connect(self.refresh_runs)
        rh.addWidget(refresh)
        ul.addLayout(rh)
        self.runs = QListWidget()
        self.runs.setToolTip("Select a run to show its encoding accuracy and MoE routing on the brain view")
        self.runs.currentItemChanged.connect(self._on_run_selected)
        ul.addWidget(self.runs)
        return runs_box

    # --- subject -------------------------------------------------------------------------------------------------
    def _on_subject_changed(self, subject) -> None:
        self.summary.clear()
        if subject is None:
            self.name.setText("No subject open")
            self.simulation.setVisible(False)
            self.refresh_runs()
            return
        self.name.setText(subject.name)
        self.simulation.setVisible(subject.is_simulation)
        # the summary reads the trial tables: computed in a pool thread, so the window stays responsive
        self._summary_job = submit(subject.summary, on_result=lambda s, subj=subject: self._fill_summary(subj, s))
        self.refresh_recent()
        self.refresh_runs()

    def _fill_summary(self, subject, s: dict) -> None:
        if subject is not self.state.subject:
            return
        rows = [("Format", s["format"]), ("Path", s["path"] or "(in memory)"), ("Trials", s["n_trials"]),
                ("Voxels", s["n_voxels"]), ("Images", f"{s['n_images']} × {'×'.join(map(str, s['image_shape']))}"),
                ("Train trials", s["splits"]["train"]), ("Test trials", s["splits"]["test"]),
                ("Test images", s["n_test_images"]), ("Max repeats", s["repeats"]), ("Sessions", s["n_sessions"]),
                ("Categories", s["n_categories"]), ("Betas dtype", s["betas_dtype"]),
                ("Surface mapping", "fsaverage5" if s["surface"] else "none"),
                ("Volume", "yes" if s["volume"] else "no"), ("Simulation", "yes" if s["simulation"] else "no")]
        for k, v in rows:
            it = QTreeWidgetItem([k, str(v)])
            it.setToolTip(1, str(v))
            self.summary.addTopLevelItem(it)
        rois = QTreeWidgetItem(["ROIs", f"{len(s['rois'])}"])
        for n, c in s["rois"].items():
            rois.addChild(QTreeWidgetItem([n, f"{c} voxels"]))
        self.summary.addTopLevelItem(rois)
        rois.setExpanded(True)
        if s["ground_truth"]:
            gt = QTreeWidgetItem(["Ground truth", ", ".join(s["ground_truth"])])
            gt.setToolTip(1, "Generating parameters of the simulation")
            self.summary.addTopLevelItem(gt)
        prov = subject.provenance
        if prov:
            p = QTreeWidgetItem(["Provenance", ""])
            for k, v in prov.items():
                text = json.dumps(v) if not isinstance(v, str) else v
                c = QTreeWidgetItem([str(k), text])
                c.setToolTip(1, text)
                p.addChild(c)
            self.summary.addTopLevelItem(p)
        self.summary.resizeColumnToContents(0)

    def refresh_recent(self) -> None:
        self.recent.clear()
        for p in self.settings.recent_subjects():
            it = QListWidgetItem(Path(p).name)
            it.setData(Qt.ItemDataRole.UserRole, p)
            it.setToolTip(p)
            self.recent.addItem(it)

    # --- runs ----------------------------------------------------------------------------------------------------
    def runs_dir(self) -> Path | None:
        from neurolens_app.widgets.runs_list import runs_folder

        return runs_folder(self.context)

    def _choose_runs_folder(self) -> None:
        start = str(self.runs_dir() or self.settings.last_folder())
        d = QFileDialog.getExistingDirectory(self, "Folder with run folders", start)
        if d:
            self.settings.set_value("folders/runs", d)
            self.refresh_runs()

    def refresh_runs(self) -> None:
        d = self.runs_dir()
        self.runs_folder.setText(str(d) if d else "(none)")
        self.runs.blockSignals(True)
        self.runs.clear()
        for run in find_runs(d) if d else []:
            status = run_status(run)
            it = QListWidgetItem(run.name + (f"  [{status}]" if status else ""))
            it.setData(Qt.ItemDataRole.UserRole, str(run))
            it.setToolTip(str(run))
            self.runs.addItem(it)
            if self.context.run.folder is not None and Path(str(run)) == self.context.run.folder:
                self.runs.setCurrentItem(it)
        self.runs.blockSignals(False)

    def _on_run_selected(self, item, _prev=None) -> None:
        self.context.run.select(item.data(Qt.ItemDataRole.UserRole) if item is not None else None)

    def _on_run_changed(self, run) -> None:
        self.runs.blockSignals(True)
        for i in range(self.runs.count()):
            it = self.runs.item(i)
            if run is not None and Path(it.data(Qt.ItemDataRole.UserRole)) == Path(run):
                self.runs.setCurrentItem(it)
                break
        else:
            self.runs.clearSelection()
        self.runs.blockSignals(False)
