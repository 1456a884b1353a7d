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
    p.add_argument("run_dir", metavar="RUN_DIR", help="a finished training run (fine-tuned with 'finetune')")
    p.add_argument("--split", default="test", choices=["test", "train"])
    p.add_argument("--trials", type=_ids, default=None, metavar="IDS",
                   help="trial rows to reconstruct, e.g. 2000,2003-2010 (default: every image of the split)")
    p.add_argument("--samples", type=int, default=4, metavar="K", help="samples per image (default: 4)")
    p.add_argument("--guidance", type=float, default=3.0, metavar="S", help="classifier-free guidance (default: 3)")
    p.add_argument("--steps", type=int, default=25, metavar="N", help="denoising steps (default: 25)")
    p.add_argument("--sampler", choices=["ddim", "dpmpp"], default="ddim")
    p.add_argument("--seed", type=int, default=0, metavar="X")
    p.add_argument("--out", default=None, metavar="DIR", help="output folder (default: RUN_DIR/recon/SPLIT)")
    p.add_argument("--repeat-mode", choices=["average_embeddings", "average_voxels"], default="average_embeddings")
    p.add_argument("--img2img-strength", type=float, default=None,
                   help="start from the blurry image, re-running this share of the schedule (0..1]")
    p.add_argument("--generator", default=None, metavar="PATH|demo", help="override the decoder's generator")
    p.add_argument("--oracle", action="store_true",
                   help="condition on the true image embeddings instead of the brain (the decoder's ceiling; "
                        "evaluate shows it as its own row)")
    p.add_argument("--subject", default=None, help="subject path (default: the one recorded in the run)")
    p.add_argument("--device", default=None)
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "fp16", "bf16"])
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--json-events", action="store_true", help="stream job events as JSON lines on stdout")


def run(args) -> int:
    from engine.cli.output import run_job
    from engine.recon.reconstruct import reconstruct_job

    result = run_job(lambda cancel: reconstruct_job(
        args.run_dir, subject=args.subject, split=args.split, trials=args.trials, samples=args.samples,
        guidance=args.guidance, steps=args.steps, sampler=args.sampler, seed=args.seed, out_dir=args.out,
        repeat_mode=args.repeat_mode, img2img_strength=args.img2img_strength, generator=args.generator,
        device=args.device, dtype=args.dtype, batch_size=args.batch_size,
        source="oracle" if args.oracle else "brain", cancel=cancel),
        json_events=args.json_events)
    if not args.json_events:
        print(f"{result.n_samples} samples of {result.n_images} images in {result.out_dir}")
    return 0
