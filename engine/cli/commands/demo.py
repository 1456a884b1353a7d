"""``neurolens demo create DIR``: write the built-in demo subject (simulated data with known ground truth)."""

from __future__ import annotations

NAME = "demo"
HELP = "create the built-in demo subject (SIMULATED fMRI with known ground truth)"
DESCRIPTION = (
    "The demo subject is a simulation: procedurally drawn object images, several thousand voxels on both "
    "hemispheres of fsaverage5 in occipital ROIs (V1, V2, V3, hV4, LO, VOT) with retinotopic receptive fields and "
    "category tuning, and realistic noise. Its generating parameters are saved as ground truth. "
    "See docs/demo-subject.md."
)
ORDER = 5


def add_arguments(p) -> None:
    sub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    c = sub.add_parser("create", help="write a demo subject folder in the native format",
                       description="Write demo subject N (same images for every N, its own voxels and noise) to DIR, "
                                   "deterministically for --seed.")
    c.add_argument("dir", help="subject folder to write, e.g. demo-sub01.nlsubj")
    c.add_argument("--seed", type=int, default=0, help="random seed of the stimuli and the simulation (default 0)")
    c.add_argument("--subject", type=int, default=1, help="demo subject number, >= 1 (default 1)")
    c.add_argument("--stimuli", metavar="SRC", default=None,
                   help="simulate the subject seeing your own images: a folder of PNGs, an .npz with 'images' "
                        "(+ 'labels'), or any subject source (its images and labels)")
    c.add_argument("--test-images", type=int, default=None, metavar="K",
                   help="with --stimuli: images held out as the test set, shown 3 times (default 10%%, 10..100)")
    c.add_argument("--snr-scale", type=float, default=None, metavar="F",
                   help="multiply every voxel's NSD-like single-trial signal-to-noise ratio (default 3.7: the "
                        "information of NSD's 27,000 training trials in the demo's 2,000; 1: NSD's single-trial "
                        "level; lower: a weaker signal; up to 1000: nearly noise-free)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing folder")
    c.add_argument("--json-events", action="store_true", help="print one JSON event per line")


def run(args) -> int:
    from engine.cli.output import run_job
    from engine.data.demo import create_demo_job
    from engine.data.demo.simulate import DemoConfig
    from engine.errors import ConfigError

    try:
        config = DemoConfig() if args.snr_scale is None else DemoConfig(snr_scale=args.snr_scale)
    except ValueError as exc:
        raise ConfigError(f"--snr-scale: {exc}") from None

    path = run_job(lambda cancel: create_demo_job(args.dir, seed=args.seed, subject=args.subject,
                                                  overwrite=args.overwrite, cancel=cancel,
                                                  stimuli=args.stimuli, n_test_images=args.test_images,
                                                  config=config),
                   json_events=args.json_events)
    if not args.json_events:
        print(path)
    return 0
