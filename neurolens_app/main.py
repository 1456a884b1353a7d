"""``neurolens-app``: the NeuroLens window.

The window is shown first; the engine (and torch, nilearn, ...) is imported afterwards in workers, so the window
appears within about two seconds. ``--screenshot FILE`` renders the window (the demo, ``--subject`` or ``--run``'s
subject) and exits; ``--run RUN_DIR`` opens a run folder with its subject, so every panel and overlay of a user's run
can be shown (and screenshotted).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from engine._version import __version__  # the one place the version lives; imports nothing heavy

_T0 = time.perf_counter()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="neurolens-app", description="NeuroLens: decode what a person saw from fMRI.")
    p.add_argument("--subject", metavar="PATH", help="open this subject (any format the engine reads)")
    p.add_argument("--demo", action="store_true", help="open the built-in demo subject (a simulation)")
    p.add_argument("--run", metavar="RUN_DIR", help="open this run folder (and its subject, unless --subject is "
                                                    "given): the run panels, its MoE routing and encoding overlays "
                                                    "show it")
    p.add_argument("--screenshot", metavar="FILE", help="render the window to a PNG once loaded, then exit")
    p.add_argument("--panel", metavar="NAME", help="with --screenshot: render only this panel "
                                                  "(data, brain, trials, log; training, reconstruction and experts "
                                                  "need --run)")
    p.add_argument("--view", choices=("flatmap", "3d", "slices"), help="brain view to show")
    p.add_argument("--overlay", metavar="NAME", help="overlay to show once loaded (e.g. 'Noise ceiling')")
    p.add_argument("--theme", choices=("light", "dark"), help="colour theme (remembered)")
    p.add_argument("--size", metavar="WxH", default="1500x950", help="window size for --screenshot (default 1500x950)")
    p.add_argument("--settings", metavar="INI", help="use this settings file instead of the user's")
    p.add_argument("--report-visible", action="store_true", help=argparse.SUPPRESS)  # benchmark: print show time
    p.add_argument("--version", action="version", version=f"neurolens-app {__version__}")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.run:
        try:
            args.run, run_subject = open_run_arg(args.run)
        except ValueError as e:
            print(f"neurolens-app: error: {e}", file=sys.stderr)
            return 2
        if not (args.subject or args.demo):
            args.subject = run_subject
    if (args.screenshot or args.report_visible) and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless rendering: no display needed
    from PySide6.QtCore import QTimer

    from neurolens_app.app import ExceptionHook, ExceptionRelay, create_application
    from neurolens_app.log_handler import setup_logging
    from neurolens_app.state.settings import AppSettings
    from neurolens_app.themes import apply_theme

    app = create_application(sys.argv[:1])
    setup_logging()
    settings = AppSettings(args.settings) if args.settings else AppSettings()
    if args.screenshot:  # render the user's setup, but write nothing back (layout, theme, recent subjects)
        import tempfile

        settings = settings.snapshot(Path(tempfile.mkdtemp(prefix="neurolens-screenshot-")) / "settings.ini")
        # the window exits once drawn: importing torch & co. in the background would be cut off mid-import
        settings.set_value("engine/preload", "false")
    if args.theme:
        settings.theme = args.theme
    apply_theme(app, settings.theme)
    relay = ExceptionRelay()
    hook = ExceptionHook(relay)

    from neurolens_app.main_window import MainWindow

    win = MainWindow(settings)
    relay.raised.connect(win.show_error)
    if args.screenshot:
        w, h = (int(x) for x in args.size.lower().split("x"))
        win.resize(w, h)
    win.show()
    if args.report_visible:
        def _report() -> None:
            print(f"VISIBLE {time.perf_counter() - _T0:.3f}", flush=True)
            QTimer.singleShot(0, app.quit)
        QTimer.singleShot(0, _report)
        rc = app.exec()
        hook.uninstall()
        return rc

    view = {"flatmap": "Flatmap", "3d": "3-D surface", "slices": "Slices"}.get(args.view or "")
    if args.screenshot:
        try:
            taker = _ScreenshotTaker(win, args.screenshot, args.panel, view, args.overlay, args.run)  # noqa: F841
        except ValueError as e:
            print(f"screenshot: {e}", file=sys.stderr)
            return 2
    else:
        def on_loaded(_subject) -> None:
            win.subject_loaded.disconnect(on_loaded)  # --run and --view apply to the first subject only
            if args.run:
                win.show_run(args.run)
            if view or args.overlay:
                if args.run and args.overlay:  # a run's overlays exist once its maps are read
                    def once() -> None:
                        win.context.sources.run_maps_changed.disconnect(once)
                        _apply_view(win, None, args.overlay)
                    win.context.sources.run_maps_changed.connect(once)
                _apply_view(win, view, None if args.run else args.overlay)
        win.subject_loaded.connect(on_loaded)
    QTimer.singleShot(0, lambda: win.start(subject=args.subject, demo=args.demo or bool(args.screenshot)))
    rc = app.exec()
    hook.uninstall()
    rc = _end_workers(rc)
    _delete_window(win)
    return rc


def _delete_window(win) -> None:
    """Destroy the window while the application still exists: left to the interpreter's exit, the QApplication can go
    first and the widgets' destructors then crash (seen: a failed ``--screenshot`` exiting with a segfault, not 2)."""
    from PySide6.QtCore import QCoreApplication, QEvent

    win.deleteLater()
    QCoreApplication.sendPostedEvents(None, QEvent.Type.DeferredDelete)  # the loop has ended: deliver it now


