"""The decoder fine-tuning settings (``engine.recon.finetune``): what ``neurolens finetune`` and the GUI choose."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from engine.config import Config, check

UNET_MODES = ("frozen", "lora", "cross_attn")
ADAPTER_MODES = ("auto", "train", "keep")
DEFAULT_PRIOR_EPOCHS = 400  # 3,200 steps on the demo's 2,000 training trials


@dataclass(frozen=True)
class FinetuneConfig(Config):
    """Decoder fine-tuning settings.

    Parameters
    ----------
    generator : str
        ``"demo"`` or a local SD-1.5 / SDXL folder.
    epochs, batch_size : int
    lr : float
        Learning rate of the adapter.
    adapter : {"auto", "train", "keep"}
        Whether the conditioning adapter trains. ``"keep"``: the generator's own adapter stays as the generator
        trained it (the run must predict the generator's embedding). ``"auto"`` (default): kept when the embedding
        prior is fitted, else trained. The prior's output is the embedding that adapter was trained on; training it
        again on the prior's outputs cost the samples PixCorr and SSIM (demo, build 6, three demo-moe runs: kept
        +0.009 to +0.012 PixCorr, +0.008 to +0.009 SSIM; category and 2-way within noise). With nothing else to
        train (no router, frozen UNet) the fine-tuning is then the prior alone.
    router_lr : float
        Learning rate of the timestep router's slopes (its query and keys train at ``lr``). The slopes get a weak
        gradient through the mix of levels: at the adapter's rate they moved 2.0 -> 1.994 in a demo fine-tuning, i.e.
        the router stayed at its prior.
    unet : {"frozen", "lora", "cross_attn"}
    lora_rank : int
    lora_alpha : float or None
        LoRA scaling numerator (default: the rank, i.e. scale 1, as MoRE-Brain).
    lora_ff : bool
        Also put LoRA on the feed-forward projections.
    unet_lr : float
        Learning rate of the LoRA / cross-attention weights (MoRE-Brain: 1e-4).
    drop_prob : float
        Classifier-free-guidance condition dropout.
    min_snr_gamma : float or None
        Min-SNR-γ loss weighting (MoRE-Brain: 1.5; None = plain MSE).
    joint_encoder : bool
        Train the brain encoder too (torch encoders only), with ``encoder_lr`` and the alignment loss.
    align_weight : float
        Weight of ``1 - cos(predicted, true embedding)`` when the encoder trains.
    router : bool
        Learn a timestep router over the levels of a Mixture-of-Experts encoder.
    max_steps : int or None
        Stop after this many steps (for quick runs).
    dtype : {"fp32", "bf16", "fp16", "auto"}
        Precision of the generator while training (fp32 by default: the trained weights stay fp32).
    prior_epochs : int or None
        Epochs of fitting the embedding prior (``engine.recon.embedding_prior``; batches of 256 training trials)
        before the adapter trains; 0: none; ``max_steps`` caps its steps too. Vector embeddings only, and not with
        ``joint_encoder``. None (default): ``DEFAULT_PRIOR_EPOCHS``, except for a generator trained on the
        subject's own images, whose embedding (the images' principal components) a ridge already predicts as well
        as a linear read-out can: there the prior made the samples less specific (digits: 60-way 0.68 → 0.59).
    prior_noise : float
        Standard deviation of the noise added to the standardised predictions while the prior is fitted (training
        trials' predictions are in-sample; demo, build 5: 0 / 0.5 / 1 gave 67 / 72 / 68 % category, one sample).
    ip_adapter : str or None
        IP-Adapter weights for an SD folder (``"auto"``: the folder's ``ip_adapter/*.safetensors`` when it has one;
        None: no image-embedding path). The adapter then also predicts the IP-Adapter image embedding.
    """

    generator: str = "demo"
    epochs: int = 3
    batch_size: int = 16
    lr: float = 5e-4
    adapter: Literal["auto", "train", "keep"] = "auto"
    unet: Literal["frozen", "lora", "cross_attn"] = "frozen"
    lora_rank: int = 4
    lora_alpha: float | None = None
    lora_ff: bool = False
    unet_lr: float = 1e-4
    drop_prob: float = 0.1
    min_snr_gamma: float | None = 5.0
    joint_encoder: bool = False
    encoder_lr: float = 1e-5
    align_weight: float = 0.03
    router: bool = True
    router_lr: float = 2e-2
    blurry_alpha: float = 1.0
    seed: int = 0
    device: str | None = None
    dtype: str = "fp32"
    max_steps: int | None = None
    ip_adapter: str | None = "auto"
    prior_epochs: int | None = None
    prior_noise: float = 0.5

    def __post_init__(self) -> None:
        owner = type(self).__name__
        check(self.unet in UNET_MODES, owner, "unet", f"one of {list(UNET_MODES)}", self.unet)
        check(self.adapter in ADAPTER_MODES, owner, "adapter", f"one of {list(ADAPTER_MODES)}", self.adapter)
        for key in ("epochs", "batch_size", "lora_rank"):
            v = getattr(self, key)
            check(not isinstance(v, bool) and isinstance(v, int) and v >= 1, owner, key, "a positive integer", v)
        check(self.prior_epochs is None or (not isinstance(self.prior_epochs, bool)
                                            and isinstance(self.prior_epochs, int) and self.prior_epochs >= 0),
              owner, "prior_epochs", "an integer >= 0 or null", self.prior_epochs)
        check(self.prior_noise >= 0.0, owner, "prior_noise", "a number >= 0", self.prior_noise)
        check(0.0 <= self.drop_prob < 1.0, owner, "drop_prob", "a number in [0, 1)", self.drop_prob)
