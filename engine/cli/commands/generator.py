"""``neurolens generator train --data SUBJECT --out DIR``: a generator learned from the subject's own images."""

from __future__ import annotations

NAME = "generator"
HELP = "train a small image generator on a subject's own stimuli (no Stable Diffusion needed)"
DESCRIPTION = (
    "Builds a pixel-space diffusion model and its image embedder (principal components) from the subject's "
    "TRAINING stimuli plus its prior images (and --images), never its test stimuli. Use it as any generator: "
    "'neurolens train --data SUBJECT --preset demo-ridge --set data.embedder=DIR', then 'neurolens finetune RUN "
    "--generator DIR' and 'neurolens reconstruct RUN'. Ctrl-C saves its state to DIR.resume/; --resume continues."
)
ORDER = 55


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    t = sub.add_parser("train", help="train a generator on a subject's training stimuli and prior images",
                       description=DESCRIPTION)
    t.add_argument("--data", required=True, metavar="SUBJECT", help="subject folder or dataset (any format)")
    t.add_argument("--images", default=None, metavar="EXTRA",
                   help="more unlabeled images of the same kind: a folder of PNGs or an .npz with 'images'")
    t.add_argument("--out", required=True, metavar="DIR", help="the generator folder to write")
    t.add_argument("--steps", type=int, default=None, help="training steps (default 800)")
    t.add_argument("--batch-size", type=int, default=None, help="images per step (default 32)")
    t.add_argument("--components", type=int, default=None, help="principal components of the embedder (default 32)")
    t.add_argument("--seed", type=int, default=None)
    t.add_argument("--threads", type=int, default=None, help="CPU threads (default 1)")
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:N (default: CUDA when present)")
    t.add_argument("--resume", action="store_true", help="continue the interrupted training of DIR (DIR.resume/)")
    t.add_argument("--overwrite", action="store_true", help="replace an existing DIR")
    t.add_argument("--json-events", action="store_true", help="stream job events as JSON lines on stdout")


def run(args) -> int:
    from dataclasses import replace

    from engine.cli.output import run_job
    from engine.recon.own_generator import OwnGeneratorConfig, train_generator_job

    cfg = OwnGeneratorConfig()
    for key, value in (("steps", args.steps), ("batch_size", args.batch_size), ("n_components", args.components),
                       ("seed", args.seed), ("threads", args.threads)):
        if value is not None:
            cfg = replace(cfg, **{key: value})
    out = run_job(lambda cancel: train_generator_job(args.data, args.out, extra_images=args.images, config=cfg,
                                                     resume=args.resume, overwrite=args.overwrite,
                                                     device=args.device, cancel=cancel),
                  json_events=args.json_events)
    if not args.json_events:
        print(out)
    return 0
