"""``neurolens-app``: the NeuroLens window.

The window is shown first; the engine (and torch, nilearn, ...) is imported afterwards in workers, so the window
appears within about two seconds. ``--screenshot FILE`` renders the window with the demo loaded and exits.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

_T0 = time.perf_counter()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="neurolens-app", description="NeuroLens: decode what a person saw from fMRI.")
    p.add_argument("--subject", metavar="PATH", help="open this subject (any format the engine reads)")
    p.add_argument("--demo", action="store_true", help="open the built-in demo subject (a simulation)")
    p.add_argument("--screenshot", metavar="FILE", help="render the window to a PNG once loaded, then exit")
    p.add_argument("--panel", metavar="NAME", help="with --screenshot: render only this panel "
                                                  "(data, brain, trials, log, ...)")
    p.add_argument("--view", choices=("flatmap", "3d", "slices"), help="brain view to show")
    p.add_argument("--overlay", metavar="NAME", help="overlay to show once loaded (e.g. 'Noise ceiling')")
    p.add_argument("--theme", choices=("light", "dark"), help="colour theme (remembered)")
    p.add_argument("--size", metavar="WxH", default="1500x950", help="window size for --screenshot (default 1500x950)")
    p.add_argument("--settings", metavar="INI", help="use this settings file instead of the user's")
    p.add_argument("--report-visible", action="store_true", help=argparse.SUPPRESS)  # benchmark: print show time
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if (args.screenshot or args.report_visible) and not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")  # headless rendering: no display needed
    from PySide6.QtCore import QTimer
    from PySide6.QtWidgets import QApplication

    from neurolens_app.app import ExceptionHook, ExceptionRelay, create_application
    from neurolens_app.log_handler import setup_logging
    from neurolens_app.state.settings import AppSettings
    from neurolens_app.themes import apply_theme

    app = create_application(sys.argv[:1])
    setup_logging()
    settings = AppSettings(args.settings) if args.settings else AppSettings()
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
        taker = _ScreenshotTaker(win, args.screenshot, args.panel, view, args.overlay)  # noqa: F841 - kept alive
    elif view or args.overlay:
        win.subject_loaded.connect(lambda _s: _apply_view(win, view, args.overlay))
    QTimer.singleShot(0, lambda: win.start(subject=args.subject, demo=args.demo or bool(args.screenshot)))
    rc = app.exec()
    hook.uninstall()
    return rc


def _apply_view(win, view: str | None, overlay: str | None) -> None:
    if view:
        win.brain.set_view_mode(view)
    if overlay:
        win.context.overlays.set_current(overlay)


class _ScreenshotTaker:
    """Waits until the subject is loaded and the brain view drawn, grabs the window (or one panel), exits."""

    TIMEOUT_S = 240

    def __init__(self, win, path: str, panel: str | None, view: str | None, overlay: str | None) -> None:
        from PySide6.QtCore import QTimer

        self.win, self.path, self.panel, self.view, self.overlay = win, path, panel, view, overlay
        self.loaded = False
        if panel and panel not in win.docks:
            raise SystemExit(f"--panel: unknown panel {panel!r}; choose one of {sorted(win.docks)}")
        win.subject_loaded.connect(self._on_loaded)
        win.error_shown.connect(self._on_error)
        self.timer = QTimer()
        self.timer.setInterval(200)
        self.timer.timeout.connect(self._poll)
        self.timer.start()
        self.t0 = time.perf_counter()
        self.settle = None

    def _on_loaded(self, subject) -> None:
        self.loaded = True
        if subject.n_trials:
            # give the Trials panel and the voxel inspector something to show
            test = subject.split_indices("test")
            self.win.context.subject.set_trial(int(test[0]) if len(test) else 0)
            self.win.context.subject.set_voxel(_interesting_voxel(subject))
        _apply_view(self.win, self.view, self.overlay)
        if self.panel:
            self.win.show_panel(self.panel)

    def _on_error(self, dlg) -> None:
        print(f"error while preparing the screenshot: {dlg.message}", file=sys.stderr)

    def _poll(self) -> None:
        from PySide6.QtWidgets import QApplication

        if time.perf_counter() - self.t0 > self.TIMEOUT_S:
            print("screenshot: timed out waiting for the subject", file=sys.stderr)
            QApplication.instance().exit(1)
            return
        if not (self.loaded and self.win.brain.is_drawn):
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
