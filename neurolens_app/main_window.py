"""``MainWindow``: menus, status bar and one dock per registered panel, sharing one ``AppContext``."""

from __future__ import annotations

import logging
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QApplication, QDockWidget, QFileDialog, QLabel, QMainWindow, QProgressBar,
                               QToolButton, QWidget)

from engine.events import format_eta
from neurolens_app.context import AppContext
from neurolens_app.panels import PanelSpec, panel_specs
from neurolens_app.state.settings import AppSettings
from neurolens_app.widgets.devices import DeviceMenu
from neurolens_app.workers.engine_preload import start_engine_preload
from neurolens_app.workers.engine_worker import wait_for_threads
from neurolens_app.workers.short_job import wait_for_short_jobs
from neurolens_app.workers.subject_jobs import demo_subject_job, open_subject_job

log = logging.getLogger("neurolens_app")
_AREAS = {"left": Qt.DockWidgetArea.LeftDockWidgetArea, "right": Qt.DockWidgetArea.RightDockWidgetArea,
          "top": Qt.DockWidgetArea.TopDockWidgetArea, "bottom": Qt.DockWidgetArea.BottomDockWidgetArea}
SUBJECT_FILTER = ("Subjects (subject.json *.h5 *.hdf5 *.mat *.nii *.nii.gz *.npz *.npy);;"
                  "Native subject folder (subject.json);;All files (*)")


