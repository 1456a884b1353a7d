"""``neurolens import SRC --out DIR``: convert any supported dataset to a native subject, with recorded preprocessing."""

from __future__ import annotations

import json

NAME = "import"
HELP = "convert a dataset (NSD, GOD, BOLD5000, NIfTI, plain arrays) to a native subject folder"
DESCRIPTION = (
    "Read SRC (format auto-detected, or --format), apply the chosen preprocessing (recorded in the subject's "
    "provenance and shown by 'neurolens inspect'), and write a native subject folder atomically: an interrupted "
    "import leaves nothing behind that opens as a subject."
)
ORDER = 15


def add_arguments(p) -> None:
    p.add_argument("src", help="dataset file or folder (or a mapping file naming its data file)")
    p.add_argument("--out", required=True, help="native subject folder to write, e.g. sub01.nlsubj")
    p.add_argument("--format", default=None, help="override detection: nsd, god, bold5000, nifti, arrays, native")
    p.add_argument("--mapping", default=None, help="mapping file (YAML/JSON) for plain arrays")
    p.add_argument("--subject", type=int, default=None, help="subject number when the source holds several")
    p.add_argument("--test-set", default=None, choices=["new_test", "test"], help="NSD test grouping (default new_test)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra reader option (e.g. test=averaged for GOD, space=MNI152 for NIfTI); repeatable")
    p.add_argument("--zscore", default="voxel", choices=["voxel", "global", "session", "none"],
                   help="z-score with training-trial statistics (default: voxel)")
    p.add_argument("--zscore-include-test", action="store_true",
                   help="also use test trials for the z-score statistics (off by default: avoids leakage)")
    p.add_argument("--rois", nargs="+", default=None, metavar="ROI", help="keep only the voxels of these ROIs")
    p.add_argument("--average-test-repeats", action="store_true",
                   help="average the test repeats of each image as voxels (default: keep single trials)")
    p.add_argument("--min-noise-ceiling", type=float, default=None, help="keep voxels with noise ceiling >= X")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output folder")
    p.add_argument("--json-events", action="store_true", help="print one JSON event per line")


def _parse_options(items: list[str]) -> dict:
    from engine.errors import ConfigError

    out = {}
    for it in items:
        if "=" not in it:
            raise ConfigError(f"--option {it!r}: expected KEY=VALUE")
        k, v = it.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except json.JSONDecodeError:
            out[k.strip()] = v
    return out


def run(args) -> int:
    from engine.cli.output import run_job
    from engine.data.preprocess import PreprocessConfig
    from engine.data.readers.importer import import_subject

    options = _parse_options(args.option)
    if args.mapping:
        options["mapping"] = args.mapping
    if args.subject is not None:
        options["subject"] = args.subject
    if args.test_set:
        options["test_set"] = args.test_set
    cfg = PreprocessConfig(zscore=args.zscore, include_test=args.zscore_include_test, rois=list(args.rois or []),
                           min_noise_ceiling=args.min_noise_ceiling, average_test_repeats=args.average_test_repeats)
    path = run_job(lambda cancel: import_subject(args.src, args.out, format=args.format, options=options,
                                                 preprocess=cfg, overwrite=args.overwrite, cancel=cancel),
                   json_events=args.json_events)
    if not args.json_events:
        print(path)
    return 0
