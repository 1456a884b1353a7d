"""How honest the first time-left estimate of a training job is: ``engine.events.EtaClock`` against the clock it
replaced (mean time per step since the clock started, first estimate after one step).

Trains a demo preset on the demo subject once and records every ``Progress`` event's time, step and ETA. Reported:
the step and value of the first estimate the user sees, the time that was actually left then, and the estimate the
previous clock would have shown at the first progress event (its first step carries the start-up work: model
building, the first allocations). Both come from the same run (the reference in the same run).

Prints one JSON object and writes it to ``benchmarks/results/bench_eta.json``.
Usage: ``OMP_NUM_THREADS=1 python benchmarks/bench_eta.py [--preset demo-moe]``
"""

from __future__ import annotations

import argparse
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.results_io import report  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo-moe")
    args = ap.parse_args()
    from engine.data import open_subject
    from engine.events import Progress, Started, drive
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    subject = open_subject("demo")
    out = Path(tempfile.mkdtemp(prefix="bench-eta-"))
    rows, started = [], []
    t0 = time.perf_counter()

    def on_event(e) -> None:
        if isinstance(e, Started):
            started.append(time.perf_counter() - t0)  # the trainer starts its clock right before Started
        elif isinstance(e, Progress):
            rows.append((time.perf_counter() - t0, e.step, e.total, e.eta_s))

    try:
        drive(train_job(get_preset(args.preset, subject), subject, out / "run"), on_event)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    end = rows[-1][0]
    first = next(r for r in rows if r[3] is not None)
    r0 = rows[0]
    previous = (r0[0] - started[0]) / r0[1] * (r0[2] - r0[1])
    report({"benchmark": "eta", "date": time.strftime("%Y-%m-%d"), "machine": platform.platform(),
            "preset": args.preset, "steps": r0[2],
            "first_estimate": {"step": first[1], "eta_s": round(first[3], 1),
                               "actual_left_s": round(end - first[0], 1)},
            "previous_clock_first_estimate": {"step": r0[1], "eta_s": round(previous, 1),
                                              "actual_left_s": round(end - r0[0], 1)},
            "progress_events_without_estimate": sum(1 for r in rows if r[3] is None)}, "bench_eta")


if __name__ == "__main__":
    main()
