"""The reconstruction settings, defined once: what ``reconstruct_job`` takes, the CLI's ``reconstruct`` builds, the GUI
sets, and ``index.json`` records (its ``settings``), so a reconstruction folder says how it was made.

Kept free of torch (the window builds one in its GUI thread). The sampler's own checks (sampler name, steps, guidance,
img2img strength) are ``SamplerConfig``'s, run when the job starts.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.config import Config, coerce, field_types
from engine.errors import ConfigError
from engine.recon import defaults

SOURCES = ("brain", "oracle")
# reconstruction's names of the repeat modes -> engine.train.predict's
REPEAT_MODES = {"average_embeddings": "average_outputs", "average_voxels": "average_voxels"}
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune")
# The settings the Reconstruction panel sets: two results of an image made with the same values of these are the
# same result (the panel reuses one instead of reconstructing again).
PANEL_SETTINGS = ("guidance", "steps", "sampler", "seed", "samples", "img2img_strength")


@dataclass(frozen=True)
class ReconstructConfig(Config):
    """How to reconstruct the images of a split from a run.

    Parameters
    ----------
    samples : int
        Samples per image (K).
    guidance : float
        Classifier-free guidance scale.
    steps : int
        Denoising steps.
    sampler : {"ddim", "dpmpp"}
    seed : int
        Base seed; sample ``k`` of image ``i`` has its own seed (``engine.recon.reconstruct.sample_seed``).
    repeat_mode : {"average_embeddings", "average_voxels"}
        Test repeats: single-trial predictions averaged in embedding space (MindEyeV2, MoRE-Brain), or the betas
        averaged first.
    img2img_strength : float or None
        Start from the blurry image, re-running this share of the schedule.
    source : {"brain", "oracle"}
        ``"oracle"``: condition on the TRUE image embeddings of the split instead of the brain's predictions, through
        the same decoder and settings (no timestep router): the decoder's ceiling. With ``img2img_strength`` its
        samples start from the low-level image the generator draws from the true embedding (the demo generator's
        layout, an own generator's principal components); a generator that draws none (Stable Diffusion, whose
        blurry image comes from the brain) starts the oracle from noise.
    generator : str or None
        Override the decoder's generator (``"demo"`` or a folder). ``index.json`` records the generator used.
    device : str or None
        Torch device (CUDA when present by default).
    dtype : {"auto", "fp32", "fp16", "bf16"}
    batch_size : int or None
        Samples denoised together (images × ``samples``); default ``sampling_batch(generator)``.
    compile : bool or str
        ``torch.compile`` the UNet (``GeneratorConfig.compile``: ``"reduce-overhead"`` adds CUDA graphs).
    preview_every : int
        A ``Preview`` event every this many denoising steps (0: none).
    """

    samples: int = defaults.SAMPLES
    guidance: float = defaults.GUIDANCE
    steps: int = defaults.STEPS
    sampler: str = defaults.SAMPLER
    seed: int = defaults.SEED
    repeat_mode: str = defaults.REPEAT_MODE
    img2img_strength: float | None = None
    source: str = "brain"
    generator: str | None = None
    device: str | None = None
    dtype: str = "auto"
    batch_size: int | None = None
    compile: bool | str = False
    preview_every: int = 5

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name, hint in field_types(type(self)).items():  # kwargs from a form or a script: checked as from_dict
            object.__setattr__(self, name, coerce(getattr(self, name), hint, name, owner))
        if self.source not in SOURCES:
            raise ConfigError(key="source", expected=f"one of {list(SOURCES)}", found=self.source, owner=owner)
        for key in ("samples", "batch_size"):
            if getattr(self, key) is not None and getattr(self, key) < 1:
                raise ConfigError(key=key, expected="a positive integer", found=getattr(self, key), owner=owner)
        if self.repeat_mode not in REPEAT_MODES:
            raise ConfigError(key="repeat_mode", expected=f"one of {list(REPEAT_MODES)}", found=self.repeat_mode,
                              owner=owner)
        if self.compile not in COMPILE_MODES:
            raise ConfigError(key="compile", expected=f"one of {list(COMPILE_MODES)}", found=self.compile,
                              owner=owner)

    def sampler_config(self):
        """The ``SamplerConfig`` of these settings (its checks: sampler, steps, guidance, img2img strength)."""
        from engine.recon.sampler import SamplerConfig

        return SamplerConfig(sampler=self.sampler, steps=self.steps, guidance=self.guidance, seed=self.seed,
                             strength=self.img2img_strength)

    def generator_config(self):
        """The ``GeneratorConfig`` that loads the generator (``"demo"`` unless ``generator`` overrides the
        decoder's)."""
        from engine.recon.generators import GeneratorConfig

        return GeneratorConfig(spec=self.generator or "demo", device=self.device, dtype=self.dtype,
                               compile=self.compile)
