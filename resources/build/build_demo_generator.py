"""Build the shipped demo generator (``resources/models/demo-generator/``) with the fixed, seeded recipe.

    python resources/build/build_demo_generator.py --shipped --out DIR --checkpoint-every 250
        # the shipped build (build 7) from scratch, resumable: after a stop, the same line with --continue-from DIR
        # (about 20 min per UNet cycle on the 2 CPU cores, ten cycles; --device cuda: minutes)
    python resources/build/build_demo_generator.py                       # the 16x16-latent recipe (builds 2-6)
    python resources/build/build_demo_generator.py --out DIR             # write elsewhere (e.g. to compare first)
    python resources/build/build_demo_generator.py --out DIR --checkpoint-every 250   # resumable: then, after a stop,
    python resources/build/build_demo_generator.py --out DIR --continue-from DIR      # ... resume where it stopped
    python resources/build/build_demo_generator.py --device cuda         # the same recipe on a GPU (minutes)
    python resources/build/build_demo_generator.py --out DIR --continue-from resources/models/demo-generator \
        --shipped --unet-cycles 12 --device cuda                         # more cycles on the shipped build (exact)
    python resources/build/build_demo_generator.py --out DIR --continue-from resources/models/demo-generator \
        --unet-cycles 8 --lr-restart-cycle 4 --checkpoint-every 250      # cycles 5-8 at the base rate again
    python resources/build/build_demo_generator.py --out DIR --continue-from DIR --unet-cycles 12 \
        --lr-restart-cycle 4 --lr-restart-every 4 --checkpoint-every 250 # ... and 9-12 again (begun cycles keep theirs)
        # build 6: build 5 with these two steps (cycles 5-8, then 9-12)
    python resources/build/build_demo_generator.py --refit-adapter       # only the adapter, after a new embedder
    python resources/build/build_demo_generator.py --refit-vae-decoder 1500   # only the VAE's decoder, further
    python resources/build/build_demo_generator.py --out DIR --latent-size 32 --unet-cycles 8 --lr-restart-cycle 4 \
        --lr-restart-every 4 --checkpoint-every 250                      # a 32x32-latent VAE that keeps small objects,
        # from scratch (--device cuda: minutes; resume with --continue-from DIR and the same cycle and restart flags:
        # the architecture comes from DIR); then cycles 9-12 with offset noise:
    python resources/build/build_demo_generator.py --out DIR --continue-from DIR --unet-cycles 12 --lr-restart-cycle 4 \
        --lr-restart-every 4 --checkpoint-every 250 --offset-noise 0.1 --offset-noise-cycle 8
        # build 7, shipped (docs/benchmarks.md; --shipped): the first step, then the second with --unet-cycles 10
        # (it ran as one build with --unet-cycles 16 --offset-noise 0.1 --offset-noise-cycle 8, stopped after cycle
        # 10 and was written with --finish, which gives the same weights)
    python resources/build/build_demo_generator.py --finish CHECKPOINT --out DIR   # a checkpoint stopped at the end
        # of UNet cycle N, written as the finished N-cycle build (no optimizer state)
    python resources/build/build_demo_generator.py --out DIR --init-from <build 4> --checkpoint-every 250
        # build 5 (then --continue-from DIR --unet-cycles 4): build 4's UNet and VAE, its decoder fine-tuned, a conv
        # spatial head; DIR/generator.json records the recipe

The recipe (``engine.recon.demo_training.DemoTrainConfig``) and architecture
(``engine.recon.demo_generator.demo_architecture(--latent-size)``) are recorded in the folder's ``generator.json``,
with ``train_state`` (cycles and steps done). The inputs are the demo stimuli
(``render_stimuli(n_images, seed=stimulus_seed)``) and the shipped demo image embedder, nothing else. ``--vae-from``
reuses the VAE of an earlier build (build 3 reuses build 2's: it does not depend on the embedder).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from engine.cli.output import run_job  # noqa: E402
from engine.cli.main import EXIT_CANCELLED  # noqa: E402
from engine.errors import Cancelled  # noqa: E402
from engine.recon.demo_checkpoint import checkpoint_architecture, finish_checkpoint  # noqa: E402
from engine.recon.demo_generator import FOLDER_NAME, ARCHITECTURE_BY_LATENT_SIZE, demo_architecture  # noqa: E402
from engine.recon.demo_refit import refit_demo_adapter, refit_vae_decoder  # noqa: E402
from engine.recon.demo_training import DemoTrainConfig, train_demo_generator  # noqa: E402
from engine.resources import resource_path  # noqa: E402


def build_architecture(latent_size: int | None, continue_from: Path | None):
    """The architecture to build: ``--latent-size``'s, else the continued folder's, else the 16 × 16 one."""
    if latent_size is None and continue_from is not None:
        return checkpoint_architecture(continue_from)  # a resumed build keeps its architecture unasked
    return demo_architecture(latent_size or 16)


# The shipped build's recipe (build 7, ``resources/models/demo-generator/generator.json`` records it): what
# ``--shipped`` sets, each flag still overridable. It ran as one build with --unet-cycles 16, stopped after cycle 10
# and written with --finish, which gives the same weights as these 10 cycles.
SHIPPED_ARGS = {"latent_size": 32, "unet_cycles": 10, "lr_restart_cycle": 4, "lr_restart_every": 4,
                "offset_noise": 0.1, "offset_noise_cycle": 8}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shipped", action="store_true",
                    help="the shipped build's recipe: " + " ".join(f"--{k.replace('_', '-')} {v}"
                                                                    for k, v in SHIPPED_ARGS.items()))
    ap.add_argument("--out", type=Path, default=resource_path("models", FOLDER_NAME),
                    help="output folder (default: the shipped one)")
    ap.add_argument("--finish", type=Path, default=None, metavar="CHECKPOINT",
                    help="write this checkpoint, stopped at the end of a UNet cycle, to OUT as the finished build of "
                         "that many cycles (OUT must not exist)")
    ap.add_argument("--refit-adapter", action="store_true",
                    help="retrain only the conditioning adapter of the folder, in place")
    ap.add_argument("--refit-vae-decoder", type=int, default=0, metavar="STEPS",
                    help="fine-tune only the VAE's decoder of the folder further, in place, for STEPS steps (the "
                         "latents, hence the UNet and adapter, stay valid)")
    ap.add_argument("--continue-from", type=Path, default=None, metavar="FOLDER",
                    help="resume a checkpoint, or add UNet cycles to a finished build (same recipe)")
    ap.add_argument("--checkpoint-every", type=int, default=0, metavar="N",
                    help="write OUT (EMA weights + optimizer state) every N UNet steps, and after the VAE stage and the "
                         "spatial head's pre-training, for --continue-from")
    ap.add_argument("--vae-from", type=Path, default=None, metavar="FOLDER",
                    help="reuse the VAE of this demo-generator folder instead of training one")
    ap.add_argument("--init-from", type=Path, default=None, metavar="FOLDER",
                    help="start the UNet (and reuse the VAE) of this demo-generator folder (build 3: from build 2)")
    ap.add_argument("--snapshot-every", type=int, default=0,
                    help="also write the EMA weights every N UNet steps to OUT.stepN")
    ap.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    ap.add_argument("--unet-cycles", type=int, default=None, metavar="N",
                    help="UNet cycles (default: the recipe's); more than a folder has, with --continue-from, adds them")
    ap.add_argument("--latent-size", type=int, default=None, choices=sorted(ARCHITECTURE_BY_LATENT_SIZE),
                    help="the VAE's latent size (default 16, builds 2-6, or with --continue-from the folder's; 32 keeps "
                         "small objects, with a UNet level more: 1.6x the cost per step)")
    ap.add_argument("--lr-restart-cycle", type=int, default=0, metavar="C",
                    help="UNet cycles from C on (1-based: C + 1 on) start the learning-rate decay again at the base "
                         "rate, e.g. --continue-from a 4-cycle build --unet-cycles 8 --lr-restart-cycle 4")
    ap.add_argument("--lr-restart-every", type=int, default=0, metavar="P",
                    help="with --lr-restart-cycle: start the decay again every P cycles after it (0: once)")
    ap.add_argument("--offset-noise", type=float, default=0.0, metavar="S",
                    help="offset noise of SD S from UNet cycle --offset-noise-cycle on (0: none), so that samples "
                         "from pure noise get the global colour from the condition")
    ap.add_argument("--offset-noise-cycle", type=int, default=0, metavar="C",
                    help="with --offset-noise: UNet cycles from C on (1-based: C + 1 on) train with it")
    args = ap.parse_args(argv)
    if args.shipped:  # parsed again with the recipe as the defaults, so that a flag given beside it still wins
        ap.set_defaults(**SHIPPED_ARGS)
        args = ap.parse_args(argv)
    if args.lr_restart_every and not args.lr_restart_cycle:
        ap.error("--lr-restart-every needs --lr-restart-cycle (the first restart; 0 is none)")
    if args.latent_size not in (None, 16) and (args.vae_from or args.init_from):
        ap.error(f"--latent-size {args.latent_size} trains its own VAE and UNet: --vae-from and --init-from reuse a "
                 "16x16-latent build's")
    return args


def build_recipe(args: argparse.Namespace) -> DemoTrainConfig:
    recipe = dataclasses.replace(DemoTrainConfig(), lr_restart_cycle=args.lr_restart_cycle,
                                 lr_restart_every=args.lr_restart_every, offset_noise=args.offset_noise,
                                 offset_noise_cycle=args.offset_noise_cycle)
    if args.unet_cycles is not None:
        recipe = dataclasses.replace(recipe, unet_cycles=args.unet_cycles)
    return recipe


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    recipe = build_recipe(args)
    if args.finish is not None:
        print(f"finished build written to {finish_checkpoint(args.finish, args.out)}")
    elif args.refit_adapter:
        run_job(lambda cancel: refit_demo_adapter(args.out, DemoTrainConfig(), cancel=cancel))
    elif args.refit_vae_decoder:
        run_job(lambda cancel: refit_vae_decoder(args.out, DemoTrainConfig(), steps=args.refit_vae_decoder,
                                                 cancel=cancel))
    else:
        cfg = build_architecture(args.latent_size, args.continue_from)
        try:
            run_job(lambda cancel: train_demo_generator(args.out, recipe, cfg, cancel=cancel,
                                                        snapshot_every=args.snapshot_every,
                                                        continue_from=args.continue_from,
                                                        checkpoint_every=args.checkpoint_every,
                                                        vae_from=args.vae_from, init_from=args.init_from,
                                                        device=args.device))
        except Cancelled:
            kept = f"its last checkpoint is {args.out} (--continue-from it)" if args.checkpoint_every else \
                "nothing was kept (no --checkpoint-every)"
            print(f"build cancelled: {kept}", file=sys.stderr)
            return EXIT_CANCELLED
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
