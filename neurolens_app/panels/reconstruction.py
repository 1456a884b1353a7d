"""``ReconstructionPanel``: click a held-out trial to reconstruct it from the selected run, and compare.

The gallery shows the test images of the subject. Clicking one runs ``engine.recon.reconstruct.reconstruct_job`` for
that trial in a worker (per-step progress; ``Preview`` events show the image being denoised), then shows the ground
truth, the blurry image and the K samples side by side with the trial's metrics
(``engine.metrics.trial.per_trial_metrics``). "Reconstruct all" does the whole test set. The metrics table lists
every reconstructed image of the run (sortable, best and worst one click away) and exports as CSV; the comparison grid
exports as PNG.

Reconstruction needs a decoder: ``neurolens finetune`` (``engine.recon.finetune.finetune_job``) writes
``RUN_DIR/decoder/``; runs that predict the demo embedding can also use the demo generator directly. "Fine-tune
decoder" runs that job from here. Results of single trials go to ``RUN_DIR/recon/gui/image-NNNNN/``, those of
"Reconstruct all" to ``RUN_DIR/recon/test/``; both are read back (``engine.recon.results``) when the run is selected
again. The panel shows the one selected run of the window (``RunState``); its "Run" box selects a run everywhere.

"Oracle" (on by default) also decodes the TRUE image embedding of each image through the same decoder
(``reconstruct_job(source="oracle")``, into ``<folder>.oracle/``, with the same settings: "From blurry" starts it from
the low-level image the generator draws from the true embedding) and shows it beside the brain's samples, with its
metrics in their own column: what the generator can do, so what the brain adds is in plain sight.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import Slot
from PySide6.QtWidgets import QFileDialog, QGridLayout, QWidget

from engine.errors import NeuroLensError
from engine.metrics.aggregate import higher_is_better
from engine.recon.decoder import decoder_state
from engine.recon.reconstruct_config import PANEL_SETTINGS, ReconstructConfig
from engine.recon.results import (TrialRecon, all_folder, comparison_grid, gui_folder, load_run_recons,
                                  reconstruct_trials_job, write_metrics_csv)
from neurolens_app.panels.job_runner import slot_busy, start_panel_job
from neurolens_app.state.recon_state import ReconState
from neurolens_app.widgets.recon_comparison import ComparisonView
from neurolens_app.widgets.recon_controls import DecoderRow, SettingsRow
from neurolens_app.widgets.recon_gallery import TestImagesGallery
from neurolens_app.widgets.recon_table import ReconTableView
from neurolens_app.widgets.splitters import H, V, stretch_splitter
from neurolens_app.workers.short_job import submit

NO_RUN = "No run selected: choose a finished run above, or train one in the Training panel"


class ReconstructionPanel(QWidget):
    """Widgets and wiring: the results, the shown image, the settings and the running job live in ``self.recon``
    (``ReconState``), the selected run in ``context.run`` (``RunState``); the views observe them."""

    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.state = context.subject
        self.recon = ReconState(self)
        self.run_dir: Path | None = None  # the run whose reconstructions are shown: RunState's, once followed
        self._load_job = None
        self._load_generation = 0
        self._build()
        self.state.subject_changed.connect(self._on_subject_changed)
        context.run.run_changed.connect(lambda run: self._set_run(run, force=True))  # read what the folder holds now
        context.jobs.finished.connect(lambda _w: self._update_buttons())
        self.recon.decoder_changed.connect(self._on_decoder_changed)
        self.recon.busy_changed.connect(lambda _busy: self._update_buttons())
        self._on_subject_changed(self.state.subject)
        self._set_run(context.run.folder)

    # --- layout --------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        self.decoder_row = DecoderRow(self.context)
        self.decoder_row.finetune_btn.clicked.connect(self.start_finetune)
        self.decoder_row.generator_btn.clicked.connect(self.start_generator_training)
        self.settings_row = SettingsRow(self.recon)
        self.settings_row.all_btn.clicked.connect(self.reconstruct_all)
        self.settings_row.cancel_btn.clicked.connect(self.cancel)
        self.gallery_view = TestImagesGallery(self.recon)
        self.gallery_view.trial_clicked.connect(self.reconstruct_trial)
        self.comparison = ComparisonView(self.recon, self.settings_row.samples.value())
        self.table_view = ReconTableView(self.recon)
        self.table_view.image_clicked.connect(self.show_image)
        self.table_view.best_btn.clicked.connect(lambda: self.show_extreme(best=True))
        self.table_view.worst_btn.clicked.connect(lambda: self.show_extreme(best=False))
        self.table_view.export_png_btn.clicked.connect(self._export_png_dialog)
        self.table_view.export_csv_btn.clicked.connect(self._export_csv_dialog)
        split = stretch_splitter(H, (self.gallery_view, 1),
                                 (stretch_splitter(V, (self.comparison, 2), (self.table_view, 3)), 3))
        lay = QGridLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(self.decoder_row, 0, 0)
        lay.addLayout(self.settings_row, 1, 0)
        lay.addWidget(split, 2, 0)
        lay.setRowStretch(2, 1)
        self._update_buttons()

    # --- what the state holds ------------------------------------------------------------------------------------
    @property
    def results(self) -> dict[int, TrialRecon]:
        return self.recon.results

    @property
    def current_image(self) -> int | None:
        return self.recon.image

    @property
    def worker(self):
        return self.recon.worker

    @property
    def can_reconstruct(self) -> bool:
        return self.recon.can_reconstruct

    def settings(self) -> dict:
        return dict(self.recon.settings)

    # --- subject, runs -------------------------------------------------------------------------------------------
    def _on_subject_changed(self, subject) -> None:
        self.gallery_view.clear()
        self.recon.clear(forget_image=True)
        # the thumbnails (one per test image, ~9 ms for 100) in their own event-loop turn, after the burst
        self.context.later(lambda s=subject: self._fill_gallery(s))
        # reading the run folders is disk work: its own event-loop turn, not part of the subject-change burst
        self.context.later(self.refresh_runs)

    def _fill_gallery(self, subject) -> None:
        if subject is not self.state.subject:
            return  # another subject was opened meanwhile
        self.gallery_view.fill(subject)

    def refresh_runs(self) -> None:
        self.decoder_row.run_box.refresh()

    def _set_run(self, run: Path | None, force: bool = False) -> None:
        """Show ``run``'s reconstructions (read again when ``force``: selected on purpose)."""
        run = None if run is None else Path(run)
        if run == self.run_dir and run is not None and not force:
            self._update_decoder()
            return
        self.run_dir = run
        self.recon.clear()
        self._update_decoder()
        if run is not None:
            self._load_generation += 1
            gen = self._load_generation
            # scoring reads the demo embedder (torch): wait for the engine preload rather than import it here
            self.context.when_engine_ready(lambda: self._load_recons(gen, run))

    def _load_recons(self, generation: int, run: Path) -> None:
        if generation != self._load_generation:
            return  # another run was chosen while the engine loaded
        self._load_job = submit(load_run_recons, run,
                                on_result=lambda res: self._on_recons_loaded(generation, res),
                                on_error=lambda e, tb: self.context.error_raised.emit("Reconstructions", e, tb))

    def _on_recons_loaded(self, generation: int, results: dict) -> None:
        if generation != self._load_generation:
            return
        self.recon.set_results(results)
        if self.results:  # the comparison was cleared when the run was (re)selected: show the image again
            self.show_image(self.current_image if self.current_image in self.results else min(self.results))

    def _update_decoder(self) -> None:
        if self.run_dir is None:
            self.recon.set_decoder(NO_RUN, False, None)
        else:
            self.recon.set_decoder(*decoder_state(self.run_dir))

    def _on_decoder_changed(self) -> None:
        self.decoder_row.decoder_label.setText(self.recon.decoder_text)
        self._update_buttons()

    # --- jobs ----------------------------------------------------------------------------------------------------
    def reconstruct_trial(self, trial: int):
        """Show the image of test trial ``trial``; reconstruct it unless it was, with the same settings."""
        subject = self.state.subject
        img = int(subject.trials.image_index[trial])
        self.state.set_trial(trial)
        done = self.results.get(img)
        settings = self.settings()
        if done is not None and done.same_settings(settings) and (done.oracle is not None or not settings["oracle"]):
            self.show_image(img)
            return None
        if self.run_dir is None or not self.can_reconstruct:
            self.context.show_status(self.recon.decoder_text, 8000)
            self.comparison.show_pending(f"Image {img}: not reconstructed", subject.images[img])
            return None
        out = gui_folder(self.run_dir, img)
        return self._start_recon([trial], out, f"Reconstructing image {img}", img)

    def reconstruct_all(self):
        if self.run_dir is None or not self.can_reconstruct:
            return None
        return self._start_recon(None, all_folder(self.run_dir), "Reconstructing the test set", None)

    def _start_recon(self, trials, out_dir: Path, title: str, image: int | None):
        run, subject, settings = self.run_dir, self.state.subject, self.settings()
        config = ReconstructConfig(**{k: settings[k] for k in PANEL_SETTINGS}, device=self.context.settings.device)

        def make_job(cancel):
            return reconstruct_trials_job(run, subject, trials, config, out_dir, settings["oracle"], cancel)

        def on_result(results: list) -> None:
            if self.run_dir == run:  # another run selected meanwhile: its view must not show this run's images
                self._on_recon_result(results)

        worker = self._start(make_job, title, on_result=on_result)
        if worker is None:
            return None
        self.comparison.set_sample_tiles(settings["samples"])
        if image is not None:
            self.comparison.show_pending(f"Image {image}: reconstructing…", subject.images[image])
            self.recon.set_pending_image(image)
        return worker

    def start_finetune(self):
        """Fine-tune the selected run's decoder (``finetune_job``); returns the worker or None."""
        from engine.recon.finetune import FinetuneConfig, finetune_job

        if self.run_dir is None:
            return None
        from engine.recon.own_generator import generator_of_embedder
        from engine.train.predict import model_info

        run, subject = self.run_dir, self.state.subject
        try:  # a run that predicts a trained generator's embedding is fine-tuned with that generator
            generator = generator_of_embedder(model_info(run).get("embedder")) or "demo"
        except (NeuroLensError, OSError, ValueError):
            generator = "demo"
        cfg = FinetuneConfig(generator=generator, epochs=int(self.decoder_row.ft_epochs.value()),
                             device=self.context.settings.device)
        worker = self._start(lambda cancel: finetune_job(run, config=cfg, cancel=cancel, subject=subject),
                             f"Fine-tuning the decoder of {run.name}", on_result=lambda _r: self._update_decoder())
        if worker is not None:
            self.comparison.title.setText(f"Fine-tuning the decoder of {run.name}…")
        return worker

    def start_generator_training(self):
        """Train a generator on the subject's own images (``train_generator_job``); returns the worker or None."""
        from engine.recon.own_generator import can_resume, default_generator_folder, train_generator_job

        subject = self.state.subject
        if subject is None or subject.path is None:
            return None
        out = default_generator_folder(subject)
        resume = can_resume(out)
        if out.exists() and not resume:
            self.context.show_status(f"{out} already holds this subject's generator: train a run with it as the "
                                     f"targets' embedder (data.embedder = {out})", 10000)
            return None
        device = self.context.settings.device
        worker = self._start(lambda cancel: train_generator_job(subject, out, resume=resume, device=device,
                                                                cancel=cancel),
                             f"Training a generator on {subject.name}'s images",
                             on_result=lambda _r: self.context.show_status(f"generator written to {out}", 10000))
        if worker is not None:
            self.comparison.title.setText(f"{'Continuing' if resume else 'Training'} a generator on "
                                          f"{subject.name}'s images → {out.name}…")
        return worker

    def _start(self, make_job, title: str, on_result):
        """Start a device job whose progress this panel shows; the worker, or None when the device is busy."""
        worker = start_panel_job(self.context, make_job, title, self._connect, on_result=on_result)
        if worker is not None:
            self.recon.set_worker(worker)
            self.comparison.show_busy()
        return worker

    def _connect(self, worker) -> None:
        worker.progress.connect(self.comparison.show_progress)
        worker.preview.connect(self.comparison.show_preview)
        worker.done.connect(self._on_done)

    def cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()

    def _on_recon_result(self, results: list) -> None:
        self.recon.add_results(results)  # the new images change every image's comparison set
        if results:
            show = self.current_image if self.current_image in self.results else results[0].image_index
            self.show_image(show)

    @Slot()
    def _on_done(self) -> None:
        worker = self.worker
        self.recon.set_worker(None)
        self.comparison.show_done(worker.outcome if worker is not None else None)
        self._update_decoder()
        self._update_buttons()

    def _update_buttons(self) -> None:
        busy = self.worker is not None or slot_busy(self.context)
        subject = self.state.subject
        ok = self.run_dir is not None and subject is not None
        d, s = self.decoder_row, self.settings_row
        s.all_btn.setEnabled(ok and self.can_reconstruct and not busy)
        d.finetune_btn.setEnabled(ok and not busy and "No trained model" not in self.recon.decoder_text)
        d.finetune_btn.setDefault(ok and not self.can_reconstruct)
        d.generator_btn.setEnabled(subject is not None and subject.path is not None and not busy)
        s.cancel_btn.setEnabled(self.worker is not None)

    # --- showing results -----------------------------------------------------------------------------------------
    def show_image(self, image: int) -> None:
        self.recon.show_image(image)

    def _ordered_results(self) -> list[TrialRecon]:
        """Results in the table's current (sorted) order."""
        return [self.results[i] for i in self.table_view.ordered_images()]

    def show_extreme(self, best: bool = True) -> int | None:
        """Show the image with the best (or worst) mean of the chosen metric; returns its image index."""
        name = self.table_view.rank_metric.currentText()
        scored = [(r.summary().get(name, np.nan), r.image_index) for r in self.results.values()]
        scored = [(v, i) for v, i in scored if np.isfinite(v)]
        if not scored:
            return None
        want_max = best == higher_is_better(name)
        v, img = max(scored) if want_max else min(scored)
        self.show_image(img)
        self.context.show_status(f"{'Best' if best else 'Worst'} {name}: image {img} ({v:.3f})", 6000)
        return img

    # --- export --------------------------------------------------------------------------------------------------
    def export_grid(self, path) -> Path:
        from PIL import Image

        grid = comparison_grid(self._ordered_results() or list(self.results.values()))
        path = Path(path)
        Image.fromarray(grid).save(path, format="PNG")
        return path

    def export_csv(self, path) -> Path:
        return write_metrics_csv(path, self._ordered_results() or list(self.results.values()))

    def _export_png_dialog(self) -> None:
        self._export_dialog("PNG image (*.png)", "reconstructions.png", self.export_grid)

    def _export_csv_dialog(self) -> None:
        self._export_dialog("CSV table (*.csv)", "reconstruction-metrics.csv", self.export_csv)

    def _export_dialog(self, filt: str, name: str, save) -> None:
        start = str(Path(self.context.settings.last_folder("export")) / name)
        path, _ = QFileDialog.getSaveFileName(self, "Export", start, filt)
        if not path:
            return
        try:
            out = save(path)
        except (OSError, ValueError) as e:
            import traceback

            self.context.error_raised.emit("Export", e, traceback.format_exc())
            return
        self.context.settings.set_last_folder(Path(path).parent, "export")
        self.context.show_status(f"Saved {out}", 6000)
