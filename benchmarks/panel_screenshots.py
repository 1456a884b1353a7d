"""Screenshot every panel of the app on one run, or compare two such sets pixel by pixel.

A refactor that must not change what a user sees is checked this way (issue 16): take the set before, take it after
on the same run folder and settings file, then ``--compare BEFORE AFTER``.

    xvfb-run -a -s "-screen 0 1280x1024x24 +extension GLX" \\
        python benchmarks/panel_screenshots.py --run RUN_DIR --out shots-before
    python benchmarks/panel_screenshots.py --compare shots-before shots-after

Prints JSON: per panel the number of pixels that differ (0 = identical).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

PANELS = ("data", "brain", "trials", "log", "training", "reconstruction", "experts")


def take(run: Path, out: Path, subject: Path | None, size: str, panels=PANELS) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory(prefix="neurolens-shots-") as tmp:
        settings = Path(tmp) / "settings.ini"  # a fresh settings file: nothing remembered changes the picture
        for panel in panels:
            cmd = [sys.executable, "-m", "neurolens_app.main", "--run", str(run), "--panel", panel,
                   "--screenshot", str(out / f"{panel}.png"), "--size", size, "--settings", str(settings),
                   "--theme", "light"]
            if subject is not None:
                cmd += ["--subject", str(subject)]
            proc = subprocess.run(cmd, capture_output=True, text=True)
            results[panel] = {"returncode": proc.returncode,
                              "error": proc.stderr.strip().splitlines()[-1] if proc.returncode else ""}
    return results


def compare(before: Path, after: Path, panels=PANELS) -> dict:
    from PIL import Image
    import numpy as np

    results = {}
    for panel in panels:
        a, b = before / f"{panel}.png", after / f"{panel}.png"
        if not (a.is_file() and b.is_file()):
            results[panel] = {"missing": [str(p) for p in (a, b) if not p.is_file()]}
            continue
        x, y = np.asarray(Image.open(a).convert("RGB")), np.asarray(Image.open(b).convert("RGB"))
        if x.shape != y.shape:
            results[panel] = {"shape_before": list(x.shape), "shape_after": list(y.shape)}
            continue
        results[panel] = {"pixels_differing": int((x != y).any(axis=-1).sum())}
    return results


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, help="run folder to open (trained, fine-tuned, reconstructed)")
    p.add_argument("--subject", type=Path, help="the run's subject, if its provenance path has moved")
    p.add_argument("--out", type=Path, help="folder for the PNGs")
    p.add_argument("--size", default="1500x950")
    p.add_argument("--panels", nargs="+", choices=PANELS, default=list(PANELS), help="only these panels")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("BEFORE", "AFTER"))
    args = p.parse_args(argv)
    if args.compare:
        result = compare(*args.compare, panels=args.panels)
        ok = all(r.get("pixels_differing") == 0 for r in result.values())
    else:
        if args.run is None or args.out is None:
            p.error("--run and --out are needed to take screenshots")
        result = take(args.run, args.out, args.subject, args.size, args.panels)
        ok = all(r["returncode"] == 0 for r in result.values())
    print(json.dumps({"panels": result, "ok": ok}, indent=1))
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
