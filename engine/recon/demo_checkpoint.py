"""Checkpoints of the demo generator's build: a generator folder plus ``train_state`` (cycle, step) and the live
weights with their AdamW moments, so a stopped build continues with the same result as an uninterrupted one.

Two checkpoints come before the UNet's first step: after the VAE stage (``train_state`` ``{"stage": "vae"}``: the
VAE, and torch's random state, from which the UNet and the adapter are initialised) and after the spatial head's
pre-training (a whole generator folder at cycle 0, step 0)."""

from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path

from engine.jsonfile import read_object  # bounded, top-level type checked
from engine.recon.demo_generator import (MANIFEST, OPTIMIZER_FILE, PARTS, DemoGeneratorConfig, build_manifest,
                                         save_model_part, write_manifest)

RNG_FILE = "train_state/rng.safetensors"  # the VAE-stage checkpoint's torch random state
VAE_STAGE = "vae"  # ``train_state["stage"]`` of a checkpoint written after the VAE stage (no UNet yet)


@contextlib.contextmanager
def ema_swapped(params, ema):
    """Inside: the parameters hold the EMA weights (yields their live values); after: the live values again."""
    import torch

    with torch.no_grad():
        live = [p.detach().clone() for p in params]
        for p, e in zip(params, ema):
            p.copy_(e)
    try:
        yield live
    finally:
        with torch.no_grad():
            for p, v in zip(params, live):
                p.copy_(v)


def optimizer_state(opt, params, live) -> dict:
    """Live weights and AdamW moments as flat tensors (``live.i``, ``exp_avg.i``, ``exp_avg_sq.i``, ``step.i``)."""
    import torch

    out = {}
    for i, (p, v) in enumerate(zip(params, live)):
        out[f"live.{i}"] = v.detach().cpu().contiguous()
        st = opt.state.get(p, {})
        for k in ("exp_avg", "exp_avg_sq"):
            if k in st:
                out[f"{k}.{i}"] = st[k].detach().cpu().contiguous()
        if "step" in st:
            out[f"step.{i}"] = torch.as_tensor(st["step"], dtype=torch.float32).reshape(1).cpu()
    return out


def restore_optimizer(state: dict, params, opt) -> None:
    """Put the checkpoint's live weights and AdamW moments back (the EMA is what the folder's weights hold)."""
    import torch

    with torch.no_grad():
        for i, p in enumerate(params):
            p.copy_(state[f"live.{i}"].to(p.device))
            if f"exp_avg.{i}" in state:
                opt.state[p] = {"step": torch.tensor(float(state[f"step.{i}"][0])),
                                "exp_avg": state[f"exp_avg.{i}"].to(p.device).clone(),
                                "exp_avg_sq": state[f"exp_avg_sq.{i}"].to(p.device).clone()}


def checkpoint_architecture(folder) -> DemoGeneratorConfig:
    """The architecture a demo-generator folder (a checkpoint or a finished build) was built with."""
    return DemoGeneratorConfig.from_dict(read_object(Path(folder) / MANIFEST)["config"])


def save_vae_stage(out_dir, *, vae, cfg: DemoGeneratorConfig, recipe, embedder_identity: str | None,
                   stimuli: str | None, vae_from=None, init_from=None) -> Path:
    """Write the checkpoint after the VAE stage (trained or reused, its decoder fine-tuned): the VAE, the manifest
    and torch's global random state, which the fresh UNet and adapter are drawn from next."""
    import torch

    from engine.atomic import atomic_dir, atomic_save_safetensors

    with atomic_dir(out_dir, overwrite=True) as tmp:
        save_model_part(tmp, "vae", vae)
        (tmp / RNG_FILE).parent.mkdir()
        atomic_save_safetensors(tmp / RNG_FILE, {"torch": torch.get_rng_state()})
        write_manifest(tmp, build_manifest(cfg, recipe=recipe, embedder_identity=embedder_identity, stimuli=stimuli,
                                           vae_from=vae_from, init_from=init_from,
                                           train_state={"stage": VAE_STAGE, "cycle": 0, "step": 0,
                                                        "complete": False}))
    return Path(out_dir)


