"""Build the shipped demo generator (``resources/models/demo-generator/``) with the fixed, seeded recipe.

    python resources/build/build_demo_generator.py                  # full rebuild (~40 min on one idle CPU core)
    python resources/build/build_demo_generator.py --out DIR        # write elsewhere (e.g. to compare first)
    python resources/build/build_demo_generator.py --refit-adapter  # after rebuilding the demo image embedder

The recipe (``engine.recon.demo_generator.DemoTrainConfig``) and architecture (``DemoGeneratorConfig``) are the
defaults of those classes and are recorded in the folder's ``generator.json``. The inputs are the demo stimuli
(``render_stimuli(n_images, seed=stimulus_seed)``) and the shipped demo image embedder, nothing else.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.cli.output import run_job  # noqa: E402
from engine.recon.demo_generator import (FOLDER_NAME, DemoGeneratorConfig, DemoTrainConfig,  # noqa: E402
                                         refit_demo_adapter, train_demo_generator)
from engine.resources import resource_path  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=resource_path("models", FOLDER_NAME),
                    help="output folder (default: the shipped one)")
    ap.add_argument("--refit-adapter", action="store_true",
                    help="retrain only the conditioning adapter of the folder, in place")
    ap.add_argument("--continue-from", type=Path, default=None, metavar="FOLDER",
                    help="reuse the VAE and finished UNet cycles of a folder built with fewer unet_cycles")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="also write the EMA weights every N UNet steps to OUT.stepN")
    args = ap.parse_args(argv)
    if args.refit_adapter:
        run_job(lambda cancel: refit_demo_adapter(args.out, DemoTrainConfig(), cancel=cancel))
    else:
        run_job(lambda cancel: train_demo_generator(args.out, DemoTrainConfig(), DemoGeneratorConfig(), cancel=cancel,
                                                    snapshot_every=args.snapshot_every,
                                                    continue_from=args.continue_from))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
