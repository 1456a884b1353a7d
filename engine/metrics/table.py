"""Formatting of an ``EvaluationResult``: a terminal table, a JSON object, and the per-trial CSV."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from engine.atomic import atomic_write_text


def _fmt(v) -> str:
    if v is None:
        return "—"
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "—"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return f"{v:.4f}" if abs(v) < 100 else f"{v:.1f}"
    return str(v)


def format_table(result) -> str:
    """The table a person reads: one line per folder × image set × aggregate, then unavailable metrics and protocols.

    The folder column shows the folder name; the full paths are listed above the table.

    Arrows mark the direction (↑ higher is better, ↓ lower is better). Retrieval columns show the mean top-1 with the
    95 % interval in brackets.
    """
    cols = [c for c in result.columns if not c.endswith("95% CI")]
    head = ["folder", "method", "images", "protocol"] + [c + (" ↑" if result.higher_is_better.get(c, True) else " ↓")
                                                         for c in cols]
    lines = []
    for row in result.rows:
        cells = [Path(row["folder"]).name, row["method"], row["images"], str(row.get("protocol", "—"))]
        for c in cols:
            v = _fmt(row.get(c))
            if f"{c} 95% CI" in row:
                v += " " + _fmt(row[f"{c} 95% CI"])
            cells.append(v)
        lines.append(cells)
    widths = [max(len(h), *(len(r[i]) for r in lines)) for i, h in enumerate(head)] if lines else [len(h) for h in head]
    out = io.StringIO()
    folders = list(dict.fromkeys(r["folder"] for r in result.rows))
    out.write("reconstructions: " + ", ".join(folders) + "\n")
    out.write("  ".join(h.ljust(w) for h, w in zip(head, widths)).rstrip() + "\n")
    out.write("  ".join("-" * w for w in widths) + "\n")
    for cells in lines:
        out.write("  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip() + "\n")
    if result.unavailable:
        out.write("\nunavailable:\n")
        for k, v in result.unavailable.items():
            out.write(f"  {k}: {v}\n")
    out.write("\nprotocol:\n")
    for k, v in result.protocol.items():
        out.write(f"  {k}: {v}\n")
    return out.getvalue()


def _json_value(v):
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if not math.isfinite(v) else float(v)
    return v


def to_json(result, *, per_trial: bool = False) -> dict:
    """A JSON-safe dict: rows, columns, unavailable, protocol (NaN and inf become null); optionally the per-trial table."""
    d = {"rows": [{k: _json_value(v) for k, v in r.items()} for r in result.rows], "columns": list(result.columns),
         "higher_is_better": dict(result.higher_is_better), "unavailable": dict(result.unavailable),
         "protocol": dict(result.protocol)}
    if per_trial:
        d["per_trial"] = {k: [_json_value(x) for x in v.tolist()] for k, v in result.per_trial.items()}
    return d


def per_trial_csv(result) -> str:
    """The per-trial table as CSV text: one line per item × sample × image set, one column per metric."""
    buf = io.StringIO()
    keys = list(result.per_trial)
    w = csv.writer(buf)
    w.writerow(keys)
    n = len(result.per_trial[keys[0]]) if keys else 0
    for i in range(n):
        w.writerow([_csv_cell(result.per_trial[k][i]) for k in keys])
    return buf.getvalue()


def _csv_cell(v) -> str:
    if isinstance(v, (float, np.floating)):
        return "" if math.isnan(v) else repr(float(v))
    return str(v)


def write_csv(result, path) -> Path:
    """Write ``per_trial_csv`` atomically to ``path``."""
    return atomic_write_text(path, per_trial_csv(result))
