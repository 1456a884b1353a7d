"""Checkpoints: safetensors for tensors, JSON for everything else, written atomically, never unpickled.

A checkpoint is the folder ``checkpoints/step-XXXXXX/``::

    model.safetensors      the encoder's state dict
    model.json             the encoder's spec (class, config, subjects, target shape), to rebuild it without the data
    optimizer.safetensors  optimizer state tensors, flattened as ``state.<param index>.<name>``
    rng.safetensors        torch CPU (and CUDA) generator states, the trainer's own generator
    state.json             step, stage, epoch, batch, scheduler state, python and numpy RNG states,
                           optimizer param groups and non-tensor state

The folder is built under a hidden temporary name and renamed into place when complete; older checkpoints are deleted
only after that, so a crash at any moment leaves at least the previous complete checkpoint.
"""

from __future__ import annotations

import random
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.atomic import atomic_dir, atomic_save_safetensors, atomic_write_json
from engine.errors import CheckpointError
from engine.jsonfile import field, read_object

MODEL_FILE = "model.safetensors"
SPEC_FILE = "model.json"
OPTIMIZER_FILE = "optimizer.safetensors"
RNG_FILE = "rng.safetensors"
STATE_FILE = "state.json"


def checkpoint_name(step: int) -> str:
    return f"step-{int(step):06d}"


# ----------------------------------------------------------------------------------------------------------------------
# Optimizer state <-> (tensors, JSON)


