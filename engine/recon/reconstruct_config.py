"""The reconstruction settings, defined once: what ``reconstruct_job`` takes, the CLI's ``reconstruct`` builds, the GUI
sets, and ``index.json`` records (its ``settings``), so a reconstruction folder says how it was made.

Kept free of torch (the window builds one in its GUI thread). The sampler's own checks (sampler name, steps, guidance,
img2img strength) are ``SamplerConfig``'s, run when the job starts.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from engine.errors import ConfigError
from engine.recon import defaults

SOURCES = ("brain", "oracle")
# reconstruction's names of the repeat modes -> engine.train.predict's
REPEAT_MODES = {"average_embeddings": "average_outputs", "average_voxels": "average_voxels"}
COMPILE_MODES = (False, True, "default", "reduce-overhead", "max-autotune")


@dataclass(frozen=True)
class ReconstructConfig:
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
        the same decoder (no timestep router, no blurry image): the decoder's ceiling.
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
        if self.source not in SOURCES:
            raise ConfigError(f"source: expected 'brain' or 'oracle', found {self.source!r}")
        if self.source == "oracle" and self.img2img_strength is not None:
            raise ConfigError("img2img_strength: the oracle starts from noise (its blurry image would come from the "
                              "brain); leave it unset with source 'oracle'")
        for key, kind in (("samples", int), ("steps", int), ("seed", int), ("guidance", float),
                          ("img2img_strength", float), ("batch_size", int), ("preview_every", int)):
            object.__setattr__(self, key, _number(key, getattr(self, key), kind))
        if self.samples < 1:
            raise ConfigError(f"samples: expected a positive integer, found {self.samples!r}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch_size: expected a positive integer, found {self.batch_size!r}")
        if self.repeat_mode not in REPEAT_MODES:
            raise ConfigError(f"repeat_mode: expected one of {list(REPEAT_MODES)}, found {self.repeat_mode!r}")
        if self.compile not in COMPILE_MODES:
            raise ConfigError(f"compile: expected one of {list(COMPILE_MODES)}, found {self.compile!r}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ReconstructConfig":
        """The config of ``d`` (e.g. ``to_dict``'s); an unknown key is a ``ConfigError`` naming it."""
        if not isinstance(d, dict):
            raise ConfigError(f"reconstruct: expected a mapping of settings, found {type(d).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise ConfigError(f"reconstruct: unknown key '{key}' (expected one of {names})")
        return cls(**d)

    def replace(self, **changes) -> "ReconstructConfig":
        return self.from_dict({**self.to_dict(), **changes})

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


def _number(key: str, value, kind: type):
    """``value`` as ``kind`` (None stays None); ``ConfigError`` naming ``key`` for a bool or a non-number."""
    if value is None:
        if key in ("img2img_strength", "batch_size"):
            return None
        raise ConfigError(f"{key}: expected a number, found None")
    if isinstance(value, bool):
        raise ConfigError(f"{key}: expected a number, found {value!r}")
    try:
        out = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{key}: expected a number, found {value!r}") from None
    if kind is int and out != value and not (isinstance(value, str) and str(out) == value.strip()):
        raise ConfigError(f"{key}: expected an integer, found {value!r}")
    return out