def load_checkpoint(folder, recipe, cfg: DemoGeneratorConfig):
    """(vae, unet, adapter, train state, optimizer state or None) of a folder the recipe ``recipe`` (a
    ``DemoTrainConfig``) wrote. A checkpoint after the VAE stage has no UNet or adapter yet (None): its train state
    says ``"stage": "vae"`` and torch's random state is restored here, as it was when it was written."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from safetensors.torch import load_file

    from engine.errors import CheckpointError
    from engine.recon.conditioning import ConditioningAdapter

    folder = Path(folder)
    meta = read_object(folder / MANIFEST)
    schedule = ("lr_restart_cycle", "lr_restart_every")
    offset = ("offset_noise", "offset_noise_cycle")
    # Keys a manifest may lack (written before they existed): those builds ran without them.
    off = {f.name: f.default for f in dataclasses.fields(recipe) if f.name in schedule + offset}
    done_recipe = {"unet_cycles": 1, "cycle_lr_decay": recipe.cycle_lr_decay, **off, **(meta.get("recipe") or {})}
    written = meta.get("train_state") or {"cycle": int(done_recipe["unet_cycles"]), "step": 0, "complete": True}
    state = {"cycle": int(written["cycle"]), "step": int(written["step"])}
    if written.get("stage") is not None:
        if written["stage"] != VAE_STAGE:
            raise CheckpointError(f"{folder / MANIFEST}: key 'train_state.stage': expected {VAE_STAGE!r}, found "
                                  f"{written['stage']!r}")
        state["stage"] = VAE_STAGE
    mine = recipe.to_dict()
    # The learning-rate restarts and the offset noise may be set or moved as long as every begun cycle keeps its
    # peak rate and its offset noise.
    begun = state["cycle"] + (1 if state["step"] else 0)
    done = dataclasses.replace(recipe, **{k: done_recipe[k] for k in schedule + offset})
    free = {"unet_cycles"}
    if all(done.cycle_peak_lr(c) == recipe.cycle_peak_lr(c) for c in range(begun)):
        free |= set(schedule)
    if all(done.cycle_offset_noise(c) == recipe.cycle_offset_noise(c) for c in range(begun)):
        free |= set(offset)
    differ = sorted(k for k in mine if k not in free and done_recipe.get(k) != mine[k])
    built, wanted = checkpoint_architecture(folder).to_dict(), cfg.to_dict()
    arch_differ = sorted(k for k in wanted if built.get(k) != wanted[k])
    if differ or arch_differ:
        raise CheckpointError(f"{folder / MANIFEST}: built with another recipe (keys {differ}) or architecture "
                              f"(keys {arch_differ}, e.g. another --latent-size)")
    if state["cycle"] >= recipe.unet_cycles:
        raise CheckpointError(f"{folder}: already has {state['cycle']} UNet cycle(s); the recipe asks for "
                              f"{recipe.unet_cycles}")
    vae = AutoencoderKL.from_pretrained(folder / "vae", local_files_only=True)
    if state.get("stage") == VAE_STAGE:
        import torch

        torch.set_rng_state(load_file(str(folder / RNG_FILE))["torch"])
        return vae, None, None, state, None
    unet = UNet2DConditionModel.from_pretrained(folder / "unet", local_files_only=True).train()
    adapter = ConditioningAdapter.load(folder / "adapter")
    opt_file = folder / OPTIMIZER_FILE
    resume = load_file(str(opt_file)) if state["step"] and opt_file.is_file() else None
    return vae, unet, adapter, state, resume


def finish_checkpoint(folder, out_dir, *, overwrite: bool = False) -> Path:
    """Write the checkpoint ``folder``, stopped at the end of a UNet cycle, to ``out_dir`` as the finished build of
    that many cycles (its recipe's ``unet_cycles``), without the optimizer state: what a build asked for that many
    cycles writes, since each cycle starts afresh from the previous one's EMA weights. Returns ``out_dir``."""
    import shutil

    from engine.atomic import atomic_dir
    from engine.errors import CheckpointError

    folder = Path(folder)
    meta = read_object(folder / MANIFEST)
    state = meta.get("train_state") or {}
    if state.get("complete") or state.get("step") != 0 or not state.get("cycle"):
        raise CheckpointError(f"{folder / MANIFEST}: key 'train_state': expected a checkpoint at the end of a UNet "
                              f"cycle (step 0 of a cycle after the first, not complete), found {state}")
    meta["recipe"] = {**(meta.get("recipe") or {}), "unet_cycles": int(state["cycle"])}
    meta["train_state"] = {"cycle": int(state["cycle"]), "step": 0, "complete": True}
    with atomic_dir(out_dir, overwrite=overwrite) as tmp:
        for part in PARTS:
            shutil.copytree(folder / part, tmp / part)
        write_manifest(tmp, meta)
    return Path(out_dir)
