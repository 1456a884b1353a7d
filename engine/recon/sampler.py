"""One readable sampling loop over a diffusers scheduler, with classifier-free guidance and per-step previews.

``denoise(generator, cond, null, config)`` is a Python generator: it yields a ``StepState`` after every denoising step
(step number, current latents and the model's current estimate of the clean latents, for previews) and returns the
final latents. ``sample_latents`` runs it to the end with an optional callback. Steps:

1. timesteps from the scheduler (DDIM or DPM-Solver++), cut to the last ``strength`` share for img2img;
2. initial latents: seeded Gaussian noise per item (one ``torch.Generator`` per item, so an item's result does not
   depend on the batch it was sampled in), or the noised init latents for img2img;
3. per step: one UNet call on [null; cond] (both halves of classifier-free guidance in one batch), guidance, scheduler
   step; nothing in the loop waits for the device (the schedule is read on the host once).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

from engine.errors import ConfigError
from engine.recon import defaults
from engine.events import CancelToken, drive, ensure_token
from engine.recon.conditioning import Condition
from engine.recon.guidance import combine

SAMPLERS = ("ddim", "dpmpp")


@dataclass(frozen=True)
class SamplerConfig:
    """Sampling settings.

    Parameters
    ----------
    sampler : {"ddim", "dpmpp"}
        DDIM (η = 0) or DPM-Solver++ (2nd order, multistep).
    steps : int
        Denoising steps (upstream NeuroLens: DDIM 30).
    guidance : float
        Classifier-free guidance scale (0: unconditional, 1: no guidance; upstream NeuroLens 3).
    seed : int
        Base seed; item ``i`` uses its own seed from ``seeds``.
    strength : float or None
        img2img: share of the schedule re-run from the init latents, noised to its first step (1.0: the whole
        schedule, where the init still shows through the first noise level, as in diffusers' img2img); None = no init.
    """

    sampler: str = defaults.SAMPLER
    steps: int = defaults.STEPS
    guidance: float = defaults.GUIDANCE
    seed: int = 0
    strength: float | None = None

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"sampler: expected one of {list(SAMPLERS)}, found {self.sampler!r}")
        if isinstance(self.steps, bool) or int(self.steps) < 1 or int(self.steps) > 1000:
            raise ConfigError(f"steps: expected an integer in 1..1000, found {self.steps!r}")
        if self.guidance < 0:
            raise ConfigError(f"guidance: expected a number >= 0, found {self.guidance!r}")
        if self.strength is not None and not 0.0 < self.strength <= 1.0:
            raise ConfigError(f"img2img strength: expected a number in (0, 1], found {self.strength!r}")


@dataclass
class StepState:
    """One finished denoising step: ``step`` (1-based) of ``total``, latents and the clean-latent estimate ``x0``
    (computed only when read, for previews: the loop itself never waits for the device)."""

    step: int
    total: int
    timestep: int
    latents: object
    _x0: object = None

    @property
    def x0(self):
        if callable(self._x0):
            self._x0 = self._x0()
        return self._x0


def make_scheduler(scheduler_config: dict, sampler: str):
    """A fresh sampling scheduler with the generator's noise schedule (betas, timesteps, prediction type)."""
    from diffusers import DDIMScheduler, DPMSolverMultistepScheduler

    cfg = {k: v for k, v in scheduler_config.items() if not k.startswith("_")}
    if sampler == "ddim":
        return DDIMScheduler.from_config(cfg, clip_sample=False, set_alpha_to_one=False, steps_offset=1)
    if sampler == "dpmpp":
        return DPMSolverMultistepScheduler.from_config(cfg, algorithm_type="dpmsolver++", solver_order=2)
    raise ConfigError(f"sampler: expected one of {list(SAMPLERS)}, found {sampler!r}")


def set_timesteps(sched, steps: int, device) -> None:
    """``sched.set_timesteps`` without the DeprecationWarning DPM-Solver's would raise under numpy 2.

    diffusers' DPM-Solver computes its sigmas with ``np.array(<torch tensor of alphas_cumprod>)``; numpy 2 asks
    ``Tensor.__array__`` for a ``copy`` keyword it does not take and warns. The schedule is read as a numpy array of
    the same float32 values while the timesteps are set (the scheduler's step uses its own torch tensors)."""
    import torch

    from diffusers import DPMSolverMultistepScheduler

    alphas = getattr(sched, "alphas_cumprod", None)
    if not (isinstance(sched, DPMSolverMultistepScheduler) and isinstance(alphas, torch.Tensor)):
        sched.set_timesteps(steps, device=device)
        return
    sched.alphas_cumprod = alphas.cpu().numpy()
    try:
        sched.set_timesteps(steps, device=device)
    finally:
        sched.alphas_cumprod = alphas


def initial_noise(shape: tuple[int, ...], seeds: Sequence[int], *, device=None, dtype=None):
    """Gaussian noise ``(len(seeds), *shape)``, each row from its own CPU generator (reproducible across devices)."""
    import torch

    rows = [torch.randn(shape, generator=torch.Generator().manual_seed(int(s))) for s in seeds]
    return torch.stack(rows).to(device=device, dtype=dtype)


def denoise(generator, cond: Condition, null: Condition, config: SamplerConfig, *, seeds: Sequence[int] | None = None,
            init_latents=None, cancel: CancelToken | None = None) -> Iterator[StepState]:
    """Sample latents for a batch of conditions; yields a ``StepState`` per step and returns the final latents.

    Parameters
    ----------
    generator : Generator
    cond : Condition or callable
        The batch's conditions, or ``cond(t) -> Condition`` when the condition depends on the timestep (the
        timestep router).
    null : Condition
        The null condition (same batch size), from the same conditioning adapter.
    config : SamplerConfig
    seeds : sequence of int, optional
        One seed per item; default ``config.seed + i``.
    init_latents : Tensor (batch, C, h, w), optional
        img2img starting latents (with ``config.strength``).
    """
    import torch

    cancel = ensure_token(cancel)
    batch = null.batch
    cond_at = cond if callable(cond) else (lambda t: cond)
    seeds = list(seeds) if seeds is not None else [config.seed + i for i in range(batch)]
    sched = make_scheduler(generator.scheduler_config, config.sampler)
    set_timesteps(sched, config.steps, generator.device)
    timesteps = sched.timesteps
    shape = (generator.latent_channels, generator.latent_size, generator.latent_size)
    noise = initial_noise(shape, seeds, device=generator.device, dtype=torch.float32)
    if init_latents is not None and config.strength is not None:  # 1.0: the whole schedule, from the noised init
        start = config.steps - max(1, int(round(config.steps * config.strength)))
        timesteps = timesteps[start * sched.order:]
        if hasattr(sched, "set_begin_index"):
            sched.set_begin_index(start * sched.order)
        latents = sched.add_noise(init_latents.to(generator.device, torch.float32), noise, timesteps[:1])
    else:
        latents = noise * sched.init_noise_sigma

    s = float(config.guidance)
    # Host copies of the schedule, read once: indexing device tensors with int(t) would wait for the GPU every step.
    steps_host = [int(v) for v in timesteps.cpu()]
    alphas = sched.alphas_cumprod.to(torch.float32)
    total = len(timesteps)
    fixed = None if callable(cond) else _guided_condition(null, cond, s, batch).to(generator.device, generator.dtype)
    with torch.no_grad():
        for i, t in enumerate(timesteps):
            cancel.raise_if_set()
            both = fixed if fixed is not None else _guided_condition(null, cond_at(t), s, batch)
            x = torch.cat([latents, latents]) if both.batch == 2 * batch else latents
            x = sched.scale_model_input(x, t)
            eps = generator.predict_noise(x, t, both).float()
            if both.batch == 2 * batch:
                eps_null, eps_cond = eps.chunk(2)
                eps = combine(eps_null, eps_cond, s)
            a = float(alphas[steps_host[i]])
            before = latents
            latents = sched.step(eps, steps_host[i], latents).prev_sample
            yield StepState(step=i + 1, total=total, timestep=steps_host[i], latents=latents,
                            _x0=lambda x=before, e=eps, a=a: (x - (1 - a) ** 0.5 * e) / a ** 0.5)
    return latents


def _guided_condition(null: Condition, cond: Condition, scale: float, batch: int) -> Condition:
    """What one UNet call reads: [null; cond] as one batch (both CFG halves at once), or one half for scale 0 / 1."""
    if cond.batch != batch:
        raise ConfigError(f"condition batch {cond.batch} != null condition batch {batch}")
    return null.cat(cond) if scale not in (0.0, 1.0) else (null if scale == 0.0 else cond)


def sample_latents(generator, cond: Condition, null: Condition, config: SamplerConfig, *,
                   seeds: Sequence[int] | None = None, init_latents=None, cancel: CancelToken | None = None,
                   callback: Callable[[StepState], None] | None = None):
    """Run ``denoise`` to the end; ``callback(state)`` after every step. Returns latents ``(batch, C, h, w)``."""
    loop = denoise(generator, cond, null, config, seeds=seeds, init_latents=init_latents, cancel=cancel)
    return drive(loop, callback)
