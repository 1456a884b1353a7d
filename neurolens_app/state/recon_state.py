"""``ReconState``: what the Reconstruction panel shows of the selected run: its reconstructed images, the image on
screen, the decoder's status, the reconstruction settings and whether a job of the panel is running. The panel's
widgets observe it; the panel writes it."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal

from engine.recon.results import TrialRecon, add_two_way


class ReconState(QObject):
    """The reconstructions of the selected run, by image index.

    Signals
    -------
    results_changed()         images were added, or the results were cleared (another run or subject)
    image_changed(object)     the image on screen (image index, or None); emitted by every ``show_image`` call, so
                              a view redraws the image when its result was replaced
    decoder_changed()         the decoder's description, whether the run can reconstruct, and whether it has a blurry
                              image to start from
    settings_changed(object)  the reconstruction settings (dict, see ``settings``)
    busy_changed(bool)        a job of the panel started or ended
    """

    results_changed = Signal()
    image_changed = Signal(object)
    decoder_changed = Signal()
    settings_changed = Signal(object)
    busy_changed = Signal(bool)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.results: dict[int, TrialRecon] = {}
        self.image: int | None = None
        self.decoder_text = ""
        self.can_reconstruct = False
        self.has_blurry: bool | None = None  # None: no run selected
        self.settings: dict = {}  # guidance, steps, sampler, seed, samples, img2img_strength (None = off), oracle
        self.worker = None  # the panel's running job (an EngineWorker), or None

    # --- results -------------------------------------------------------------------------------------------------
    def clear(self, forget_image: bool = False) -> None:
        """No results (another run, or the run read again); ``forget_image`` (another subject): no image either, else
        the image index is kept, to be shown again when the run's results are back."""
        self.results = {}
        if forget_image:
            self.image = None
        self.results_changed.emit()
        self.image_changed.emit(self.image)

    def add_results(self, results) -> None:
        """Add (or replace) images; every image's 2-way is recomputed (new images change each comparison set)."""
        for r in results:
            self.results[r.image_index] = r
        add_two_way(self.results.values())
        self.results_changed.emit()

    def set_results(self, results: dict[int, TrialRecon]) -> None:
        """Add a run's results as read from its folders (their 2-way already computed together)."""
        self.results.update(results)
        self.results_changed.emit()

    def show_image(self, image: int | None) -> None:
        self.image = None if image is None else int(image)
        self.image_changed.emit(self.image)

    def set_pending_image(self, image: int) -> None:
        """The image being reconstructed: shown when its result arrives (no signal: there is nothing to draw yet)."""
        self.image = int(image)

    def result(self, image: int | None) -> TrialRecon | None:
        return None if image is None else self.results.get(int(image))

    # --- decoder, settings, job ----------------------------------------------------------------------------------
    def set_decoder(self, text: str, can_reconstruct: bool, has_blurry: bool | None) -> None:
        """``has_blurry`` None: no run is selected."""
        self.decoder_text, self.can_reconstruct = text, bool(can_reconstruct)
        self.has_blurry = None if has_blurry is None else bool(has_blurry)
        self.decoder_changed.emit()

    def set_settings(self, settings: dict) -> None:
        if settings != self.settings:
            self.settings = dict(settings)
            self.settings_changed.emit(dict(settings))

    def set_worker(self, worker) -> None:
        busy_before = self.worker is not None
        self.worker = worker
        if busy_before != (worker is not None):
            self.busy_changed.emit(worker is not None)

    @property
    def busy(self) -> bool:
        return self.worker is not None
