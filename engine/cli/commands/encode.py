"""``neurolens encode --data SUBJECT --out RUN_DIR``: fit image-embedding → voxel encoding models and write the maps."""

from __future__ import annotations

NAME = "encode"
HELP = "fit encoding models (image embedding → voxels) and write per-voxel accuracy maps"
DESCRIPTION = (
    "Fit a ridge encoding model per voxel from the stimulus embeddings (one alpha per voxel by 5-fold CV on the "
    "training trials), evaluate it on the repeat-averaged test trials, and write encoding.npz (test_r, test_r2, "
    "noise_ceiling, normalized_r, alpha per voxel), encoding.json and the model into RUN_DIR."
)
ORDER = 40


def add_arguments(p) -> None:
    p.add_argument("--data", required=True, metavar="SUBJECT", help="subject folder or dataset (any readable format), or demo / demo:N for the built-in demo subject")
    p.add_argument("--out", required=True, metavar="RUN_DIR", help="folder to write the maps into")
    p.add_argument("--embedder", default="demo", metavar="demo|PATH",
                   help="image embedder: 'demo' or a local CLIP folder (default: demo)")
    p.add_argument("--features", choices=["pooled", "tokens"], default="pooled",
                   help="pooled embedding or flattened tokens as features (default: pooled)")
    p.add_argument("--backend", choices=["numpy", "torch"], default="numpy",
                   help="ridge backend; torch uses CUDA when present (default: numpy)")
    p.add_argument("--overwrite", action="store_true", help="replace encoding maps already in RUN_DIR")
    p.add_argument("--json-events", action="store_true", help="stream job events as JSON lines on stdout")


def run(args) -> int:
    from engine.cli.output import run_job
    from engine.data import open_subject
    from engine.models.encoding_job import encode_job

    from pathlib import Path

    from engine.errors import OutputExistsError
    from engine.models.encoding import MAPS_FILE

    if (Path(args.out) / MAPS_FILE).exists() and not args.overwrite:
        raise OutputExistsError(f"{Path(args.out) / MAPS_FILE}: already exists (pass --overwrite to replace it)")
    subject = open_subject(args.data)
    maps = run_job(lambda cancel: encode_job(subject, args.out, embedder=args.embedder, features=args.features,
                                             backend=args.backend, cancel=cancel),
                   json_events=args.json_events)
    if not args.json_events:
        s = maps.meta["summary"]
        print(f"mean test r {s['mean_test_r']:.3f} over {maps.n_voxels} voxels; maps in {args.out}")
        for name, r in maps.meta["rois"].items():
            print(f"  {name:<10} {r['n_voxels']:>6} voxels  mean r {r['mean_r']:.3f}")
    return 0
