"""``TrainingPanel``: choose a preset or edit a config, pick the device, train, watch the curves, cancel and resume;
the runs list shows every run folder of the subject, its config and final metrics, and compares two runs' curves.

The job is ``engine.train.trainer.train_job`` (or ``resume_job``) run by ``context.jobs`` in an ``EngineWorker`` thread.
Metric events are only buffered when they arrive; a 10 Hz timer repaints the curves, the progress bar and the ETA.
When a run finishes it becomes the selected run (``RunState``), so the other panels show its results.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

from PySide6.QtCore import QTimer, Signal, Slot
from PySide6.QtGui import QFontDatabase
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFormLayout, QGroupBox, QHBoxLayout, QLabel,
                               QPlainTextEdit, QProgressBar, QPushButton, QTabWidget, QVBoxLayout, QWidget)

from engine.errors import NeuroLensError
from engine.events import Checkpoint, Finished, Started, format_eta
from neurolens_app.panels.job_runner import slot_busy, start_panel_job
from neurolens_app.widgets.config_form import TrainConfigForm
from neurolens_app.widgets.curves import CurvesWidget, metrics_from_events
from neurolens_app.widgets.devices import DeviceBox
from neurolens_app.widgets.runs_list import RunsList, list_runs, runs_folder
from neurolens_app.widgets.splitters import H, V, stretch_splitter

REPAINT_MS = 100  # progress bar and ETA
CURVES_EVERY = 3  # ticks between curve redraws (~3 Hz): a pyqtgraph repaint of three plots costs 10-30 ms on CPU
DEFAULT_PRESET = "demo-moe"


def new_run_dir(folder: Path, name: str) -> Path:
    """A fresh run folder name ``NAME-YYYYmmdd-HHMMSS`` (with a suffix if that exists)."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "run"
    base = folder / f"{slug}-{time.strftime('%Y%m%d-%H%M%S')}"
    path, k = base, 1
    while path.exists():
        k += 1
        path = base.with_name(f"{base.name}-{k}")
    return path


