"""Fine-tuning on a device other than the CPU: on the stand-in device (tests/device_fixtures.py) everywhere, and on
a real GPU where one is present (``gpu`` marker)."""

from __future__ import annotations

import pytest
import torch

from tests.device_fixtures import meta_device, strict_random  # noqa: F401 - fixtures


@pytest.mark.parametrize("joint", [False, True], ids=["frozen-encoder", "joint-encoder"])
def test_finetune_job_runs_on_another_device(meta_device, moe_run, tiny_demo_gen, tiny_subject_s, joint,
                                             monkeypatch):
    """The whole fine-tuning job (encoder outputs, timestep router, LoRA, condition dropout, joint encoder) on the
    stand-in device: every op there sees one device, every random draw comes from the CPU generator."""
    from engine.events import drive
    from engine.recon import generators
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig

    monkeypatch.setattr(generators, "resolve_device", lambda device, dtype="auto": (meta_device, torch.float32))
    cfg = FinetuneConfig(generator=str(tiny_demo_gen), max_steps=2, batch_size=8, unet="lora", lora_rank=2,
                         joint_encoder=joint, device="meta")
    seen = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.extend(a.device.type for a in args if torch.is_tensor(a)))
    try:
        result = drive(finetune_job(moe_run, config=cfg, subject=tiny_subject_s))
    finally:
        hook.remove()
    assert result.steps == 2
    # Every module call of the job (encoder, router, adapter, UNet, VAE) ran on the device.
    assert seen and set(seen) == {"meta"}, sorted(set(seen))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_finetune_on_cuda_matches_the_cpu_draws(moe_run, tiny_demo_gen, tiny_subject_s):
    """On a real GPU: the fine-tuning job runs, and its first step draws exactly what the CPU run draws."""
    from engine.events import drive
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig

    losses = {}
    for device in ("cpu", "cuda"):
        cfg = FinetuneConfig(generator=str(tiny_demo_gen), max_steps=1, batch_size=8, unet="lora", lora_rank=2,
                             joint_encoder=True, device=device)
        losses[device] = drive(finetune_job(moe_run, config=cfg, subject=tiny_subject_s)).loss
    assert losses["cuda"] == pytest.approx(losses["cpu"], rel=1e-3)


def test_reconstruct_job_runs_on_another_device(meta_device, moe_run, tiny_demo_gen, tiny_subject_s, tmp_path,
                                                monkeypatch):
    """Reconstruction (encoder with per-level outputs, timestep router, batched guided sampling, VAE decode) on the
    stand-in device: one device for every module call, random draws from CPU generators only."""
    import shutil

    from engine.events import drive
    from engine.recon import generators
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig

    run = shutil.copytree(moe_run, tmp_path / "run")
    drive(finetune_job(run, config=FinetuneConfig(generator=str(tiny_demo_gen), max_steps=1, device="cpu"),
                       subject=tiny_subject_s))
    monkeypatch.setattr(generators, "resolve_device", lambda device, dtype="auto": (meta_device, torch.float32))
    seen = []
    hook = torch.nn.modules.module.register_module_forward_pre_hook(
        lambda module, args: seen.extend(a.device.type for a in args if torch.is_tensor(a)))
    try:
        config = ReconstructConfig(samples=2, steps=3, device="meta", batch_size=4)
        result = drive(reconstruct_job(run, config, subject=tiny_subject_s, out_dir=tmp_path / "rec",
                                       trials=[200, 204]))
    finally:
        hook.remove()
    assert (result.n_images, result.n_samples) == (2, 4)
    assert seen and set(seen) == {"meta"}, sorted(set(seen))
