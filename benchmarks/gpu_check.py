"""The Python side of ``benchmarks/gpu_check.sh``: the timed demo reconstruction, test trials, and the summary.

    python benchmarks/gpu_check.py time-reconstruct RUN_DIR OUT_DIR [--device cuda] [--samples 4] [--steps 25]
    python benchmarks/gpu_check.py test-trials SUBJECT N
    python benchmarks/gpu_check.py summary WORK_DIR --device cuda --elapsed SECONDS --out OUT_DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

RECON_GOAL_S = 5.0


def time_reconstruct(run_dir: str, out_dir: str, device: str, samples: int, steps: int) -> dict:
    """``reconstruct_job`` on the demo test set in this process: the job's own wall time (model load included,
    interpreter start and imports excluded), written to ``reconstruct_timing.json`` in the results folder."""
    from engine.events import drive
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig

    t0 = time.perf_counter()
    config = ReconstructConfig(samples=samples, steps=steps, device=device, preview_every=0)
    result = drive(reconstruct_job(run_dir, config, out_dir=out_dir))
    elapsed = time.perf_counter() - t0
    timing = {"run": run_dir, "device": device, "images": result.n_images, "samples": result.n_samples,
              "steps": steps, "seconds": round(elapsed, 2), "goal_s": RECON_GOAL_S if device != "cpu" else None}
    _write_result("reconstruct_timing", timing)
    print(json.dumps(timing))
    return timing


def test_trials(subject: str, n: int) -> str:
    """The first ``n`` test-split trial rows of a subject, comma-separated (for ``reconstruct --trials``)."""
    import numpy as np

    from engine.data import open_subject

    split = np.asarray(open_subject(subject).trials.split)
    return ",".join(str(int(i)) for i in np.flatnonzero(split == 1)[:n])


def _write_result(name: str, data: dict) -> None:
    from benchmarks.results_io import RESULTS

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(data, indent=2) + "\n")


def _read_json(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except OSError:
        return None
    start = text.find("{")
    if start < 0:
        return None
    try:
        return json.JSONDecoder().raw_decode(text[start:])[0]
    except json.JSONDecodeError:
        return None


def figures(work: Path) -> dict:
    """The headline figures of the run, from the step logs and the benchmarks' JSON."""
    res = work / "results"
    out: dict = {}
    timing = _read_json(res / "reconstruct_timing.json")
    if timing:
        out["reconstruct_demo_s"] = timing["seconds"]
        out["reconstruct_demo"] = f"{timing['images']} images x {timing['samples'] // max(1, timing['images'])} " \
                                  f"samples, {timing['steps']} steps"
    trainer = _read_json(res / "bench_trainer.json")
    if trainer and isinstance(trainer.get("gpu_backbone"), dict):
        g = trainer["gpu_backbone"]
        out["backbone_step"] = {k: g.get(k) for k in ("status", "step_ms", "memory_bound_ms",
                                                      "fraction_of_memory_bound", "fraction_of_peak",
                                                      "measured_copy_TB_s", "hbm_TB_s")}
    for name in ("bench_sampling_eager", "bench_sampling"):
        sampling = _read_json(res / f"{name}.json")
        if not sampling:
            continue
        gpu = sampling.get("gpu", {})
        rows = {}
        for r in gpu.get("results", []):
            key = f"{r['size']}x{r['batch']}"
            rows[key] = {"diffusers_img_per_s": r["diffusers_img_per_s"]}
            for variant, v in r.items():
                if isinstance(v, dict):
                    rows[key][variant] = {k: v[k] for k in ("img_per_s", "fraction_of_peak", "speedup_vs_diffusers",
                                                            "mean_abs_pixel_diff_vs_diffusers")}
        out[name] = rows or gpu.get("status")
        out[f"{name}_cpu_batching"] = sampling.get("cpu_batching")
    evaluation = _read_json(work / "logs" / "evaluate.log")
    if evaluation:
        keep = ("images", "PixCorr", "SSIM", "2-way demo", "12-way labels demo")
        out["evaluate"] = [{k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items() if k in keep}
                           for row in evaluation.get("rows", [])]
    return out


def summary(work: str, device: str, elapsed: float, out_dir: str) -> int:
    """Print the one summary (steps with status and seconds, then the figures); write summary.txt/.json."""
    work_path = Path(work)
    steps = []
    for line in (work_path / "steps.tsv").read_text(encoding="utf-8").splitlines():
        name, status, secs = line.split("\t")
        steps.append({"step": name, "status": status, "seconds": float(secs)})
    import torch

    machine = {"device": device, "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
               "torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
               "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    result = {"gpu_check": machine, "elapsed_s": elapsed, "steps": steps, "figures": figures(work_path),
              "all_passed": all(s["status"] == "ok" for s in steps if not s["status"].startswith("skipped"))}
    lines = [f"GPU check on {machine['gpu'] or 'CPU'} (torch {machine['torch']}, device {device}), "
             f"{elapsed:.0f} s, {machine['date']}", ""]
    lines += [f"  {s['step']:<30} {s['status']:<24} {s['seconds']:>7.1f} s" for s in steps]
    lines += ["", json.dumps(result["figures"], indent=1)]
    text = "\n".join(lines)
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.txt").write_text(text + "\n")
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0 if result["all_passed"] else 1


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("time-reconstruct")
    r.add_argument("run_dir")
    r.add_argument("out_dir")
    r.add_argument("--device", default="cuda")
    r.add_argument("--samples", type=int, default=4)
    r.add_argument("--steps", type=int, default=25)
    t = sub.add_parser("test-trials")
    t.add_argument("subject")
    t.add_argument("n", type=int)
    s = sub.add_parser("summary")
    s.add_argument("work")
    s.add_argument("--device", default="cuda")
    s.add_argument("--elapsed", type=float, default=0.0)
    s.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if args.cmd == "time-reconstruct":
        time_reconstruct(args.run_dir, args.out_dir, args.device, args.samples, args.steps)
        return 0
    if args.cmd == "test-trials":
        print(test_trials(args.subject, args.n))
        return 0
    return summary(args.work, args.device, args.elapsed, args.out)


if __name__ == "__main__":
    sys.exit(main())
