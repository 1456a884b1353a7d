"""``EvaluationResult``: rows, the per-trial column table, unavailable metrics and protocols."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class EvaluationResult:
    """Rows, per-trial table, unavailable metrics with reasons, and the protocol of each metric."""

    rows: list[dict] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    per_trial: dict[str, np.ndarray] = field(default_factory=dict)
    unavailable: dict[str, str] = field(default_factory=dict)
    protocol: dict[str, str] = field(default_factory=dict)
    higher_is_better: dict[str, bool] = field(default_factory=dict)

    def merge(self, other: "EvaluationResult") -> "EvaluationResult":
        """Concatenate two results (several folders in one table)."""
        cols = self.columns + [c for c in other.columns if c not in self.columns]
        blocks = [t for t in (self.per_trial, other.per_trial) if t]
        return EvaluationResult(rows=self.rows + other.rows, columns=cols, per_trial=concat_tables(blocks),
                                unavailable={**self.unavailable, **other.unavailable},
                                protocol={**self.protocol, **other.protocol},
                                higher_is_better={**self.higher_is_better, **other.higher_is_better})


def concat_tables(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Concatenate column tables; a column missing from a block is NaN (numbers) or "" (text) there."""
    keys: list[str] = []
    for b in blocks:
        keys.extend(k for k in b if k not in keys)
    out = {}
    for key in keys:
        parts = []
        text = any(b[key].dtype.kind in "USO" for b in blocks if key in b)
        for b in blocks:
            n = len(next(iter(b.values())))
            parts.append(b[key].astype(str) if key in b and text else b[key] if key in b
                         else np.full(n, "" if text else np.nan))
        out[key] = np.concatenate(parts)
    return out
