"""Learning-rate schedules as pure functions of the step, so a resumed run needs only the step to continue exactly.

``onecycle`` matches ``torch.optim.lr_scheduler.OneCycleLR`` (cosine annealing, two phases); ``cosine`` is MinD-Vis's
linear warm-up then half-cycle cosine to zero; ``constant`` warms up linearly and stays at the peak.
"""

from __future__ import annotations

import math

from engine.train.config import OptimConfig


def _cos(start: float, end: float, pct: float) -> float:
    return end + (start - end) / 2.0 * (math.cos(math.pi * min(max(pct, 0.0), 1.0)) + 1.0)


def learning_rate(config: OptimConfig, step: int, total: int) -> float:
    """Learning rate of optimisation step ``step`` (0-based) out of ``total``."""
    total = max(1, int(total))
    peak = config.lr
    if config.schedule == "onecycle":
        initial = peak / config.div_factor
        final = initial / config.final_div_factor
        end_up = float(config.warmup * total) - 1
        if end_up > 0 and step <= end_up:
            return _cos(initial, peak, step / end_up)
        span = max((total - 1) - max(end_up, 0.0), 1e-9)
        return _cos(peak, final, (step - max(end_up, 0.0)) / span)
    warm = int(config.warmup * total)
    if step < warm:
        return peak * (step + 1) / warm
    if config.schedule == "constant":
        return peak
    return peak * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(1, total - warm)))
