"""Import the engine's heavy libraries (torch, diffusers, transformers, peft) in a pool thread once the first subject is
on screen.

Why: a C extension's initialisation holds the GIL for a few hundred milliseconds, whatever thread imports it. Importing
at first use would freeze the window exactly when the user starts a training or a reconstruction; importing once the
window has settled moves that one-time cost to a moment with nothing to interact with yet.
"""

from __future__ import annotations

import importlib
import logging
import time

log = logging.getLogger(__name__)

MODULES = ("torch", "safetensors.torch", "transformers", "diffusers", "peft")


def import_engine_libraries(modules=MODULES) -> dict[str, float]:
    """Import ``modules`` in order; returns seconds per module (0 when it was already imported). A missing optional
    library is logged and skipped: the job that needs it reports the error itself."""
    import sys

    took: dict[str, float] = {}
    for name in modules:
        t0 = time.perf_counter()
        if name not in sys.modules:
            try:
                importlib.import_module(name)
            except ImportError as exc:
                log.warning("preloading %s failed: %s", name, exc)
                continue
        took[name] = round(time.perf_counter() - t0, 3)
    return took
