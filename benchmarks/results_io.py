"""Where every benchmark's JSON goes: printed, and written to ``benchmarks/results/NAME.json``."""

from __future__ import annotations

import json
import os
from pathlib import Path

# NEUROLENS_BENCH_RESULTS redirects every benchmark's JSON (benchmarks/gpu_check.sh: the device run's own folder).
RESULTS = Path(os.environ.get("NEUROLENS_BENCH_RESULTS") or Path(__file__).resolve().parent / "results")


def report(result: dict, name: str | None, *, indent: int = 2, dest: Path | None = None) -> str:
    """Print ``result`` as JSON and write it to ``dest`` (default ``results/NAME.json``; ``name=None``: print only)."""
    text = json.dumps(result, indent=indent, default=str)
    print(text)
    if dest is None and name is not None:
        dest = RESULTS / f"{name}.json"
    if dest is not None:
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(text + "\n")
    return text
