"""``neurolens finetune RUN_DIR``: train the decoder (conditioning adapter, optional LoRA) on a run's encoder."""

from __future__ import annotations

NAME = "finetune"
HELP = "fine-tune the image generator's conditioning (and optionally LoRA) on a trained run's brain encoder"
DESCRIPTION = (
    "Train, on the subject's training trials, the embedding prior (vector embeddings: the generator's own adapter "
    "then reads its output as trained, see --adapter) or the adapter that turns the run's predicted embeddings into "
    "the generator's cross-attention condition (with a learned null condition for classifier-free guidance), and "
    "optionally LoRA or the cross-attention layers of the UNet, a timestep router over a Mixture-of-Experts "
    "encoder's levels, or the encoder itself. Writes RUN_DIR/decoder/ after every epoch and when cancelled "
    "(Ctrl-C); --resume continues an interrupted fine-tuning with its saved settings, to the same result."
)
ORDER = 60


def add_arguments(p) -> None:
    from engine.recon.finetune_config import ADAPTER_MODES, DEFAULT_PRIOR_EPOCHS, FinetuneConfig

    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run")
    p.add_argument("--generator", default="demo", metavar="PATH|demo",
                   help="'demo' or a local Stable Diffusion 1.5 / SDXL folder in diffusers layout (default: demo)")
    p.add_argument("--subject", default=None, help="subject path (default: the one recorded in the run)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=5e-4, help="adapter learning rate (default: 5e-4)")
    p.add_argument("--adapter", default=FinetuneConfig.adapter, choices=ADAPTER_MODES,
                   help="whether the conditioning adapter trains: 'keep' the generator's own as trained, 'train' it, "
                        "or 'auto' (default): keep it when the embedding prior is fitted, else train")
    p.add_argument("--lora-rank", type=int, default=None, metavar="R", help="add LoRA of rank R to the UNet attention")
    p.add_argument("--lora-ff", action="store_true", help="with --lora-rank: also the feed-forward projections")
    p.add_argument("--cross-attn-only", action="store_true", help="train the UNet's cross-attention layers (no LoRA)")
    p.add_argument("--unet-lr", type=float, default=1e-4)
    p.add_argument("--min-snr-gamma", type=float, default=5.0, help="min-SNR loss weighting; 0 turns it off")
    p.add_argument("--cond-drop", type=float, default=0.1, help="classifier-free-guidance condition dropout")
    p.add_argument("--joint-encoder", action="store_true", help="train the brain encoder too (alignment loss)")
    p.add_argument("--align-weight", type=float, default=0.03, help="weight of 1 - cos(predicted, true embedding)")
    p.add_argument("--no-router", action="store_true", help="MoE encoders: do not learn a timestep router")
    p.add_argument("--router-lr", type=float, default=FinetuneConfig.router_lr,
                   help=f"learning rate of the timestep router (default {FinetuneConfig.router_lr:g})")
    p.add_argument("--prior-epochs", type=int, default=None, metavar="N",
                   help="epochs of fitting the embedding prior (brain prediction -> image embedding) on the training "
                        f"trials before the adapter; 0: none (default {DEFAULT_PRIOR_EPOCHS}; none for a generator "
                        "trained on the subject's own images)")
    p.add_argument("--prior-noise", type=float, default=FinetuneConfig.prior_noise,
                   help=f"input noise while fitting the prior (default {FinetuneConfig.prior_noise:g})")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    p.add_argument("--dtype", default="fp32", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--ip-adapter", default="auto", metavar="FILE|auto|none",
                   help="IP-Adapter weights for an SD folder: 'auto' uses the folder's ip_adapter/*.safetensors "
                        "when it has one (default), 'none' turns the image-embedding path off")
    p.add_argument("--resume", action="store_true",
                   help="continue the interrupted fine-tuning in RUN_DIR/decoder/ (its saved settings are used)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace RUN_DIR/decoder/ of an earlier fine-tuning (kept until the new one is first saved)")
    p.add_argument("--json-events", action="store_true", help="stream job events as JSON lines on stdout")


def run(args) -> int:
    from engine.cli.output import run_job
    from engine.errors import ConfigError
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig

    if args.lora_rank is not None and args.cross_attn_only:
        raise ConfigError("--lora-rank and --cross-attn-only exclude each other")
    _check_decoder_folder(args)
    unet = "lora" if args.lora_rank is not None else ("cross_attn" if args.cross_attn_only else "frozen")
    cfg = FinetuneConfig(generator=args.generator, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         adapter=args.adapter,
                         unet=unet, lora_rank=args.lora_rank or 4, lora_ff=args.lora_ff, unet_lr=args.unet_lr,
                         drop_prob=args.cond_drop, min_snr_gamma=args.min_snr_gamma or None,
                         joint_encoder=args.joint_encoder, align_weight=args.align_weight,
                         router=not args.no_router, router_lr=args.router_lr, seed=args.seed, device=args.device,
                         dtype=args.dtype, prior_epochs=args.prior_epochs, prior_noise=args.prior_noise,
                         max_steps=args.max_steps,
                         ip_adapter=None if args.ip_adapter.lower() == "none" else args.ip_adapter)
    result = run_job(lambda cancel: finetune_job(args.run_dir, config=cfg, cancel=cancel, subject=args.subject,
                                                 resume=args.resume),
                     json_events=args.json_events)
    if not args.json_events:
        trained = (f"{result.steps} steps, loss {result.loss:.4f}" if result.steps
                   else "the embedding prior; nothing else trains")
        print(f"decoder written to {result.decoder_dir} ({trained})")
    return 0


def _check_decoder_folder(args) -> None:
    """A fresh fine-tuning replaces RUN_DIR/decoder/ only with --overwrite, and only a decoder folder."""
    from engine.atomic import check_replaceable
    from engine.recon.decoder import DECODER_FILE
    from engine.train.run import Run

    if not args.resume:
        check_replaceable(Run(args.run_dir).decoder_dir, marker=DECODER_FILE, kind="decoder",
                          overwrite=args.overwrite, flag="--overwrite (or --resume to continue it)")