def flatten_optimizer_state(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into safetensors-ready tensors and a JSON-safe remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for pid, st in state_dict["state"].items():
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"state.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in state_dict["param_groups"]]
    meta = {"param_groups": groups, "scalars": scalars,
            "tuples": sorted({k for g in state_dict["param_groups"] for k, v in g.items() if isinstance(v, tuple)})}
    return tensors, meta


def unflatten_optimizer_state(tensors: dict[str, torch.Tensor], meta: dict) -> dict:
    """Inverse of ``flatten_optimizer_state``: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict] = {}
    for name, t in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = t
    for pid, st in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(st)
    tuples = set(meta.get("tuples", []))
    groups = [{k: (tuple(v) if k in tuples and isinstance(v, list) else v) for k, v in g.items()}
              for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ----------------------------------------------------------------------------------------------------------------------
# RNG states


def capture_rng(generator: torch.Generator | None = None) -> tuple[dict, dict[str, torch.Tensor]]:
    """The python, numpy and torch RNG states (and ``generator``'s) as (JSON dict, tensors)."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=False)
    js = {
        "python": {"version": version, "state": list(internal), "gauss": gauss},
        "numpy": {"bit_generator": np_state["bit_generator"],
                  "key": np.asarray(np_state["state"]["key"]).tolist(), "pos": int(np_state["state"]["pos"]),
                  "has_gauss": int(np_state["has_gauss"]), "gauss": float(np_state["gauss"])},
    }
    tensors = {"torch_cpu": torch.get_rng_state()}
    if generator is not None:
        tensors["generator"] = generator.get_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    return js, tensors


def restore_rng(js: dict, tensors: dict[str, torch.Tensor], generator: torch.Generator | None = None) -> None:
    """Inverse of ``capture_rng``."""
    py = js["python"]
    random.setstate((py["version"], tuple(py["state"]), py["gauss"]))
    n = js["numpy"]
    np.random.set_state({"bit_generator": n["bit_generator"],
                         "state": {"key": np.asarray(n["key"], dtype=np.uint32), "pos": n["pos"]},
                         "has_gauss": n["has_gauss"], "gauss": n["gauss"]})
    torch.set_rng_state(tensors["torch_cpu"])
    if generator is not None and "generator" in tensors:
        generator.set_state(tensors["generator"])
    cuda = sorted(k for k in tensors if k.startswith("torch_cuda_"))
    if cuda and torch.cuda.is_available():
        states = [tensors[k] for k in sorted(cuda, key=lambda k: int(k.rsplit("_", 1)[1]))]
        if len(states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states)


# ----------------------------------------------------------------------------------------------------------------------
# Save / load


@dataclass
class CheckpointData:
    """What ``load_checkpoint`` returns.

    Attributes
    ----------
    path : Path
    model_state : dict[str, Tensor]
    model_spec : dict
        ``BrainEncoder.spec()`` of the saved model.
    optimizer_state : dict or None
        Ready for ``optimizer.load_state_dict``.
    state : dict
        The trainer's position (step, stage, epoch, batch, scheduler) and extra fields.
    rng_json, rng_tensors : dict
        For ``restore_rng``.
    """

    path: Path
    model_state: dict
    model_spec: dict
    optimizer_state: dict | None
    state: dict
    rng_json: dict
    rng_tensors: dict


def save_checkpoint(folder: str | Path, step: int, *, model, optimizer=None, state: dict,
                    generator: torch.Generator | None = None, keep: int = 2) -> Path:
    """Write ``folder/step-XXXXXX`` atomically, then delete all but the newest ``keep`` complete checkpoints.

    Parameters
    ----------
    folder : path
        The run's ``checkpoints/`` folder.
    step : int
        Global step the checkpoint represents (steps done).
    model : BrainEncoder
    optimizer : torch.optim.Optimizer, optional
    state : dict
        JSON-safe trainer position (step, stage, epoch, batch, scheduler state, ...).
    generator : torch.Generator, optional
        The trainer's own generator (mixup, masking), saved with the global RNG states.
    keep : int
    """
    folder = Path(folder)
    target = folder / checkpoint_name(step)
    rng_js, rng_t = capture_rng(generator)
    with atomic_dir(target, overwrite=True) as tmp:
        atomic_save_safetensors(tmp / MODEL_FILE, model.state_dict())
        atomic_write_json(tmp / SPEC_FILE, model.spec())
        opt_meta = None
        if optimizer is not None:
            tensors, opt_meta = flatten_optimizer_state(optimizer.state_dict())
            atomic_save_safetensors(tmp / OPTIMIZER_FILE, tensors)
        atomic_save_safetensors(tmp / RNG_FILE, rng_t)
        # state.json last: its presence marks a complete checkpoint even to readers that ignore the folder rename.
        atomic_write_json(tmp / STATE_FILE, {**state, "step": int(step), "rng": rng_js, "optimizer": opt_meta})
    prune_checkpoints(folder, keep)
    return target


def prune_checkpoints(folder: str | Path, keep: int) -> list[Path]:
    """Delete all but the newest ``keep`` complete checkpoints and any stale half-written ones; return deleted."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    complete = sorted((p for p in folder.iterdir() if p.is_dir() and p.name.startswith("step-")
                       and p.name[5:].isdigit() and (p / STATE_FILE).is_file()), key=lambda p: int(p.name[5:]))
    stale = [p for p in folder.iterdir() if p.is_dir() and p.name.startswith(".step-")]
    doomed = complete[: max(0, len(complete) - keep)] + stale
    for p in doomed:
        shutil.rmtree(p, ignore_errors=True)
    return doomed


def load_checkpoint(path: str | Path) -> CheckpointData:
    """Read a checkpoint folder (safetensors + JSON only)."""
    from safetensors.torch import load_file

    path = Path(path)
    for name in (MODEL_FILE, SPEC_FILE, RNG_FILE, STATE_FILE):
        if not (path / name).is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint: missing {name}")
    state = read_object(path / STATE_FILE, CheckpointError)
    spec = read_object(path / SPEC_FILE, CheckpointError)
    _check_state(path, state)

    def _load(name: str) -> dict:
        try:
            return load_file(str(path / name), device="cpu")
        except Exception as e:  # safetensors raises its own error types on truncated files
            raise CheckpointError(f"{path / name}: cannot read safetensors ({e})") from None

    model_state = _load(MODEL_FILE)
    rng_t = _load(RNG_FILE)
    if "torch_cpu" not in rng_t:
        raise CheckpointError(f"{path / RNG_FILE}: key 'torch_cpu': missing (the CPU generator state)")
    opt_state = None
    if state.get("optimizer") is not None:
        if not (path / OPTIMIZER_FILE).is_file():
            raise CheckpointError(f"{path}: incomplete checkpoint: missing {OPTIMIZER_FILE}")
        try:
            opt_state = unflatten_optimizer_state(_load(OPTIMIZER_FILE), state["optimizer"])
        except (KeyError, ValueError, TypeError, AttributeError) as e:
            raise CheckpointError(f"{path / OPTIMIZER_FILE}: optimizer state does not match {STATE_FILE} "
                                  f"({type(e).__name__}: {e})") from None
    return CheckpointData(path=path, model_state=model_state, model_spec=spec, optimizer_state=opt_state,
                          state=state, rng_json=state["rng"], rng_tensors=rng_t)


def _check_state(path: Path, state: dict) -> None:
    """Types of ``state.json``, and its step against the folder's name (a tampered step must not be carried on)."""
    p = path / STATE_FILE
    step = field(state, "step", int, p, error=CheckpointError)
    name_step = int(path.name[5:]) if path.name.startswith("step-") and path.name[5:].isdigit() else None
    if step < 0 or (name_step is not None and step != name_step):
        raise CheckpointError(f"{p}: key 'step': expected {name_step if name_step is not None else 'a step >= 0'} "
                              f"(the folder's step), found {step}")
    for key in ("stage", "epoch", "batch"):
        if field(state, key, int, p, default=0, error=CheckpointError) < 0:
            raise CheckpointError(f"{p}: key '{key}': expected an integer >= 0, found {state[key]}")
    field(state, "optimizer", (dict, type(None)), p, default=None, error=CheckpointError)
    rng = field(state, "rng", dict, p, error=CheckpointError)
    py = field(rng, "python", dict, f"{p} (rng)", error=CheckpointError)
    field(py, "version", int, f"{p} (rng.python)", error=CheckpointError)
    if not all(isinstance(v, int) for v in field(py, "state", list, f"{p} (rng.python)", error=CheckpointError)):
        raise CheckpointError(f"{p}: key 'rng.python.state': expected a list of integers")
    npr = field(rng, "numpy", dict, f"{p} (rng)", error=CheckpointError)
    field(npr, "bit_generator", str, f"{p} (rng.numpy)", error=CheckpointError)
    if not all(isinstance(v, int) for v in field(npr, "key", list, f"{p} (rng.numpy)", error=CheckpointError)):
        raise CheckpointError(f"{p}: key 'rng.numpy.key': expected a list of integers")
    for key, types in (("pos", int), ("has_gauss", int), ("gauss", float)):
        field(npr, key, types, f"{p} (rng.numpy)", error=CheckpointError)
