"""``neurolens status RUN_DIR...``: where each training run stands (done, running, cancelled, failed, interrupted)."""

from __future__ import annotations

import json
from pathlib import Path

NAME = "status"
HELP = "show where training runs stand; a run whose process was killed shows as 'interrupted'"
DESCRIPTION = (
    "For each RUN_DIR (or each run folder inside a folder of runs): its status, step and final metrics. A run left "
    "'running' by a process that no longer exists (killed, crashed, machine restarted) is 'interrupted'; "
    "cancelled, failed and interrupted runs continue with 'neurolens resume RUN_DIR'."
)
ORDER = 32


def add_arguments(p) -> None:
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run folder(s), or a folder holding run folders")
    p.add_argument("--json", action="store_true", help="print one JSON object per run")


def _run_dirs(paths: list[str]) -> list[Path]:
    from engine.errors import CheckpointError
    from engine.train.run import CONFIG_FILE, Run

    out = []
    for text in paths:
        p = Path(text)
        if Run.is_run_folder(p):
            out.append(p)
        elif p.is_dir() and any(Run.is_run_folder(q) for q in p.iterdir() if q.is_dir()):
            out.extend(sorted(q for q in p.iterdir() if q.is_dir() and Run.is_run_folder(q)))
        else:
            raise CheckpointError(f"{p}: not a NeuroLens run folder (no {CONFIG_FILE}) nor a folder of runs")
    return out


def run(args) -> int:
    from engine.train.run import INTERRUPTED, Run

    for path in _run_dirs(args.runs):
        st = Run(path).status()
        if args.json:
            print(json.dumps({"run": str(path), **st}))
            continue
        status = st.get("status", "unknown")
        line = f"{path}  {status}  step {st.get('step', 0)}/{st.get('total', 0) or '?'}"
        metrics = st.get("metrics") or {}
        if metrics:
            line += "  " + "  ".join(f"{k}={v:.4g}" for k, v in list(metrics.items())[:3] if isinstance(v, (int, float)))
        if status == INTERRUPTED:
            line += f"  (process {st.get('pid')} is gone; continue with: neurolens resume {path})"
        elif status in ("cancelled", "failed"):
            line += f"  (continue with: neurolens resume {path})"
        if status == "failed" and st.get("error"):
            line += f"  error: {str(st['error']).splitlines()[0][:120]}"
        print(line)
    return 0
