"""The Reconstruction panel's two rows of controls, as layouts (they sit directly in the panel's grid):
``DecoderRow`` (the run, its decoder, fine-tuning, a generator of the subject's own images) and ``SettingsRow`` (the
reconstruction settings, "Reconstruct all" and Cancel). The panel connects the buttons; the settings row writes its
values into ``ReconState`` and follows the decoder's state (no blurry image: "From blurry" is off)."""

from __future__ import annotations

from PySide6.QtWidgets import QCheckBox, QComboBox, QDoubleSpinBox, QHBoxLayout, QLabel, QPushButton, QSpinBox

from engine.recon import defaults as recon_defaults
from neurolens_app.widgets.run_picker import RunPicker

# MindEye's low-level route: start the diffusion from the blurry reconstruction and re-run this share of the schedule.
# On demo subject 1 (demo-ridge, 2 samples, 25 steps, 100 test images) 0.8 raised PixCorr .277 → .348, SSIM
# .822 → .877, 2-way .860 → .922 and lowered corr-dist .367 → .269 against starting from noise (bench_demo_recon.py,
# docs/benchmarks.md).
DEFAULT_IMG2IMG = 0.8
IMG2IMG_TIP = ("Start from the blurry reconstruction (MindEye's low-level route) and re-run this share of the denoising "
               "schedule (1 = all of it, from the noised blurry image); off = start from noise. 0.8 is the "
               "recommended value.")


class DecoderRow(QHBoxLayout):
    """Run picker, the decoder's description, fine-tuning epochs and button, "Train a generator…"."""

    def __init__(self, context) -> None:
        super().__init__()
        self.addWidget(QLabel("Run"))
        self.run_box = RunPicker(context, label=lambda r: f"{r.path.name} ({r.kind})")
        self.run_box.setToolTip("Finished run whose brain predictions are decoded into images")
        self.addWidget(self.run_box, 1)
        self.decoder_label = QLabel("")
        self.decoder_label.setWordWrap(True)
        self.addWidget(self.decoder_label, 2)
        self.ft_epochs = QSpinBox()
        self.ft_epochs.setRange(1, 1000)
        self.ft_epochs.setValue(3)
        self.ft_epochs.setPrefix("epochs ")
        self.ft_epochs.setToolTip("Epochs of decoder fine-tuning (of the router or adapter; the prior has its own)")
        self.addWidget(self.ft_epochs)
        self.finetune_btn = QPushButton("Fine-tune decoder")
        self.finetune_btn.setToolTip("Fit, on this run's predictions of the training trials, what turns them into "
                                     "the generator's condition: the embedding prior (the generator's own adapter "
                                     "then reads its output as it is), a timestep router for MoE encoders, or, "
                                     "without a prior, the conditioning adapter")
        self.addWidget(self.finetune_btn)
        self.generator_btn = QPushButton("Train a generator on this subject's images")
        self.generator_btn.setToolTip("Learn a small diffusion generator and its image embedder from this subject's "
                                      "training stimuli and prior images (never its test stimuli), into "
                                      "<subject>-generator/ beside the subject; then train a run with that folder as "
                                      "its targets' embedder and fine-tune it here. Cancel keeps the progress: press "
                                      "again to continue.")
        self.addWidget(self.generator_btn)


class SettingsRow(QHBoxLayout):
    """Guidance, steps, sampler, seed, samples, "From blurry", Oracle; "Reconstruct all" and Cancel."""

    def __init__(self, state) -> None:
        super().__init__()
        self.state = state
        self.guidance = QDoubleSpinBox()
        self.guidance.setRange(0.0, 30.0)
        self.guidance.setSingleStep(0.5)
        self.guidance.setValue(recon_defaults.GUIDANCE)
        self.guidance.setToolTip("Classifier-free guidance scale (1 = no guidance)")
        self.steps = QSpinBox()
        self.steps.setRange(1, 1000)
        self.steps.setValue(recon_defaults.STEPS)  # the CLI's default too
        self.steps.setToolTip("Denoising steps")
        self.sampler = QComboBox()
        self.sampler.addItems(["ddim", "dpmpp"])
        self.sampler.setToolTip("Sampler: DDIM or DPM-Solver++")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Base seed of the noise (each image and sample has its own seed derived from it)")
        self.samples = QSpinBox()
        self.samples.setRange(1, 16)
        self.samples.setValue(recon_defaults.SAMPLES)
        self.samples.setToolTip("Samples per image (K)")
        self.img2img = QDoubleSpinBox()
        self.img2img.setRange(0.0, 1.0)
        self.img2img.setSingleStep(0.05)
        self.img2img.setDecimals(2)
        self.img2img.setSpecialValueText("off")  # 0: start from noise
        self.img2img.setValue(DEFAULT_IMG2IMG)
        self.img2img.setToolTip(IMG2IMG_TIP)
        for label, w in (("Guidance", self.guidance), ("Steps", self.steps), ("Sampler", self.sampler),
                         ("Seed", self.seed), ("Samples", self.samples), ("From blurry", self.img2img)):
            self.addWidget(QLabel(label))
            self.addWidget(w)
        self.oracle_box = QCheckBox("Oracle")
        self.oracle_box.setChecked(True)
        self.oracle_box.setToolTip("Also decode the TRUE embedding of each image through the same decoder: what the "
                                   "generator can do at best, beside what the brain gives")
        self.addWidget(self.oracle_box)
        self.addStretch(1)
        self.all_btn = QPushButton("Reconstruct all")
        self.all_btn.setToolTip("Reconstruct every test image with these settings (RUN_DIR/recon/test)")
        self.cancel_btn = QPushButton("Cancel")
        self.cancel_btn.setToolTip("Stop the reconstruction or fine-tuning after the current step")
        self.addWidget(self.all_btn)
        self.addWidget(self.cancel_btn)
        for signal in (self.guidance.valueChanged, self.steps.valueChanged, self.sampler.currentTextChanged,
                       self.seed.valueChanged, self.samples.valueChanged, self.img2img.valueChanged,
                       self.oracle_box.toggled):
            signal.connect(self._write)
        state.decoder_changed.connect(self._on_decoder_changed)
        self._write()

    def values(self) -> dict:
        """The settings as the widgets show them (``img2img_strength`` None when off or unavailable)."""
        return {"guidance": float(self.guidance.value()), "steps": int(self.steps.value()),
                "sampler": self.sampler.currentText(), "seed": int(self.seed.value()),
                "samples": int(self.samples.value()),
                "img2img_strength": (float(self.img2img.value()) if self.img2img.isEnabled() and self.img2img.value() > 0
                                     else None),
                "oracle": self.oracle_box.isChecked()}

    def _write(self, *_args) -> None:
        self.state.set_settings(self.values())

    def _on_decoder_changed(self) -> None:
        if self.state.has_blurry is None:
            return  # no run selected: "From blurry" stays as the last run left it
        self.img2img.setEnabled(self.state.has_blurry)
        self.img2img.setToolTip(IMG2IMG_TIP if self.state.has_blurry else
                                "This run's decoder has no blurry image to start from: fine-tune the decoder")
        self._write()