class TrainingPanel(QWidget):
    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        self.worker = None
        self.run_dir: Path | None = None  # the run this panel trains or last trained
        self._progress = None
        self._t_start = 0.0
        self._ticks = 0
        self._build()
        self.timer = QTimer(self)
        self.timer.setInterval(REPAINT_MS)
        self.timer.timeout.connect(self.repaint_job)
        self.state.subject_changed.connect(self._on_subject_changed)
        context.run.run_changed.connect(self._on_run_changed)
        context.jobs.finished.connect(lambda _w: self._update_buttons())
        context.jobs.busy_changed.connect(lambda _b: self._update_buttons())
        # Device detection imports torch: wait until the engine is loaded (or the first Start), so that importing
        # it does not compete with the window's first paint.
        context.engine_loaded.connect(self.device.detect)
        self._on_subject_changed(self.state.subject)

    # --- layout --------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        em = self.fontMetrics().height()
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        ll.addWidget(self._build_config_box())
        ll.addWidget(self._build_job_box())
        ll.addStretch(1)
        left.setMinimumWidth(int(22 * em))

        self.curves = CurvesWidget()
        self.curves.setToolTip("Every logged loss and metric of the run (dashed: the compared run)")
        self.log = QPlainTextEdit()
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(3000)
        self.log.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        self.log.setToolTip("Messages of the training job")
        self.tabs = QTabWidget()
        self.tabs.addTab(self._build_runs_tab(), "Runs")
        self.tabs.addTab(self.log, "Log")
        split = stretch_splitter(H, (left, 0), (stretch_splitter(V, (self.curves, 3), (self.tabs, 2)), 1))
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addWidget(split)
        self.form.changed.connect(self._check_config)
        self._update_buttons()

    def _build_config_box(self) -> QGroupBox:
        """Preset, the config form, the device, and the config's error line."""
        cfg_box = QGroupBox("Configuration")
        cl = QVBoxLayout(cfg_box)
        prow = QFormLayout()
        self.preset = QComboBox()
        self.preset.setToolTip("Start from a preset (reference methods sized to the subject, demo and test recipes)")
        from engine.train.presets import list_presets

        self.preset.addItems(list_presets())
        self.preset.setCurrentText(DEFAULT_PRESET)
        self.preset.currentTextChanged.connect(self.load_preset)
        prow.addRow("Preset", self.preset)
        cl.addLayout(prow)
        self.preset_help = QLabel("")
        self.preset_help.setWordWrap(True)
        self.preset_help.setStyleSheet("color: palette(placeholder-text);")
        cl.addWidget(self.preset_help)
        self.form = TrainConfigForm()
        cl.addWidget(self.form)
        drow = QFormLayout()
        self.device = DeviceBox(self.context)
        self.device.detection_failed.connect(lambda why: self.log_line(f"device detection failed: {why}"))
        drow.addRow("Device", self.device)
        cl.addLayout(drow)
        self.config_error = QLabel("")
        self.config_error.setWordWrap(True)
        self.config_error.setStyleSheet("color: #c0392b;")
        cl.addWidget(self.config_error)
        return cfg_box

    def _build_job_box(self) -> QGroupBox:
        """Start, Cancel, Resume; the progress bar and the time line."""
        job_box = QGroupBox("Job")
        jl = QVBoxLayout(job_box)
        brow = QHBoxLayout()
        self.start_btn = QPushButton("Start training")
        self.start_btn.setToolTip("Train a new run with this configuration (one device job at a time)")
        self.start_btn.clicked.connect(self.start_training)
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop after the current step; the last checkpoint is kept so the run can resume")
        self.cancel_btn.clicked.connect(self.cancel)
        self.resume_btn = QPushButton("Resume")
        self.resume_btn.setToolTip("Continue the selected (or last) cancelled or crashed run from its checkpoint")
        self.resume_btn.clicked.connect(self.resume)
        for b in (self.start_btn, self.cancel_btn, self.resume_btn):
            brow.addWidget(b)
        jl.addLayout(brow)
        self.progress = QProgressBar()
        self.progress.setRange(0, 1)
        self.progress.setValue(0)
        self.progress.setToolTip("Optimisation steps done")
        jl.addWidget(self.progress)
        self.eta = QLabel("No job running")
        self.eta.setToolTip("Stage, step, elapsed time and estimated time left")
        jl.addWidget(self.eta)
        return job_box

    def _build_runs_tab(self) -> QWidget:
        """The subject's runs, and what can be done with the selected ones."""
        runs_box = QWidget()
        rl = QVBoxLayout(runs_box)
        rl.setContentsMargins(0, 0, 0, 0)
        self.runs = RunsList()
        self.runs.run_activated.connect(self.show_run)
        self.runs.itemSelectionChanged.connect(self._update_buttons)
        rl.addWidget(self.runs, 1)
        rrow = QHBoxLayout()
        self.folder_label = QLabel("")
        self.folder_label.setToolTip("Folder of this subject's run folders (set in the Data panel)")
        rrow.addWidget(self.folder_label, 1)
        self.refresh_btn = QPushButton("Refresh")
        self.refresh_btn.setToolTip("Read the run folders again")
        self.refresh_btn.clicked.connect(self.refresh_runs)
        self.show_btn = QPushButton("Show")
        self.show_btn.setToolTip("Show the selected run's curves and make it the selected run of every panel")
        self.show_btn.clicked.connect(lambda: self.runs.selected_runs() and self.show_run(self.runs.selected_runs()[0]))
        self.config_btn = QPushButton("Open config…")
        self.config_btn.setToolTip("Show the selected run's config; it can be loaded into the form")
        self.config_btn.clicked.connect(self.open_config)
        self.compare_btn = QPushButton("Compare")
        self.compare_btn.setToolTip("Overlay the curves of the two selected runs")
        self.compare_btn.clicked.connect(self.compare_selected)
        self.tensorboard_btn = QPushButton("TensorBoard")
        self.tensorboard_btn.setToolTip("Open the selected run's scalars (RUN/tb) in TensorBoard in the browser "
                                        "(starts 'tensorboard --logdir RUN/tb' in the background)")
        self.tensorboard_btn.clicked.connect(self.open_tensorboard)
        for b in (self.refresh_btn, self.show_btn, self.config_btn, self.compare_btn, self.tensorboard_btn):
            rrow.addWidget(b)
        rl.addLayout(rrow)
        return runs_box

    def apply_palette(self) -> None:
        self.curves.apply_palette()

    # --- configuration -------------------------------------------------------------------------------------------
    def load_preset(self, name: str) -> None:
        from engine.train.presets import describe_preset, get_preset

        try:
            cfg = get_preset(name, self.state.subject, validate=False)  # validating imports torch: the job does it
        except NeuroLensError as e:
            self.config_error.setText(str(e))
            return
        self.preset_help.setText(describe_preset(name))
        self.form.set_config(cfg)

    def _check_config(self) -> None:
        try:
            self.form.config(self.device.currentData())
            self.config_error.setText("")
        except NeuroLensError as e:
            self.config_error.setText(str(e))
        self._update_buttons()

    # --- subject and runs ----------------------------------------------------------------------------------------
    def _on_subject_changed(self, subject) -> None:
        # sizing the preset to the subject (~10 ms of form work) and reading the run folders each get their own
        # event-loop turn, not a share of the subject-change burst every panel reacts to
        self.context.later(lambda: self.load_preset(self.preset.currentText()))
        self.context.later(self.refresh_runs)

    def _on_run_changed(self, run) -> None:
        if run is None:
            return
        if str(run) not in self.runs.summaries:
            self.refresh_runs()  # made elsewhere (another window, the CLI, --run)
        self.runs.select_run(Path(run))
        if self.worker is None:
            self.show_run(Path(run))  # a run selected anywhere shows its recorded curves here

    def refresh_runs(self) -> None:
        folder = runs_folder(self.context)
        self.folder_label.setText(f"Runs in {folder}" if folder else "Open a subject to see its runs")
        self.runs.set_runs(list_runs(folder))
        self._update_buttons()

    def show_run(self, run: Path) -> None:
        """Show ``run``'s recorded curves and make it the selected run."""
        from engine.train.run import Run

        if self.worker is not None and self.run_dir == Path(run):
            return  # its live curves are on screen already
        try:
            events = Run.open(run).events()
        except NeuroLensError as e:
            self.context.show_status(str(e), 8000)
            return
        self.curves.load_events(events)
        self.context.run.select(run)
        s = self.runs.summaries.get(str(run))
        if s is not None and self.worker is None:
            self.progress.setRange(0, max(s.total, 1))
            self.progress.setValue(min(s.step, max(s.total, 1)))
            self.eta.setText(f"{Path(run).name}: {s.status} at step {s.step} of {s.total}")

    def open_tensorboard(self) -> None:
        """Serve the selected run's TensorBoard scalars and open them in the browser (one server per window)."""
        from neurolens_app.workers.tensorboard import TensorBoardServer

        selected = self.context.run.folder
        runs = self.runs.selected_runs() or ([selected] if selected is not None else [])
        if not runs:
            self.context.show_status("Select a run to open in TensorBoard", 5000)
            return
        if getattr(self, "tensorboard", None) is None:
            self.tensorboard = TensorBoardServer(self)
            self.tensorboard.status.connect(lambda text: (self.context.show_status(text, 10000), self.log_line(text)))
        why = self.tensorboard.open_run(runs[0])
        if why:
            self.context.show_status(why, 10000)
            self.log_line(why)

    def compare_selected(self) -> None:
        """Overlay the second selected run's curves on the first one's."""
        from engine.train.run import Run

        runs = self.runs.selected_runs()
        if len(runs) != 2:
            self.context.show_status("Select two runs to compare (Ctrl+click)", 5000)
            return
        try:
            first, second = Run.open(runs[0]).events(), Run.open(runs[1]).events()
        except NeuroLensError as e:
            self.context.show_status(str(e), 8000)
            return
        self.curves.load_events(first)
        self.curves.overlay(runs[1].name, metrics_from_events(second))
        self.context.show_status(f"Solid: {runs[0].name}; dashed: {runs[1].name}", 8000)

    def open_config(self) -> None:
        runs = self.runs.selected_runs()
        if not runs:
            return
        self._config_dialog = RunConfigDialog(runs[0], self)
        self._config_dialog.use_config.connect(self._use_config)
        self._config_dialog.show()

    def _use_config(self, cfg) -> None:
        self.form.set_config(cfg)
        self.context.show_status(f"Loaded the config of '{cfg.name}' into the form", 5000)

    # --- jobs ----------------------------------------------------------------------------------------------------
    def start_training(self):
        """Start a new run with the form's config; returns the worker (None when it could not start)."""
        from engine.train.trainer import train_job

        subject = self.state.subject
        folder = runs_folder(self.context)
        if subject is None or folder is None:
            self.context.show_status("Open a subject first", 5000)
            return None
        try:
            cfg = self.form.config(self.device.currentData())
        except NeuroLensError as e:
            self.config_error.setText(str(e))
            return None
        run_dir = new_run_dir(folder, cfg.name)
        self.device.detect()  # when the engine preload is off, the device list is filled from the first Start
        return self._start(lambda cancel: train_job(cfg, subject, run_dir, cancel=cancel), run_dir,
                           f"Training {run_dir.name}", [])

    def resume(self):
        """Resume the selected resumable run (else the last run of this panel); returns the worker or None."""
        from engine.train.run import Run
        from engine.train.trainer import resume_job

        run = self._resume_target()
        if run is None:
            self.context.show_status("Select a cancelled or failed run to resume", 5000)
            return None
        try:
            events = Run.open(run).events()
        except NeuroLensError as e:
            self.context.show_status(str(e), 8000)
            return None
        subject = self.state.subject
        return self._start(lambda cancel: resume_job(run, cancel, subject=subject), run, f"Resuming {run.name}",
                           events)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
            self.eta.setText("Cancelling… (stops after the current step)")

    def _resume_target(self) -> Path | None:
        for p in self.runs.selected_runs():
            s = self.runs.summaries.get(str(p))
            if s is not None and s.resumable:
                return p
        if self.run_dir is not None:
            s = self.runs.summaries.get(str(self.run_dir))
            if s is not None and s.resumable:
                return self.run_dir
        return None

    def _start(self, make_job, run_dir: Path, title: str, past_events: list):
        def connect(worker) -> None:
            worker.metric.connect(self._on_metric)
            worker.progress.connect(self._on_progress)
            worker.log.connect(self._on_log)
            worker.event.connect(self._on_event)
            worker.done.connect(self._on_done)

        worker = start_panel_job(self.context, make_job, title, connect)
        if worker is None:
            return None
        self.worker = worker
        self.run_dir = Path(run_dir)
        self.curves.load_events(past_events)
        self._progress = None
        self._t_start = time.perf_counter()
        self.progress.setRange(0, 0)  # busy until the first progress event
        self.eta.setText("Preparing data…")
        self.log_line(f"— {title}")
        self.timer.start()
        self._update_buttons()
        return worker

    @Slot(object)
    def _on_metric(self, ev) -> None:
        self.curves.add_metric(ev.name, ev.value, ev.step, ev.split)

    @Slot(object)
    def _on_progress(self, ev) -> None:
        self._progress = ev  # drawn by the timer

    @Slot(object)
    def _on_log(self, ev) -> None:
        self.log_line(ev.message if ev.level == "info" else f"[{ev.level}] {ev.message}")

    @Slot(object)
    def _on_event(self, ev) -> None:
        if isinstance(ev, Started):
            self.log_line(f"started: {ev.run_dir} ({ev.total} steps, config {ev.config_hash})")
            self.curves.set_planned_steps(ev.total)
            self.refresh_runs()
        elif isinstance(ev, Checkpoint):
            self.log_line(f"checkpoint at step {ev.step}: {Path(ev.path).name}")
        elif isinstance(ev, Finished):
            summary = ", ".join(f"{k} {v:.3f}" if isinstance(v, float) else f"{k} {v}" for k, v in ev.summary.items())
            self.log_line(f"finished ({ev.status}): {summary}")

    def repaint_job(self) -> None:
        """Timer tick: draw the latest progress, and every few ticks the buffered curves."""
        self._ticks += 1
        if self._ticks % CURVES_EVERY == 0 or self.worker is None:
            self.curves.refresh()
        ev = self._progress
        if ev is None:
            return
        total = max(int(ev.total or 0), 1)
        if self.progress.maximum() != total:
            self.progress.setRange(0, total)
        if self.progress.value() != min(int(ev.step), total):
            self.progress.setValue(min(int(ev.step), total))
        elapsed = format_eta(time.perf_counter() - self._t_start)
        # EtaClock gives no estimate until a few steps past the start-up have been timed
        left = f", {format_eta(ev.eta_s)} left" if ev.eta_s is not None else ", estimating the time left…"
        stage = f"{ev.stage}: " if ev.stage else ""
        if self.worker is not None and not self.worker.token.is_set():
            self.eta.setText(f"{stage}step {ev.step} of {total} · {elapsed} elapsed{left}")

    @Slot()
    def _on_done(self) -> None:
        worker, self.worker = self.worker, None
        self.timer.stop()
        self.repaint_job()
        outcome = worker.outcome if worker is not None else None
        if self.progress.maximum() == 0:
            self.progress.setRange(0, 1)
        messages = {"result": "Finished", "cancelled": "Cancelled: the last checkpoint is kept; Resume continues",
                    "errored": "Failed (see the error dialog); Resume continues from the last checkpoint"}
        self.eta.setText(messages.get(outcome, ""))
        self.refresh_runs()
        if outcome == "result" and self.run_dir is not None:
            self.context.run.select(self.run_dir)
            self.runs.select_run(self.run_dir)
        self._update_buttons()

    def log_line(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")

    def _update_buttons(self) -> None:
        running = self.worker is not None
        busy = running or slot_busy(self.context)
        ok_config = not self.config_error.text()
        self.start_btn.setEnabled(not busy and self.state.subject is not None and ok_config)
        self.cancel_btn.setEnabled(running)
        self.resume_btn.setEnabled(not busy and self.state.subject is not None and self._resume_target() is not None)
        self.compare_btn.setEnabled(len(self.runs.selected_runs()) == 2)
        self.config_btn.setEnabled(bool(self.runs.selected_runs()))
        self.show_btn.setEnabled(bool(self.runs.selected_runs()))
        self.tensorboard_btn.setEnabled(bool(self.runs.selected_runs()) or self.context.run.folder is not None)


class RunConfigDialog(QDialog):
    """A run's resolved config (read-only) with "Use in form". Signal: ``use_config(TrainConfig)``."""

    use_config = Signal(object)

    def __init__(self, run: Path, parent=None) -> None:
        super().__init__(parent)
        from engine.train.run import Run

        self.setWindowTitle(f"Config of {run.name}")
        self.run = Path(run)
        config_path = Run(self.run).config_path
        lay = QVBoxLayout(self)
        text = QPlainTextEdit()
        text.setReadOnly(True)
        text.setFont(QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont))
        try:
            text.setPlainText(config_path.read_text(encoding="utf-8"))
        except OSError as e:
            text.setPlainText(f"cannot read {config_path}: {e}")
        lay.addWidget(text)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
        use = buttons.addButton("Use in form", QDialogButtonBox.ButtonRole.AcceptRole)
        use.setToolTip("Load this config into the training form (then edit and start a new run)")
        use.clicked.connect(self._use)
        buttons.rejected.connect(self.reject)
        lay.addWidget(buttons)
        em = self.fontMetrics().height()
        self.resize(int(36 * em), int(30 * em))

    def _use(self) -> None:
        from engine.train.run import Run

        try:
            self.use_config.emit(Run(self.run).config)
        except NeuroLensError as e:
            self.parent().context.show_status(str(e), 8000)
        self.accept()
