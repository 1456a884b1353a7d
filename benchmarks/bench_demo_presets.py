"""Every ``demo-*`` preset trained on the demo subject: wall time, test 2-way, top-1 retrieval, MoE expert × ROI table.

Each preset runs through the real engine (``engine.train.trainer.train_job``, the path ``neurolens train --preset``
takes) on the cached demo subject 1 (``ensure_demo_subject``, rebuilt when the simulation changed). Metrics are the
trainer's final test metrics in the demo embedding space, on outputs averaged over each test image's 3 repeats:
``two_way`` (exhaustive 2-way identification, Pearson, chance 0.5; ``engine.metrics.identification``) and
``top1_retrieval`` (chance 1/100). For ``demo-moe`` the level-0 expert × ROI table (``routing.json``, from
``engine.models.routing.expert_roi_table``) is reported with a specialisation score: for each ROI family (early visual
V1–V3, category LO + VOT) the expert that takes most of it, and the difference between the two families' shares.

Goals (issue 4): ``two_way`` >= 0.95 for demo-ridge and demo-mlp, each preset about 2 minutes on 2 CPU cores.
Prints one JSON object and writes it to ``benchmarks/results/bench_demo_presets.json``.

    nice python benchmarks/bench_demo_presets.py                       # all four presets
    nice python benchmarks/bench_demo_presets.py --ablations           # + the variants in ABLATIONS
    python benchmarks/bench_demo_presets.py --presets demo-ridge demo-moe --threads 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import report as write_report  # noqa: E402 - needs the path above

PRESETS = ("demo-ridge", "demo-mlp", "demo-moe", "demo-mbm")
EARLY, CATEGORY = ("V1", "V2", "V3"), ("LO", "VOT")


def routing_summary(run_dir: Path) -> dict | None:
    """Level-0 expert × ROI table of a MoE run and how differently early-visual and category ROIs are routed."""
    path = run_dir / "routing.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    rois = data["rois"]
    table = np.asarray(data["levels"][0]["table"], np.float64)  # (experts, rois), columns sum to 1
    early = table[:, [rois.index(r) for r in EARLY if r in rois]].mean(axis=1)
    category = table[:, [rois.index(r) for r in CATEGORY if r in rois]].mean(axis=1)
    return {
        "rois": rois,
        "level0_table": np.round(table, 3).tolist(),
        "early_share_per_expert": np.round(early, 3).tolist(),
        "category_share_per_expert": np.round(category, 3).tolist(),
        "early_expert": int(early.argmax()),
        "category_expert": int(category.argmax()),
        # Largest difference between the two families' shares of one expert (0 = flat table, 1 = fully separated).
        "separation": round(float(np.abs(early - category).max()), 3),
        "levels": [{"n_experts": lv["n_experts"], "table": np.round(np.asarray(lv["table"]), 3).tolist()}
                   for lv in data["levels"]],
    }


# Variants that show why the presets are set up as they are: demo-moe without the ROI routing prior and without
# ROI-grouped units; demo-mbm without its masked-brain-modelling pre-training.
ABLATIONS = {
    "demo-moe/no-prior": ("demo-moe", {"model.params.roi_group_prior": 0.0}),
    "demo-moe/dense-input": ("demo-moe", {"model.params.roi_groups": [], "model.params.roi_group_prior": 0.0}),
    "demo-mbm/no-pretrain": ("demo-mbm", {"pretrain.epochs": 0}),
}


def run_preset(name: str, subject, out_root: Path, threads: int, overrides: dict | None = None,
               label: str | None = None) -> dict:
    from engine.events import drive
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    cfg = get_preset(name, subject).with_overrides(overrides or {})
    if threads:
        cfg = cfg.with_overrides({"num_threads": threads})
    label = label or name
    run_dir = out_root / label.replace("/", "_")
    t0 = time.perf_counter()
    c0 = time.process_time()
    result = drive(train_job(cfg, subject, run_dir))
    wall = time.perf_counter() - t0
    row = {"preset": label, "wall_s": round(wall, 1), "cpu_s": round(time.process_time() - c0, 1),
           "steps": result.step, "two_way": round(result.metrics.get("two_way", float("nan")), 4),
           "top1_retrieval": round(result.metrics.get("top1_retrieval", float("nan")), 4),
           "two_way_centered": round(result.metrics.get("two_way_centered", float("nan")), 4),
           "cosine": round(result.metrics.get("cosine", float("nan")), 4)}
    routing = routing_summary(run_dir)
    if routing is not None:
        row["routing"] = routing
    if overrides:
        row["overrides"] = overrides
    return row


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    ap.add_argument("--threads", type=int, default=0,
                    help="torch CPU threads; 0 (default): the preset's own setting (1 for the demo presets)")
    ap.add_argument("--ablations", action="store_true", help="also run demo-moe without its ROI routing prior and "
                    "with a dense input layer, and demo-mbm without pre-training")
    ap.add_argument("--keep", default=None, help="keep the run folders here instead of a temporary folder")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "bench_demo_presets.json"))
    args = ap.parse_args(argv)

    from engine.data import open_subject
    from engine.data.demo import ensure_demo_subject
    from engine.data.demo.builder import MODEL_VERSION

    t0 = time.perf_counter()
    path = ensure_demo_subject(1)
    subject = open_subject(path)
    prep_s = time.perf_counter() - t0
    out_root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_demo_presets_"))
    if args.keep:
        for name in [*args.presets, *ABLATIONS]:
            shutil.rmtree(out_root / name.replace("/", "_"), ignore_errors=True)
    rows = []
    try:
        for name in args.presets:
            rows.append(run_preset(name, subject, out_root, args.threads))
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
        if args.ablations:
            for label, (name, overrides) in ABLATIONS.items():
                rows.append(run_preset(name, subject, out_root, args.threads, overrides, label))
                print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    finally:
        if not args.keep:
            shutil.rmtree(out_root, ignore_errors=True)
    goal = {r["preset"]: r["two_way"] >= 0.95 for r in rows if r["preset"] in ("demo-ridge", "demo-mlp")}
    report = {
        "benchmark": "bench_demo_presets",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load_avg_1min": round(os.getloadavg()[0], 2),
                    "python": platform.python_version(),
                    "torch_threads": args.threads or "preset (1 for demo presets)"},
        "subject": {"name": subject.name, "simulation_version": MODEL_VERSION, "n_voxels": int(subject.n_voxels),
                    "n_train_trials": int(len(subject.split_indices("train"))), "open_or_create_s": round(prep_s, 1)},
        "metric_note": "test set, outputs averaged over 3 repeats; two_way = exhaustive 2-way identification "
                       "(Pearson, chance 0.5) in the demo embedding space; top1 among 100 test images",
        "presets": rows,
        "goal_two_way_0.95": goal,
    }
    write_report(report, None, dest=Path(args.out))
    return report


if __name__ == "__main__":
    main()
