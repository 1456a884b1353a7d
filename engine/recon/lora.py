"""What of the UNet trains when a decoder is fine-tuned: peft LoRA on the attention (and feed-forward) projections, as
MoRE-Brain, or the cross-attention layers themselves, as upstream NeuroLens / MinD-Vis."""

from __future__ import annotations

from engine.errors import ConfigError

LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
LORA_FF_TARGETS = ("ff.net.0.proj", "ff.net.2")


def lora_config(rank: int, alpha: float | None = None, ff: bool = False):
    from peft import LoraConfig

    targets = list(LORA_TARGETS) + (list(LORA_FF_TARGETS) if ff else [])
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else rank, init_lora_weights="gaussian",
                      target_modules=targets)


def add_lora(unet, rank: int, alpha: float | None = None, ff: bool = False) -> list:
    """Add a peft LoRA adapter to the UNet's attention (and feed-forward) projections; return its parameters."""
    unet.add_adapter(lora_config(rank, alpha, ff))
    params = [p for n, p in unet.named_parameters() if "lora_" in n]
    for p in params:
        p.requires_grad_(True)
    return params


def cross_attn_parameters(unet) -> dict:
    """The cross-attention layers (``attn2``) and their norms (``norm2``) of every transformer block."""
    return {n: p for n, p in unet.named_parameters()
            if ".transformer_blocks." in n and (".attn2." in n or ".norm2." in n)}


def trainable_unet_parameters(unet, mode: str, rank: int, alpha: float | None = None, ff: bool = False) -> list:
    """The UNet parameters that train in ``mode`` (``"frozen"``: none), made trainable (LoRA: added first)."""
    if mode == "lora":
        return add_lora(unet, rank, alpha, ff)
    if mode != "cross_attn":
        return []
    named = cross_attn_parameters(unet)
    if not named:
        raise ConfigError("finetune: unet 'cross_attn': the generator's UNet has no attn2 layers")
    params = list(named.values())
    for p in params:
        p.requires_grad_(True)
    return params
