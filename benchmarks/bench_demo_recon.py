"""The demo end to end through the CLI: train → finetune → reconstruct (guidance 3 and 0) → evaluate, timed.

    neurolens demo create S
    neurolens train --data S --preset demo-ridge --out R
    neurolens finetune R --generator demo
    neurolens reconstruct R --split test --samples 2 --guidance 3 --steps 25 --out R/recon-g3   (and --guidance 0)
    neurolens reconstruct R ... --guidance 3 --img2img-strength 0.8 --out R/recon-g3-blurry0.8  (the window's default)
    neurolens evaluate R/recon-g3 R/recon-g0 R/recon-g3-blurry0.8

Records the wall time of each stage, the evaluation table of both folders (every metric ``evaluate`` computes on the
demo, protocols included) and the 2-way identification with guidance 3 against guidance 0 (the reference run in the
same process: the same decoder, seeds and images without the condition), and starting from the blurry image
(MindEye's low-level route, the Reconstruction panel's default) against starting from noise. Writes the comparison grid
``docs/images/demo-reconstructions.png`` (per test image: ground truth, blurry, the guided samples, one unguided
sample) and ``benchmarks/results/bench_demo_recon.json``.

    python benchmarks/bench_demo_recon.py [--work DIR] [--samples 2] [--steps 25] [--threads 1] [--grid-only DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import report  # noqa: E402 - needs the path above

GRID_PATH = ROOT / "docs" / "images" / "demo-reconstructions.png"
N_GRID = 8


def _cli(argv: list[str]) -> float:
    """Run one ``neurolens`` command in this process; return its wall time (raises on a non-zero exit)."""
    from engine.cli.main import main

    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        rc = main(argv)
    if rc != 0:
        raise SystemExit(f"neurolens {' '.join(argv)} exited with {rc}")
    return round(time.perf_counter() - t0, 1)


def two_way(table: dict, folder: Path) -> dict:
    """``{row label: {2-way column: value}}`` for the rows of ``folder`` in an evaluation table."""
    out = {}
    for row in table["rows"]:
        if Path(row["folder"]).resolve() == folder.resolve():
            cols = {k: v for k, v in row.items() if k.startswith("2-way")}
            if cols:
                out[row["images"]] = cols
    return out


def comparison_grid(guided: Path, unguided: Path | None, out_path: Path, n: int = N_GRID) -> Path:
    """PNG: one column per test image (``n`` spread over the split), rows ground truth, blurry, the guided samples
    and the first unguided sample; labelled."""
    from PIL import Image, ImageDraw

    from engine.atomic import atomic_write_bytes
    from engine.recon.index import read_index

    idx = read_index(guided)
    pick = np.linspace(0, len(idx.items) - 1, n).round().astype(int)
    items = [idx.items[i] for i in pick]
    uidx = {it.image_index: it for it in read_index(unguided).items} if unguided else {}
    rows = [("ground truth", lambda it: guided / it.ground_truth)]
    if items[0].blurry:
        rows.append(("blurry (brain)", lambda it: guided / it.blurry))
    for k in range(len(items[0].samples)):
        rows.append((f"sample {k + 1}, guidance {idx.settings['guidance']:g}",
                     lambda it, k=k: guided / it.samples[k]))
    if uidx:
        rows.append(("guidance 0", lambda it: unguided / uidx[it.image_index].samples[0]))
    cell, pad, label_w, head = 128, 4, 190, 22
    w = label_w + n * (cell + pad)
    h = head + len(rows) * (cell + pad)
    canvas = Image.new("RGB", (w, h), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    for j, it in enumerate(items):
        draw.text((label_w + j * (cell + pad) + 4, 4), f"image {it.image_index} ({it.category})", fill=(0, 0, 0))
    for r, (name, path_of) in enumerate(rows):
        y = head + r * (cell + pad)
        draw.text((6, y + cell // 2 - 6), name, fill=(0, 0, 0))
        for j, it in enumerate(items):
            img = Image.open(path_of(it)).convert("RGB").resize((cell, cell), Image.NEAREST)
            canvas.paste(img, (label_w + j * (cell + pad), y))
    buf = io.BytesIO()
    canvas.save(buf, format="PNG", optimize=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_path, buf.getvalue())
    return out_path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", type=Path, default=None, help="working folder (default: a temporary one)")
    p.add_argument("--samples", type=int, default=2)
    p.add_argument("--steps", type=int, default=25)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--img2img", type=float, default=0.8, help="strength of the from-blurry run (0: skip it)")
    p.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: shared 2-core machine)")
    p.add_argument("--quick", action="store_true",
                   help="smoke test (5 fine-tuning steps, 3 denoising steps, 1 sample), written into --work only")
    p.add_argument("--grid-only", type=Path, default=None, metavar="RUN_DIR",
                   help="only redraw the grid from RUN_DIR/recon-g3 and RUN_DIR/recon-g0")
    args = p.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    if args.grid_only:
        print(comparison_grid(args.grid_only / "recon-g3", args.grid_only / "recon-g0", GRID_PATH))
        return 0
    work = args.work or Path(tempfile.mkdtemp(prefix="bench-demo-recon-"))
    run = work / "run"
    g3, g0 = run / "recon-g3", run / "recon-g0"
    gb = run / f"recon-g3-blurry{args.img2img:g}"
    common = ["--split", "test", "--samples", str(args.samples), "--steps", str(args.steps), "--seed", "0"]
    quick = ["--max-steps", "5"] if args.quick else []
    if args.quick:
        common = ["--split", "test", "--samples", "1", "--steps", "3", "--seed", "0"]
    subject = work / "demo-sub01.nlsubj"
    times = {"demo_create_s": _cli(["demo", "create", str(subject), "--overwrite"])}
    times["train_s"] = _cli(["train", "--data", str(subject), "--preset", "demo-ridge", "--out", str(run)])
    times["finetune_s"] = _cli(["finetune", str(run), "--generator", "demo", *quick])
    times["reconstruct_guided_s"] = _cli(["reconstruct", str(run), *common, "--guidance", str(args.guidance),
                                          "--out", str(g3)])
    times["reconstruct_unguided_s"] = _cli(["reconstruct", str(run), *common, "--guidance", "0", "--out", str(g0)])
    folders = [g3, g0]
    if args.img2img > 0:
        times["reconstruct_from_blurry_s"] = _cli(["reconstruct", str(run), *common, "--guidance", str(args.guidance),
                                                   "--img2img-strength", str(args.img2img), "--out", str(gb)])
        folders.append(gb)

    from engine.metrics.evaluate import evaluate_folders
    from engine.metrics.table import format_table, to_json
    from engine.recon.generators import load_generator
    from engine.recon.index import read_index

    t0 = time.perf_counter()
    result = evaluate_folders(folders)
    times["evaluate_s"] = round(time.perf_counter() - t0, 1)
    table = to_json(result)
    n_images = len(read_index(g3).items)
    gen_info = load_generator("demo", device="cpu").info
    grid = comparison_grid(g3, g0, work / GRID_PATH.name if args.quick else GRID_PATH)
    out = {
        "benchmark": "bench_demo_recon",
        "machine": {"cpu_count": os.cpu_count(), "load_average_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(), "torch": torch.__version__, "threads": args.threads},
        "generator": {"built": gen_info.get("built"), "recipe": gen_info.get("recipe")},
        "settings": {"samples": args.samples, "steps": args.steps, "guidance": args.guidance, "sampler": "ddim",
                     "img2img_strength": args.img2img or None,
                     "test_images": n_images, "preset": "demo-ridge", "finetune": "defaults (adapter, frozen UNet)"},
        "times": times,
        "two_way": {f"guidance {args.guidance:g}": two_way(table, g3), "guidance 0": two_way(table, g0),
                    **({f"guidance {args.guidance:g}, from blurry {args.img2img:g}": two_way(table, gb)}
                       if args.img2img > 0 else {})},
        "table": table,
        "table_text": format_table(result),
        "grid": str(grid),
        "work": str(work),
    }
    report(out, "bench_demo_recon", dest=work / "bench_demo_recon.json" if args.quick else None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
