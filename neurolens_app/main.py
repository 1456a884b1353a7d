"""``neurolens-app``: the NeuroLens window.

The window is shown first; the engine (and torch, nilearn, ...) is imported afterwards in workers, so the window
appears within about two seconds. ``--screenshot FILE`` renders the window with the demo loaded and exits.
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
    p.add_argument("--screenshot", metavar="FILE", help="render the window to a PNG once loaded, then exit")
    p.add_argument("--panel", metavar="NAME", help="with --screenshot: render only this panel "
                                                  "(data, brain, trials, log, ...)")
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


def _apply_view(win, view: str | None, overlay: str | None) -> str | None:
    """Apply ``--view`` / ``--overlay``; returns why the view cannot be shown (the flatmap stays), else None."""
    why = win.brain.set_view_mode(view) if view else None
    if why:
        win.context.show_status(f"--view {view}: {why}", 0)
    if overlay:
        win.context.overlays.set_current(overlay)
    return why


class _ScreenshotTaker:
    """Waits until the subject is loaded and the brain view drawn, grabs the window (or one panel), exits."""

    TIMEOUT_S = 600  # the first screenshot of a run panel trains a small demo run

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
        self.ready = lambda: True

    def _on_loaded(self, subject) -> None:
        if subject.n_trials:
            # give the Trials panel and the voxel inspector something to show
            test = subject.split_indices("test")
            self.win.context.subject.set_trial(int(test[0]) if len(test) else 0)
            self.win.context.subject.set_voxel(_interesting_voxel(subject))
        why = _apply_view(self.win, self.view, self.overlay)
        if why:  # a screenshot of a view the subject cannot show would be an empty picture
            from PySide6.QtWidgets import QApplication

            print(f"screenshot: --view {self.view}: {why}", file=sys.stderr)
            self.timer.stop()
            self.win.close()
            QApplication.instance().exit(2)
            return
        if self.panel:
            self.win.show_panel(self.panel)
        if self.panel in RUN_PANELS:
            self._prepare_run(subject)
        else:
            self.loaded = True

    def _prepare_run(self, subject) -> None:
        """The run panels show a run: reuse or make one (see ``screenshot_run_job``)."""
        from neurolens_app.widgets.runs_list import runs_folder

        folder = runs_folder(self.win.context)
        if folder is None:
            self.loaded = True
            return
        dock = self.win.docks[self.panel]
        dock.setFloating(True)  # the panel alone, at the screenshot size
        dock.resize(self.win.size())
        self.win.context.jobs.start(lambda cancel: screenshot_run_job(subject, folder, cancel),
                                    "Preparing the screenshot run", on_result=self._on_run_ready)

    def _on_run_ready(self, run) -> None:
        panel = self.win.panels[self.panel]
        self.win.context.subject.set_run(run)
        if self.panel == "training":
            panel.show_run(run)
            self.ready = lambda: True
        elif self.panel == "reconstruction":
            self.ready = lambda: panel.current_image is not None and bool(panel.results)
        else:
            self.ready = lambda: panel.analysis is not None
        self.loaded = True

    def _on_error(self, dlg) -> None:
        print(f"error while preparing the screenshot: {dlg.message}", file=sys.stderr)

    def _poll(self) -> None:
        from PySide6.QtWidgets import QApplication

        if time.perf_counter() - self.t0 > self.TIMEOUT_S:
            print("screenshot: timed out waiting for the subject", file=sys.stderr)
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


RUN_PANELS = ("training", "reconstruction", "experts")
SCREENSHOT_RUN = "screenshot-demo-moe"
SCREENSHOT_IMAGES = 12


def screenshot_run_job(subject, folder, cancel):
    """Job: the run the screenshots of the run panels show, ``FOLDER/screenshot-demo-moe`` (beside the subject: for
    the demo, under the user's cache dir). An existing finished run of the same preset is reused; otherwise
    ``demo-moe`` is trained (about a minute on 2 CPU cores), its decoder fine-tuned for one epoch, and the first test
    images reconstructed with the panel's default settings. Returns the run folder."""
    import shutil
    from pathlib import Path

    import numpy as np

    from engine.events import Log
    from engine.recon.finetune import DECODER_DIR, FinetuneConfig, finetune_job
    from engine.recon.reconstruct import reconstruct_job
    from engine.train.presets import get_preset
    from engine.train.run import Run
    from engine.train.trainer import train_job
    from neurolens_app.panels.reconstruction import DEFAULT_IMG2IMG

    run = Path(folder) / SCREENSHOT_RUN
    cfg = get_preset("demo-moe", subject).with_overrides({"name": SCREENSHOT_RUN})
    done = ((run / "status.json").is_file() and Run.open(run).status().get("status") == "done"
            and Run.open(run).config.config_hash() == cfg.config_hash())  # same preset as this build's
    if not done:
        if run.exists():
            shutil.rmtree(run)  # interrupted, or made from another version of the preset: start over
        yield Log(f"training {run} for the screenshot (demo-moe preset)")
        yield from train_job(cfg, subject, run, cancel=cancel)
    if not (run / DECODER_DIR / "decoder.json").is_file():
        yield from finetune_job(run, config=FinetuneConfig(epochs=1), cancel=cancel, subject=subject)
    index = run / "recon" / "test" / "index.json"
    if not index.is_file() or _recorded_img2img(index) != DEFAULT_IMG2IMG:  # missing, or made with other settings
        test = subject.split_indices("test")
        images = np.asarray(subject.trials.image_index)[test]
        _, first = np.unique(images, return_index=True)
        trials = [int(test[j]) for j in sorted(first)[:SCREENSHOT_IMAGES]]
        yield from reconstruct_job(run, subject, trials=trials, samples=4,
                                   img2img_strength=DEFAULT_IMG2IMG, out_dir=run / "recon" / "test", cancel=cancel)
    return run


def _recorded_img2img(index) -> float | None:
    import json

    try:
        return json.loads(index.read_text(encoding="utf-8")).get("settings", {}).get("img2img_strength")
    except (OSError, ValueError):
        return None


def _interesting_voxel(subject) -> int:
    """A reliable voxel to show in the inspector (highest noise ceiling), or 0."""
    import numpy as np

    nc = np.asarray(subject.voxels.noise_ceiling, np.float32)
    return int(np.nanargmax(nc)) if np.isfinite(nc).any() else 0


if __name__ == "__main__":
    sys.exit(main())
