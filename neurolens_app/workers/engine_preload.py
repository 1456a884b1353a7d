"""Import the engine's heavy libraries (torch, diffusers, transformers, peft) in a pool thread once the first subject is
on screen.

Why: a C extension's initialisation holds the GIL for a few hundred milliseconds, whatever thread imports it. Importing
at first use would freeze the window exactly when the user starts a training or a reconstruction; importing once the
window has settled moves that one-time cost to a moment with nothing to interact with yet.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
import threading
import time

log = logging.getLogger(__name__)

# Importing torch's submodules from two threads at once can see half-registered op namespaces (AttributeError:
# '_OpNamespace' 'prims' object has no attribute 'sum'). So the preload and engine jobs exclude each other: a job
# waits while the preload runs, and the preload is skipped while a job runs (that job imports what it needs).
_COND = threading.Condition()
_STATE = {"preloading": False, "jobs": 0, "short": 0, "torch": False, "torch_busy": False}
_LOCAL = threading.local()  # .counted: "jobs" or "short" when this thread is counted as running one


def _count_in(kind: str, ready, timeout_s: float) -> None:
    """Wait (at most ``timeout_s``) until ``ready()``, then count this thread as running a ``kind`` job."""
    with _COND:
        _COND.wait_for(ready, timeout_s)
        _STATE[kind] += 1
    _LOCAL.counted = kind


def _count_out(kind: str) -> None:
    _LOCAL.counted = None
    with _COND:
        _STATE[kind] -= 1
        _COND.notify_all()


def job_started(timeout_s: float = 300.0) -> None:
    """An engine job begins (its worker thread): wait for a running preload or torch import to finish."""
    _count_in("jobs", lambda: not _STATE["preloading"] and not _STATE["torch_busy"], timeout_s)


def job_finished() -> None:
    _count_out("jobs")


def short_job_started(timeout_s: float = 300.0) -> None:
    """A short pool job begins: wait while torch is being imported (see ``ensure_torch``)."""
    _count_in("short", lambda: not _STATE["torch_busy"], timeout_s)


def short_job_finished() -> None:
    _count_out("short")


def ensure_torch(timeout_s: float = 120.0):
    """Import torch once for the whole app, from one thread, while no other worker thread runs Python code.

    Why: while torch initialises, another thread importing a module that looks at torch (scipy's and scikit-learn's
    array-API checks do ``import torch`` when it is in ``sys.modules``) gets the half-initialised module
    ("partially initialized module 'torch' has no attribute 'Tensor'"). Every worker thread that may need torch
    calls this first; the first one waits until the other workers are idle or parked here, imports torch, and new
    jobs wait until it is done.
    """
    if _STATE["torch"]:
        return sys.modules["torch"]
    kind = getattr(_LOCAL, "counted", None)
    claimed = False
    deadline = time.monotonic() + timeout_s
    with _COND:
        if kind:
            _STATE[kind] -= 1  # parked: this thread runs nothing else while it waits
        while not _STATE["torch"]:
            if not _STATE["torch_busy"] and (_STATE["jobs"] + _STATE["short"] == 0 or time.monotonic() > deadline):
                _STATE["torch_busy"] = claimed = True
                break
            _COND.wait(0.05)
    try:
        if claimed:
            t0 = time.perf_counter()
            try:
                importlib.import_module("torch")
            except BaseException:
                log.exception("importing torch failed")
                raise
            log.info("torch imported in %.2f s (%s)", time.perf_counter() - t0, threading.current_thread().name)
    finally:
        with _COND:
            if claimed:
                _STATE["torch_busy"] = False
                _STATE["torch"] = "torch" in sys.modules and hasattr(sys.modules["torch"], "Tensor")
            if kind:
                _STATE[kind] += 1
            _COND.notify_all()
    return sys.modules.get("torch")


def _begin_preload() -> bool:
    with _COND:
        if _STATE["jobs"]:
            return False
        _STATE["preloading"] = True
        return True


def _end_preload() -> None:
    with _COND:
        _STATE["preloading"] = False
        _COND.notify_all()


def gui_torch_threads(cpus: int | None = None) -> int:
    """torch CPU threads for jobs started from the window: every core but one, which the event loop keeps.

    Why: torch's intra-op threads spin on every core they are given; with all cores busy the GUI thread waits for
    the scheduler, and the window stalls for tens of milliseconds at a time. ``OMP_NUM_THREADS``, when set, wins.
    A training config's own ``num_threads`` still applies to its job.
    """
    env = os.environ.get("OMP_NUM_THREADS", "")
    if env.isdigit() and int(env) > 0:
        return int(env)
    return max(1, (cpus if cpus is not None else os.cpu_count() or 1) - 1)


def leave_a_core_for_the_gui() -> None:
    """Apply ``gui_torch_threads`` to torch from the calling thread, if torch is loaded (never imports it: an import
    holds the GIL for ~0.3 s, which is the preload's job, not a subject-opening job's).

    Every job's worker thread calls this when it starts: OpenMP applies a thread count to the thread that sets it,
    and torch initialises new threads from the last value set, so the preload also calls it once torch is imported.
    """
    torch = sys.modules.get("torch")
    if torch is not None and hasattr(torch, "set_num_threads"):
        torch.set_num_threads(gui_torch_threads())


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
    if "torch" in modules:  # first, alone: see ensure_torch
        t0 = time.perf_counter()
        try:
            ensure_torch()
            took["torch"] = round(time.perf_counter() - t0, 3)
            leave_a_core_for_the_gui()
        except ImportError as exc:
            log.warning("preloading torch failed: %s", exc)
        modules = tuple(m for m in modules if m != "torch")
    if not _begin_preload():
        log.info("engine preload skipped: a job is running and imports what it needs")
        return took
    try:
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
            if name == "torch":
                leave_a_core_for_the_gui()  # threads started from now on begin with the GUI's count
    finally:
        _end_preload()
    return took


def start_engine_preload(context) -> None:
    """Import the engine's libraries in a pool thread; ``context.engine_loaded`` fires when they are (or when the
    import failed: work waiting for the engine must not wait forever, it then imports what it needs itself)."""
    from neurolens_app.workers.short_job import submit

    context.show_status("Loading the engine libraries (torch, diffusers)…", 0)

    def done(took: dict) -> None:
        from shiboken6 import isValid

        log.info("engine libraries loaded: %s", took)
        if not isValid(context):
            return  # the window was closed while the libraries were loading
        context.show_status("Engine ready", 3000)
        context.engine_loaded.emit()

    def failed(exc, tb: str) -> None:
        log.warning("engine preload failed: %s", exc)
        done({})

    submit(import_engine_libraries, on_result=done, on_error=failed)
