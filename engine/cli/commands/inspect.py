"""``neurolens inspect PATH``: summarise any subject the engine can read."""

from __future__ import annotations

import json

NAME = "inspect"
HELP = "print a summary of a subject (any supported format)"
ORDER = 10


def add_arguments(p) -> None:
    p.add_argument("path", help="subject folder or dataset file/folder, or demo / demo:N for the built-in demo subject")
    p.add_argument("--format", default=None, help="override format detection (native, nsd, god, bold5000, nifti, arrays)")
    p.add_argument("--mapping", default=None, help="mapping file (YAML/JSON) for --format arrays")
    p.add_argument("--subject", type=int, default=None, help="subject number when the source holds several")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="extra reader option (e.g. test_set=test for NSD); repeatable")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")


def run(args) -> int:
    from engine.cli.commands.import_ import _parse_options
    from engine.data import open_subject

    opts = _parse_options(getattr(args, "option", []) or [])
    if args.mapping:
        opts["mapping"] = args.mapping
    if getattr(args, "subject", None) is not None:
        opts["subject"] = args.subject
    subject = open_subject(args.path, format=args.format, **opts)
    s = subject.summary()
    if args.json:
        print(json.dumps(s, indent=2))
        return 0
    print(f"{s['name']}  ({s['format']}{', SIMULATED demo data' if s['simulation'] else ''})")
    print(f"  trials × voxels : {s['n_trials']} × {s['n_voxels']} ({s['betas_dtype']})")
    print(f"  images          : {s['n_images']} of {'×'.join(map(str, s['image_shape']))}")
    print(f"  splits          : train {s['splits']['train']} trials, test {s['splits']['test']} trials "
          f"on {s['n_test_images']} images (up to {s['repeats']} repeats)")
    print(f"  sessions        : {s['n_sessions']}")
    print("  ROIs            : " + ", ".join(f"{k} ({v})" for k, v in s["rois"].items()))
    if s["n_categories"]:
        print(f"  categories      : {s['n_categories']}" + ("  (with captions)" if s["has_captions"] else ""))
    if s["ground_truth"]:
        print("  ground truth    : " + ", ".join(s["ground_truth"]))
    pre = s["preprocessing"]
    print("  preprocessing   : " + ("; ".join(_step(p) for p in pre) if pre else "none recorded"))
    return 0


def _step(p) -> str:
    if isinstance(p, dict):
        name = p.get("step", "?")
        rest = ", ".join(f"{k}={v}" for k, v in p.items() if k != "step")
        return f"{name}({rest})"
    return str(p)