def _end_workers(rc: int) -> int:
    """Cancel and wait for worker threads still running when the event loop ended (a screenshot that failed while the
    subject was opening): Qt aborts the process when a running QThread is destroyed."""
    from PySide6.QtCore import QThreadPool

    from neurolens_app.workers.engine_worker import wait_for_threads

    # short pool jobs (a file read, the engine preload's imports) finish first: cut off at interpreter exit, an
    # import half done raises in its thread
    QThreadPool.globalInstance().waitForDone(15000)
    if not wait_for_threads(30.0):
        print("neurolens-app: a background job did not stop within 30 s; exiting without it", file=sys.stderr,
              flush=True)
        os._exit(rc)
    return rc


def _apply_view(win, view: str | None, overlay: str | None) -> str | None:
    """Apply ``--view`` / ``--overlay``; returns why the view cannot be shown (the flatmap stays), else None."""
    why = win.brain.set_view_mode(view) if view else None
    if why:
        win.context.show_status(f"--view {view}: {why}", 0)
    if overlay:
        win.context.overlays.set_current(overlay)
    return why


def open_run_arg(run: str) -> tuple[Path, str | None]:
    """``--run RUN_DIR``: the run folder and the subject path its provenance records (None if it records none);
    ``ValueError`` with one line when the folder is not a run."""
    from engine.train.run import Run

    path = Path(run).expanduser().resolve()
    if not Run.is_run_folder(path):
        raise ValueError(f"--run {run}: not a run folder (no run config; make one with 'neurolens train')")
    subject = Run(path).subject_path()
    if subject and not Path(subject).exists():
        raise ValueError(f"--run {run}: its subject {subject} (recorded in the run's provenance) does not exist; "
                         f"give it with --subject PATH")
    return path, subject


RUN_PANELS = ("training", "reconstruction", "experts")