class MainWindow(QMainWindow):
    """The NeuroLens window.

    Signals
    -------
    subject_loaded(object)   a subject finished loading and is now shown
    error_shown(object)      an ``ErrorDialog`` was opened (tests and the screenshot mode watch it)
    """

    subject_loaded = Signal(object)
    error_shown = Signal(object)

    def __init__(self, settings: AppSettings | None = None, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.settings = settings or AppSettings()
        self.context = AppContext(self.settings, self)
        self.setWindowTitle("NeuroLens")
        self.setObjectName("NeuroLensMainWindow")
        self.setDockNestingEnabled(True)
        self.error_dialogs: list = []
        self._load_generation = 0
        self._load_worker = None
        self._engine_preloaded = False
        if not self._preload_enabled():
            self.context.engine_ready = True  # no preload will come: jobs import what they need themselves
        self._make_actions()
        self._make_menus()
        self._make_status_bar()
        self.docks: dict[str, QDockWidget] = {}
        self.panels: dict[str, QWidget] = {}
        for spec in panel_specs():
            self.add_panel(spec)
        self._default_state = self.saveState()
        self._restore_layout()
        c = self.context
        c.status_message.connect(self._on_status)
        c.error_raised.connect(self.show_error)
        c.open_subject_requested.connect(self.open_subject)
        c.jobs.progress.connect(self._on_progress)
        c.jobs.busy_changed.connect(self._on_busy)
        c.jobs.finished.connect(self._on_job_finished)
        c.subject.subject_changed.connect(self._on_subject_changed)
        if "brain" in self.panels:
            self.panels["brain"].hover_text.connect(lambda t: self.statusBar().showMessage(t))

    # --- panels --------------------------------------------------------------------------------------------------
    @property
    def brain(self):
        """The Brain view panel (``BrainPanel``)."""
        return self.panels["brain"]

    def add_panel(self, spec: PanelSpec) -> QDockWidget:
        """Build ``spec``'s panel and dock it; its visibility toggle goes into View → Panels."""
        widget = spec.factory(self.context)
        dock = QDockWidget(spec.title, self)
        dock.setObjectName(f"dock-{spec.name}")
        dock.setWidget(widget)
        dock.setToolTip(spec.tooltip)
        self.addDockWidget(_AREAS[spec.area], dock)
        if spec.tabify_with and spec.tabify_with in self.docks:
            self.tabifyDockWidget(self.docks[spec.tabify_with], dock)
            self.docks[spec.tabify_with].raise_()
        act = dock.toggleViewAction()
        act.setToolTip(f"Show or hide the {spec.title} panel. {spec.tooltip}")
        if spec.shortcut:
            act.setShortcut(QKeySequence(spec.shortcut))
        self.panels_menu.addAction(act)
        self.docks[spec.name] = dock
        self.panels[spec.name] = widget
        if spec.name == "data":
            self.resizeDocks([dock], [self._em(22)], Qt.Orientation.Horizontal)
        return dock

    def show_panel(self, name: str) -> None:
        dock = self.docks[name]
        dock.show()
        dock.raise_()
        dock.widget().setFocus()

    def _em(self, k: float) -> int:
        return int(round(k * self.fontMetrics().height()))

    # --- actions and menus ---------------------------------------------------------------------------------------
    def _action(self, key: str, text: str, slot, shortcut=None, tip: str = "") -> QAction:
        a = QAction(text, self)
        if shortcut is not None:
            a.setShortcut(QKeySequence(shortcut))
        a.setToolTip(tip or text)
        a.setStatusTip(tip or text)
        a.triggered.connect(slot)
        self.addAction(a)  # shortcuts work even when menus are hidden
        self.context.actions[key] = a
        return a

    def _make_actions(self) -> None:
        K = QKeySequence.StandardKey
        self.act_open = self._action("open", "&Open subject…", self.choose_subject, K.Open,
                                     "Open a subject in any format NeuroLens reads (detected automatically)")
        self.act_open_folder = self._action("open_folder", "Open subject &folder…", self.choose_subject_folder,
                                            "Ctrl+Shift+O", "Open a subject stored as a folder: a native .nlsubj "
                                            "folder, a BOLD5000 or GOD release, an NSD folder, a BIDS-style NIfTI set")
        self.act_import = self._action("import", "&Import arrays…", self.import_arrays, "Ctrl+I",
                                       "Import betas and images from plain arrays (.npy/.npz/.h5/.mat) with a preview")
        self.act_demo = self._action("demo", "Open &demo subject", self.open_demo, "Ctrl+D",
                                     "Open the built-in demo subject (a SIMULATION with known ground truth)")
        self.act_export = self._action("export", "&Export view…", self.export_view, "Ctrl+E",
                                       "Save the brain view as PNG or SVG at a chosen size")
        self.act_quit = self._action("quit", "&Quit", self.close, K.Quit, "Quit NeuroLens")
        self.act_cancel = self._action("cancel", "&Cancel running jobs", self.context.jobs.cancel_all, "Ctrl+.",
                                       "Ask every running job to stop after its current step")
        self.act_cancel.setEnabled(False)
        self.act_theme = self._action("theme", "&Dark theme", self.toggle_theme, "Ctrl+T",
                                      "Switch between the light and the dark theme")
        self.act_theme.setCheckable(True)
        self.act_theme.setChecked(self.settings.theme == "dark")
        self.act_reset = self._action("reset_layout", "&Reset layout", self.reset_layout, None,
                                      "Put every panel back in its default place")
        self.act_flat = self._action("view_flat", "&Flatmap", lambda: self._set_view("Flatmap"), "F2",
                                     "Show the flatmap of both hemispheres")
        self.act_3d = self._action("view_3d", "3-D &surface", lambda: self._set_view("3-D surface"), "F3",
                                   "Show the inflated surface in 3-D (OpenGL)")
        self.act_slices = self._action("view_slices", "S&lices", lambda: self._set_view("Slices"), "F4",
                                       "Show volume slices (subjects with voxel coordinates)")
        self.act_next_overlay = self._action("next_overlay", "&Next overlay", lambda: self._step_overlay(1),
                                             "Ctrl+]", "Show the next available overlay")
        self.act_prev_overlay = self._action("prev_overlay", "&Previous overlay", lambda: self._step_overlay(-1),
                                             "Ctrl+[", "Show the previous available overlay")
        self.act_next_trial = self._action("next_trial", "Next &trial", lambda: self._step_trial(1), "Alt+Right",
                                           "Select the next trial (its betas are shown as an overlay)")
        self.act_prev_trial = self._action("prev_trial", "Previous t&rial", lambda: self._step_trial(-1),
                                           "Alt+Left", "Select the previous trial")
        self.act_clear_voxel = self._action("clear_voxel", "Clear voxel selection",
                                            lambda: self.context.subject.set_voxel(-1), "Ctrl+Shift+A",
                                            "Deselect the selected voxel")
        self.act_shortcuts = self._action("shortcuts", "&Keyboard shortcuts", self.show_shortcuts, "F1",
                                          "List every keyboard shortcut")
        self.act_about = self._action("about", "&About NeuroLens", self.show_about, None,
                                      "Versions and the provenance of the open subject")

    def _make_menus(self) -> None:
        mb = self.menuBar()
        f = mb.addMenu("&File")
        f.addActions([self.act_open, self.act_open_folder, self.act_import, self.act_demo])
        self.recent_menu = f.addMenu("Open &recent")
        self.recent_menu.setToolTipsVisible(True)
        self._fill_recent_menu()
        f.addSeparator()
        f.addAction(self.act_export)
        f.addSeparator()
        f.addAction(self.act_cancel)
        f.addSeparator()
        f.addAction(self.act_quit)
        v = mb.addMenu("&View")
        v.addActions([self.act_flat, self.act_3d, self.act_slices])
        v.addSeparator()
        v.addActions([self.act_next_overlay, self.act_prev_overlay, self.act_next_trial, self.act_prev_trial,
                      self.act_clear_voxel])
        v.addSeparator()
        self.panels_menu = v.addMenu("&Panels")
        v.addAction(self.act_reset)
        v.addAction(self.act_theme)
        s = mb.addMenu("&Settings")
        self.device_menu = DeviceMenu(self.settings, s)
        self.device_menu.device_chosen.connect(self.set_device)
        s.addMenu(self.device_menu)
        h = mb.addMenu("&Help")
        h.addActions([self.act_shortcuts, self.act_about])
        for m in (f, v, s, h):
            m.setToolTipsVisible(True)

    def _make_status_bar(self) -> None:
        sb = self.statusBar()
        self.job_label = QLabel("")
        self.job_progress = QProgressBar()
        self.job_progress.setMaximumWidth(self._em(12))
        self.job_progress.setToolTip("Progress of the running job")
        self.job_cancel = QToolButton()
        self.job_cancel.setDefaultAction(self.act_cancel)
        self.job_cancel.setText("Cancel")
        self.device_label = QLabel(f"Device: {self.settings.device}")
        self.device_label.setToolTip("Device used for training and reconstruction (Settings → Device)")
        self.subject_label = QLabel("")
        self.subject_label.setToolTip("The open subject")
        for w in (self.job_label, self.job_progress, self.job_cancel):
            sb.addPermanentWidget(w)
            w.setVisible(False)
        sb.addPermanentWidget(self.subject_label)
        sb.addPermanentWidget(self.device_label)
        sb.showMessage("Welcome to NeuroLens")

    # --- layout --------------------------------------------------------------------------------------------------
    def _restore_layout(self) -> None:
        geometry, state = self.settings.window_state()
        if geometry is not None:
            self.restoreGeometry(geometry)
        else:
            screen = QApplication.primaryScreen()
            if screen is not None:
                avail = screen.availableGeometry()
                self.resize(int(avail.width() * 0.8), int(avail.height() * 0.8))
        if state is not None:
            self.restoreState(state)

    def reset_layout(self) -> None:
        self.restoreState(self._default_state)
        for d in self.docks.values():
            d.show()

    def save_layout(self) -> None:
        self.settings.save_window_state(self.saveGeometry(), self.saveState())

    # --- opening subjects ----------------------------------------------------------------------------------------
    def choose_subject(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Open subject", self.settings.last_folder(), SUBJECT_FILTER)
        if path:
            p = Path(path)
            if p.name == "subject.json":
                p = p.parent  # a native subject is a folder
            self.settings.set_last_folder(p.parent)
            self.open_subject(str(p))

    def choose_subject_folder(self) -> None:
        path = QFileDialog.getExistingDirectory(self, "Open subject folder", self.settings.last_folder())
        if path:
            self.settings.set_last_folder(Path(path).parent)
            self.open_subject(path)

    def open_subject(self, path: str):
        """Open ``path`` in a worker (format detected by the engine); returns the ``EngineWorker``."""
        return self._start_load(lambda cancel: open_subject_job(path, cancel), f"Opening {Path(path).name}")

    def open_demo(self):
        """Open the demo subject, creating it in a worker (with progress) the first time."""
        return self._start_load(lambda cancel: demo_subject_job(cancel), "Opening the demo subject (simulation)")

    def _start_load(self, make_job, title: str):
        if self._load_worker is not None:
            self._load_worker.cancel()  # the newest request wins
        self._load_generation += 1
        gen = self._load_generation
        self.statusBar().showMessage(title + "…")
        worker = self.context.jobs.create(make_job, title, on_result=lambda s: self._on_loaded(gen, s))
        self._load_worker = worker
        worker.start()
        return worker

    def _on_job_finished(self, worker) -> None:
        if self._load_worker is worker:
            self._load_worker = None
        if worker.outcome == "cancelled":
            self.statusBar().showMessage(f"{worker.title}: cancelled", 5000)

    def _on_loaded(self, generation: int, subject) -> None:
        if generation != self._load_generation:
            return
        if subject.path is not None:
            self.settings.add_recent_subject(subject.path)
            self._fill_recent_menu()
        self.context.subject.set_subject(subject)
        sim = " (SIMULATION)" if subject.is_simulation else ""
        self.statusBar().showMessage(f"Opened {subject.name}{sim}: {subject.n_trials} trials, "
                                     f"{subject.n_voxels} voxels", 8000)
        log.info("opened %s%s (%s)", subject.name, sim, subject.path)
        self.subject_loaded.emit(subject)
        if not self._engine_preloaded and self._preload_enabled():
            self._engine_preloaded = True
            from PySide6.QtCore import QTimer

            QTimer.singleShot(1500, self, lambda: start_engine_preload(self.context))  # after the first paint

    def _preload_enabled(self) -> bool:
        return str(self.settings.value("engine/preload", "true")).lower() != "false"

    def _on_subject_changed(self, subject) -> None:
        if subject is None:
            self.setWindowTitle("NeuroLens")
            self.subject_label.setText("")
            return
        sim = " [SIMULATION]" if subject.is_simulation else ""
        # the platform adds " — NeuroLens" (the application display name) where it decorates titles (X11)
        self.setWindowTitle(f"{subject.name}{sim}")
        self.subject_label.setText(f"{subject.name}{sim}")

    def _fill_recent_menu(self) -> None:
        self.recent_menu.clear()
        recent = self.settings.recent_subjects()
        for p in recent:
            a = self.recent_menu.addAction(Path(p).name)
            a.setToolTip(p)
            a.triggered.connect(lambda _=False, p=p: self.open_subject(p))
        if not recent:
            a = self.recent_menu.addAction("(no recent subjects)")
            a.setEnabled(False)
        if "data" in getattr(self, "panels", {}):
            self.panels["data"].refresh_recent()

    # --- import, export and dialogs ------------------------------------------------------------------------------
    def import_arrays(self) -> None:
        from neurolens_app.dialogs.import_dialog import ImportArraysDialog

        dlg = ImportArraysDialog(self.context, self)
        dlg.subject_imported.connect(lambda path: self.open_subject(str(path)))
        dlg.show()
        self._import_dialog = dlg

    def export_view(self) -> None:
        from neurolens_app.dialogs.export_dialog import ExportDialog

        dlg = ExportDialog(self.settings.last_folder("export"), parent=self)
        if dlg.exec():
            path, w, h = dlg.values()
            self.export_figure(path, w, h)

    def export_figure(self, path, width: int, height: int) -> Path | None:
        """Export the brain view to ``path`` (.png/.svg) at ``width`` × ``height``; errors open the error dialog."""
        try:
            out = self.brain.export_figure(path, width, height)
        except (OSError, ValueError) as exc:
            import traceback

            self.show_error("Export", exc, traceback.format_exc())
            return None
        self.settings.set_last_folder(Path(path).parent, "export")
        self.statusBar().showMessage(f"Saved {out} ({width} × {height})", 8000)
        log.info("exported %s (%d × %d)", out, width, height)
        return out

    def show_error(self, title: str, exc, details: str = "") -> None:
        """Show an error without blocking: the message, and the traceback under Details."""
        from neurolens_app.dialogs.error_dialog import ErrorDialog

        dlg = ErrorDialog(title, exc, details, self)
        dlg.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.error_dialogs.append(dlg)
        dlg.destroyed.connect(lambda _=None, d=dlg: self.error_dialogs.remove(d) if d in self.error_dialogs else None)
        dlg.show()
        self.statusBar().showMessage(f"{title}: {getattr(dlg, 'message', exc)}", 10000)
        self.error_shown.emit(dlg)

    def show_shortcuts(self) -> None:
        from neurolens_app.dialogs.shortcuts_dialog import ShortcutsDialog

        actions = list(self.context.actions.values()) + [d.toggleViewAction() for d in self.docks.values()]
        self._shortcuts = ShortcutsDialog(actions, self)
        self._shortcuts.show()

    def show_about(self) -> None:
        from neurolens_app.dialogs.about_dialog import AboutDialog

        self._about = AboutDialog(self.context.subject.subject, self)
        self._about.show()

    # --- theme and device ----------------------------------------------------------------------------------------
    def toggle_theme(self) -> None:
        self.set_theme("dark" if self.act_theme.isChecked() else "light")

    def set_theme(self, name: str) -> None:
        from neurolens_app.themes import apply_theme

        apply_theme(QApplication.instance(), name)
        self.settings.theme = name
        self.act_theme.setChecked(name == "dark")
        for p in self.panels.values():
            if hasattr(p, "apply_palette"):
                p.apply_palette()

    def set_device(self, device: str) -> None:
        self.settings.device = device
        self.device_label.setText(f"Device: {device}")
        self.statusBar().showMessage(f"Device set to {device}", 5000)

    # --- navigation ----------------------------------------------------------------------------------------------
    def _set_view(self, mode: str) -> None:
        self.show_panel("brain")
        why = self.brain.set_view_mode(mode)
        if why:
            self.statusBar().showMessage(f"{mode}: {why}", 8000)

    def _step_overlay(self, step: int) -> None:
        ov = self.context.overlays
        names = [n for n in ov.names() if ov.get(n).available]
        if not names:
            return
        i = names.index(ov.current) if ov.current in names else -1
        ov.set_current(names[(i + step) % len(names)])

    def _step_trial(self, step: int) -> None:
        s = self.context.subject
        if s.subject is None:
            return
        t = min(max(s.trial + step, 0), s.subject.n_trials - 1) if s.trial >= 0 else 0
        s.set_trial(t)
        self.context.overlays.set_current("Trial betas")

    # --- status --------------------------------------------------------------------------------------------------
    def _on_status(self, text: str, timeout_ms: int) -> None:
        self.statusBar().showMessage(text, timeout_ms)

    def _on_progress(self, title: str, ev) -> None:
        total = ev.total or 0
        self.job_progress.setRange(0, total)
        self.job_progress.setValue(min(ev.step, total) if total else 0)
        eta = (f", {format_eta(ev.eta_s)} left" if ev.eta_s is not None
               else ", estimating the time left" if total and ev.step < total else "")
        self.job_label.setText(f"{title}: {ev.message or ev.stage}{eta}")

    def _on_busy(self, busy: bool) -> None:
        for w in (self.job_label, self.job_progress, self.job_cancel):
            w.setVisible(busy)
        self.act_cancel.setEnabled(busy)

    # --- start and quit ------------------------------------------------------------------------------------------
    def confirm_quit(self, running: list[str]) -> bool:
        """Ask before quitting while jobs run (they stop after their current step; training keeps a checkpoint)."""
        from PySide6.QtWidgets import QMessageBox

        answer = QMessageBox.question(
            self, "Quit NeuroLens?",
            f"{'; '.join(running)} {'is' if len(running) == 1 else 'are'} still running.\n\nQuit anyway? Jobs stop "
            "after their current step; a training run keeps its last checkpoint and can be resumed.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No, QMessageBox.StandardButton.No)
        return answer == QMessageBox.StandardButton.Yes

    def show_run(self, run) -> None:
        """Make ``run`` (a run folder of the open subject) the selected run; its folder's runs are listed for this
        subject while it stays open (without changing the runs folder the user chose in the Data panel)."""
        run = Path(run)
        self.context.runs_folder_override = (self.context.subject.subject, run.parent)
        if "data" in self.panels:
            self.panels["data"].refresh_runs()
        self.context.run.select(run)

    def start(self, subject: str | None = None, demo: bool = False) -> None:
        """After the window is shown: prepare the flatmap and open a subject (first launch: the demo)."""
        if "brain" in self.panels:
            self.brain.load_mesh()
        if subject:
            self.open_subject(subject)
        elif demo or self.settings.first_launch:
            self.open_demo()
        else:
            recent = [p for p in self.settings.recent_subjects() if Path(p).exists()]
            if recent:
                self.open_subject(recent[0])
            else:
                self.statusBar().showMessage("Open a subject (Ctrl+O) or the demo subject (Ctrl+D)")
        self.settings.mark_launched()

    def closeEvent(self, event) -> None:  # noqa: N802 - Qt API
        running = [w.title for w in self.context.jobs.active() if w is not self._load_worker]
        if running and not self.confirm_quit(running):
            event.ignore()
            return
        self.save_layout()
        self.context.jobs.cancel_all()
        wait_for_threads(10.0)
        wait_for_short_jobs(10000)
        self.settings.sync()
        super().closeEvent(event)
