"""Formatting of an ``EvaluationResult``: a terminal table, a JSON object, and the per-trial CSV."""

from __future__ import annotations

import csv
import io
import math
import textwrap
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


TABLE_WIDTH = 120


def format_table(result, width: int = TABLE_WIDTH) -> str:
    """The table a person reads, at most ``width`` columns wide.

    A header names each folder (a letter when there are several), its method and settings, its number of images and
    the n of its label-based n-way; then one line per folder × image set × aggregate, the metric columns wrapped into
    blocks that fit ``width`` (each block repeats the row labels); then unavailable metrics and protocols.

    Arrows mark the direction (↑ higher is better, ↓ lower is better). Retrieval columns show the mean top-1 with the
    95 % interval in brackets.
    """
    folders = list(dict.fromkeys(r["folder"] for r in result.rows))
    tags = {f: (chr(ord("A") + i) if len(folders) > 1 else "") for i, f in enumerate(folders)}
    out = io.StringIO()
    out.write("reconstructions:\n")
    for f in folders:
        row = next(r for r in result.rows if r["folder"] == f)
        lead = f"  {tags[f]} " if tags[f] else "  "
        out.write(f"{lead}{f}\n")
        pad = " " * len(lead)
        out.write(f"{pad}method: {row['method']}\n")
        if row.get("protocol"):
            out.write(f"{pad}protocol: {row['protocol']}\n")
        label_n = row.get("label_n")
        out.write(f"{pad}{row.get('n_items', '?')} images" + (f"; n-way labels: n = {label_n}" if label_n else "")
                  + "\n")
    cols = [c for c in result.columns if not c.endswith("95% CI")]
    labels = [(f"{tags[r['folder']]} " if tags[r["folder"]] else "") + str(r["images"]) for r in result.rows]
    cells = {}
    for c in cols:
        vals = []
        for row in result.rows:
            v = _fmt(row.get(c))
            if f"{c} 95% CI" in row:
                v += " " + _fmt(row[f"{c} 95% CI"])
            vals.append(v)
        cells[c] = vals
    heads = {c: c + (" ↑" if result.higher_is_better.get(c, True) else " ↓") for c in cols}
    label_w = max([len("images"), *map(len, labels)])
    col_w = {c: max([len(heads[c]), *map(len, cells[c])]) for c in cols}
    blocks, block, used = [], [], label_w
    for c in cols:
        if block and used + 2 + col_w[c] > width:
            blocks.append(block)
            block, used = [], label_w
        block.append(c)
        used += 2 + col_w[c]
    blocks.append(block)
    for b in blocks:
        out.write("\n")
        out.write("  ".join(["images".ljust(label_w)] + [heads[c].ljust(col_w[c]) for c in b]).rstrip() + "\n")
        out.write("  ".join(["-" * label_w] + ["-" * col_w[c] for c in b]) + "\n")
        for i, lab in enumerate(labels):
            out.write("  ".join([lab.ljust(label_w)] + [cells[c][i].ljust(col_w[c]) for c in b]).rstrip() + "\n")
    if result.unavailable:
        out.write("\nunavailable:\n")
        for k, v in result.unavailable.items():
            out.write(_wrapped(f"{k}: {v}", width))
    out.write("\nprotocol:\n")
    for k, v in result.protocol.items():
        out.write(_wrapped(f"{k}: {v}", width))
    return out.getvalue()


def _wrapped(text: str, width: int) -> str:
    """One note under the table, wrapped at ``width`` with a hanging indent (paths are not broken)."""
    return textwrap.fill(text, width, initial_indent="  ", subsequent_indent="      ", break_long_words=False,
                         break_on_hyphens=False) + "\n"


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
