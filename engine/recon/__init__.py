"""Reconstruction: latent diffusion conditioned on the brain.

Modules: ``generators`` (demo, SD-1.5, SDXL from local folders) and ``generator`` (a loaded one), ``demo_generator``
(the CPU demo model; its build in ``demo_training``), ``conditioning`` (embedding → cross-attention condition), ``guidance`` (learned null condition, CFG),
``sampler`` (the sampling loop), ``finetune`` (adapter / LoRA / cross-attention training), ``timestep_router``
(MoE levels by timestep), ``blurry`` (low-level image, img2img), ``reconstruct`` (the job), ``index`` (output schema).
torch and diffusers are imported by the submodules only.
"""