class _ScreenshotTaker:
    """Waits until the subject (and ``--run``) is loaded and the view drawn, grabs the window (or one panel), exits.

    Any error (a bad argument, an error dialog, an overlay the subject or run cannot show) prints one line and exits
    with status 2 at once; nothing is trained or written but the PNG.
    """

    TIMEOUT_S = 180

    def __init__(self, win, path: str, panel: str | None, view: str | None, overlay: str | None,
                 run: Path | None = None) -> None:
        from PySide6.QtCore import QTimer

        self.win, self.path, self.panel, self.view, self.overlay, self.run = win, path, panel, view, overlay, run
        self.loaded = False
        if panel and panel not in win.docks:
            raise ValueError(f"--panel: unknown panel {panel!r}; choose one of {sorted(win.docks)}")
        if panel in RUN_PANELS and run is None:
            raise ValueError(f"--panel {panel} shows a run: give its folder with --run RUN_DIR (make one with "
                             f"'neurolens train')")
        win.subject_loaded.connect(self._on_loaded)
        win.error_shown.connect(self._on_error)
        self.timer = QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self._poll)
        self.timer.start()
        self.t0 = time.perf_counter()
        self.settle = None
        self.ready = lambda: True

    def _on_loaded(self, subject) -> None:
        self.win.subject_loaded.disconnect(self._on_loaded)
        if subject.n_trials:
            # give the Trials panel and the voxel inspector something to show
            test = subject.split_indices("test")
            self.win.context.subject.set_trial(int(test[0]) if len(test) else 0)
            self.win.context.subject.set_voxel(_interesting_voxel(subject))
        ov = self.win.context.overlays
        if self.overlay and self.run is None and self.overlay in ov.names() and not ov.get(self.overlay).available:
            hint = "; a run's overlays need --run RUN_DIR" if ov.get(self.overlay).group == "models" else ""
            self._fail(f"--overlay {self.overlay!r} is unavailable: {ov.get(self.overlay).reason}{hint}")
            return
        why = _apply_view(self.win, self.view, None if self.run else self.overlay)
        if why:  # a screenshot of a view the subject cannot show would be an empty picture
            self._fail(f"--view {self.view}: {why}")
            return
        if self.panel:
            self.win.show_panel(self.panel)
        if self.run is None:
            self.loaded = True
            return
        self.win.context.sources.run_maps_changed.connect(self._on_run_maps)
        self.win.show_run(self.run)
        if self.panel in RUN_PANELS:
            dock = self.win.docks[self.panel]
            dock.setFloating(True)  # the panel alone, at the screenshot size
            dock.resize(self.win.size())
            panel = self.win.panels[self.panel]
            if self.panel == "reconstruction":
                self.ready = lambda: panel.current_image is not None and bool(panel.results)
            elif self.panel == "experts":
                self.ready = lambda: panel.analysis is not None

    def _on_run_maps(self) -> None:
        """The run's overlays are known: apply ``--overlay`` now (an unavailable one fails with its reason)."""
        self.win.context.sources.run_maps_changed.disconnect(self._on_run_maps)
        if self.overlay:
            ov = self.win.context.overlays
            if self.overlay in ov.names() and not ov.get(self.overlay).available:
                self._fail(f"--overlay {self.overlay!r} is unavailable: {ov.get(self.overlay).reason}")
                return
            _apply_view(self.win, None, self.overlay)
        self.loaded = True

    def _on_error(self, dlg) -> None:
        self._fail(f"error while preparing the screenshot: {dlg.message}")

    def _fail(self, message: str) -> None:
        from PySide6.QtWidgets import QApplication

        print(f"screenshot: {message}", file=sys.stderr, flush=True)
        self.timer.stop()
        self.win.context.jobs.cancel_all()
        QApplication.instance().exit(2)

    def _poll(self) -> None:
        from PySide6.QtWidgets import QApplication

        if time.perf_counter() - self.t0 > self.TIMEOUT_S:
            print(f"screenshot: timed out after {self.TIMEOUT_S} s waiting for the window to be ready",
                  file=sys.stderr)
            self.timer.stop()
            QApplication.instance().exit(1)
            return
        if not (self.loaded and self.win.brain.is_drawn and self.ready()):
            return
        if self.settle is None:
            self.settle = time.perf_counter()  # let pending thumbnails and layouts settle
            return
        if time.perf_counter() - self.settle < 1.0:
            return
        self.timer.stop()
        widget = self.win.docks[self.panel] if self.panel else self.win
        ok = widget.grab().save(self.path, "PNG")
        print(f"saved {self.path}" if ok else f"could not write {self.path}")
        self.win.close()
        QApplication.instance().exit(0 if ok else 1)


def _interesting_voxel(subject) -> int:
    """A reliable voxel to show in the inspector (highest noise ceiling), or 0."""
    import numpy as np

    nc = np.asarray(subject.voxels.noise_ceiling, np.float32)
    return int(np.nanargmax(nc)) if np.isfinite(nc).any() else 0


if __name__ == "__main__":
    sys.exit(main())
