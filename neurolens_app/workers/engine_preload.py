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
# diffusers and transformers load their model modules lazily, on first attribute access: touch the classes the
# reconstruction and the embedders use, so that those imports happen here too.
CLASSES = {"diffusers": ("AutoencoderKL", "UNet2DConditionModel", "DDIMScheduler", "DDPMScheduler",
                         "DPMSolverMultistepScheduler"),
           "transformers": ("CLIPVisionModelWithProjection", "CLIPTextModelWithProjection", "AutoModel"),
           "peft": ("LoraConfig", "set_peft_model_state_dict")}


def import_engine_libraries(modules=MODULES) -> dict[str, float]:
    """Import ``modules`` in order, with the classes named in ``CLASSES``; returns seconds per module (about 0 when
    it was already loaded). A missing optional library is logged and skipped: the job that needs it reports it."""
    took: dict[str, float] = {}
    for name in modules:
        t0 = time.perf_counter()
        try:
            module = importlib.import_module(name)
            for attr in CLASSES.get(name, ()):
                getattr(module, attr)
        except (ImportError, AttributeError) as exc:
            log.warning("preloading %s failed: %s", name, exc)
            continue
        took[name] = round(time.perf_counter() - t0, 3)
    return took
