"""``neurolens evaluate RECON_DIR [RECON_DIR...]``: every reconstruction metric, one table row per image set."""

from __future__ import annotations

import json
import sys

NAME = "evaluate"
HELP = "score reconstruction folders (PixCorr, SSIM, 2-way, n-way, retrieval, brain correlation)"
DESCRIPTION = (
    "Score one or more folders written by 'neurolens reconstruct'. Rows: the samples (mean over k, best-of-k per "
    "item, best sample set), the blurry images, optionally the 0.75/0.25 blend. Metrics whose model is not available "
    "are listed as unavailable with the reason. The protocol of every number is printed under the table.")
ORDER = 60


def add_arguments(p) -> None:
    p.add_argument("recon_dirs", nargs="+", metavar="RECON_DIR", help="reconstruction folder(s) with index.json")
    p.add_argument("--features", nargs="+", action="extend", default=None, metavar="NAME|PATH",
                   help="feature extractors for 2-way / correlation distance: 'demo', a local CLIP folder, "
                        "PATH:LAYER of a transformers vision model, or ROW=PATH[:LAYER] with ROW one of alexnet2, "
                        "alexnet5, inception, effnet, swav (default: the folder's embedder)")
    p.add_argument("--classifier", default=None, metavar="PATH",
                   help="local transformers image-classification folder for MinD-Vis n-way top-1")
    p.add_argument("--subject", default=None, metavar="PATH", help="subject for the measured voxels (default: index)")
    p.add_argument("--encoding", default=None, metavar="RUN_DIR",
                   help="run folder with the encoding model (encoding.npz + encoding-model/) for the brain "
                        "correlation (default: the index's run)")
    p.add_argument("--n-way", type=int, default=50, help="n of the n-way top-1 (default 50, MinD-Vis code)")
    p.add_argument("--n-way-trials", type=int, default=1000, help="random trials per item (default 1000)")
    p.add_argument("--retrieval-pool", type=int, default=300, help="retrieval pool size (default 300)")
    p.add_argument("--retrieval-repeats", type=int, default=30, help="retrieval draws (default 30)")
    p.add_argument("--blend", action="store_true", help="also score 0.75·sample + 0.25·blurry (published 'enhanced')")
    p.add_argument("--seed", type=int, default=0, help="seed of the n-way and retrieval draws")
    p.add_argument("--device", default=None, help="torch device for feature extractors (default: cuda if present)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--csv", default=None, metavar="FILE", help="write per-trial values to FILE")


def run(args) -> int:
    from engine.evaluate import EvaluationConfig, evaluate_folders
    from engine.evaluate.table import format_table, to_json, write_csv
    from engine.metrics.retrieval import RetrievalConfig
    from engine.metrics.semantic import NWayConfig

    cfg = EvaluationConfig(n_way=NWayConfig(n=args.n_way, trials=args.n_way_trials, seed=args.seed),
                           label_n_way=args.n_way,
                           retrieval=RetrievalConfig(pool=args.retrieval_pool, repeats=args.retrieval_repeats,
                                                     seed=args.seed),
                           blend=args.blend, device=args.device)
    result = evaluate_folders(args.recon_dirs, features=args.features, subject=args.subject,
                              classifier=args.classifier, encoding=args.encoding, config=cfg)
    if args.csv:
        path = write_csv(result, args.csv)
        if not args.json:
            print(f"per-trial values: {path}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(result), indent=2))
    else:
        print(format_table(result), end="")
    return 0
