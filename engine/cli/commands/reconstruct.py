"""``neurolens reconstruct RUN_DIR``: generate images of what the subject saw from a run's brain predictions."""

from __future__ import annotations

NAME = "reconstruct"
HELP = "reconstruct the seen images of a split from a trained run (writes PNGs + index.json)"
DESCRIPTION = (
    "Predict the embedding of every image of the split from the brain (test repeats averaged in embedding space by "
    "default), then sample K images per image from the run's decoder with classifier-free guidance. Writes "
    "samples/, gt/, blurry/, index.json and embeddings.npz into --out."
)
ORDER = 61


def _ids(text: str) -> list[int]:
    out = []
    for part in text.split(","):
        part = part.strip()
        if "-" in part:
            a, b = part.split("-", 1)
            out.extend(range(int(a), int(b) + 1))
        elif part:
            out.append(int(part))
    return out


def add_arguments(p) -> None:
    from engine.recon import defaults
    from engine.recon.reconstruct_config import REPEAT_MODES

    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run (fine-tuned with 'finetune')")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--trials", type=_ids, default=None, metavar="IDS",
                   help="trial rows of the split to reconstruct (their images, repeats averaged), e.g. 3,9,18 for "
                        "test trials of the demo subject, whose test trials are interleaved with the training "
                        "trials; rows outside the split are refused (default: every image of the split)")
    p.add_argument("--samples", type=int, default=defaults.SAMPLES, metavar="K",
                   help=f"samples per image (default: {defaults.SAMPLES})")
    p.add_argument("--guidance", type=float, default=defaults.GUIDANCE, metavar="S",
                   help=f"classifier-free guidance (default: {defaults.GUIDANCE:g})")
    p.add_argument("--steps", type=int, default=defaults.STEPS, metavar="N",
                   help=f"denoising steps (default: {defaults.STEPS})")
    p.add_argument("--sampler", choices=["ddim", "dpmpp"], default=defaults.SAMPLER)
    p.add_argument("--seed", type=int, default=defaults.SEED, metavar="X")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/recon/SPLIT)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing reconstruction folder given as --out (kept until the new one is complete)")
    p.add_argument("--repeat-mode", choices=list(REPEAT_MODES), default=defaults.REPEAT_MODE)
    p.add_argument("--img2img-strength", type=float, default=None,
                   help="start from the blurry image, re-running this share of the schedule (0..1]; 1 runs the "
                        "whole schedule from the noised blurry image")
    p.add_argument("--generator", default=None, metavar="PATH|demo", help="override the decoder's generator")
    p.add_argument("--oracle", action="store_true",
                   help="condition on the true image embeddings instead of the brain (the decoder's ceiling; "
                        "evaluate shows it as its own row); with --img2img-strength from the low-level image the "
                        "generator draws from the true embedding, if it draws one")
    p.add_argument("--subject", default=None, help="subject path (default: the one recorded in the run)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--batch-size", type=int, default=None,
                   help="samples denoised together (default: 8 on the CPU, up to 256 on a GPU)")
    p.add_argument("--compile", choices=["none", "default", "reduce-overhead", "max-autotune"], default="none",
                   help="torch.compile the UNet (GPU; reduce-overhead replays CUDA graphs; the first batch compiles)")
    p.add_argument("--json-events", action="store_true", help="stream job events as JSON lines on stdout")


def run(args) -> int:
    from engine.cli.output import run_job
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig

    config = ReconstructConfig(
        samples=args.samples, guidance=args.guidance, steps=args.steps, sampler=args.sampler, seed=args.seed,
        repeat_mode=args.repeat_mode, img2img_strength=args.img2img_strength,
        source="oracle" if args.oracle else "brain", generator=args.generator, device=args.device, dtype=args.dtype,
        batch_size=args.batch_size, compile=False if args.compile == "none" else args.compile)
    result = run_job(lambda cancel: reconstruct_job(
        args.run_dir, config, subject=args.subject, split=args.split, trials=args.trials, out_dir=args.out,
        overwrite=args.overwrite if args.out else None, cancel=cancel),
        json_events=args.json_events)
    if not args.json_events:
        print(f"{result.n_samples} samples of {result.n_images} images in {result.out_dir}")
    return 0
