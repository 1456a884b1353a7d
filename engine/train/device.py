"""Devices: what this machine offers (for the GUI's device picker), checking a choice, moving host data to a device,
and out-of-memory messages.

Two rules every job follows on any device (tests/engine/test_device_rules.py checks them on the ``meta`` device):

- random numbers are drawn on the CPU, from the job's CPU ``torch.Generator`` (or the CPU global one), and then moved
  (``torch.randn(shape, generator=g).to(device)``): the same seed gives the same draws on every device, and a CPU
  generator is never handed to a CUDA kernel (which refuses it);
- host data goes to the device with ``to_device`` (pinned memory, non-blocking copy on CUDA) and comes back with
  ``to_numpy`` (``.detach().cpu()`` first: ``.numpy()`` refuses device tensors).

>>> [d.id for d in list_devices()]
['cpu', 'cuda:0', 'cuda:1']
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator

from engine.errors import DeviceError


@dataclass(frozen=True)
class DeviceInfo:
    """One device a job can run on.

    Attributes
    ----------
    id : str
        What a config's ``device`` takes: ``"cpu"``, ``"cuda:N"`` or ``"mps"``.
    name : str
        Human-readable name (GPU model, CPU core count).
    memory_gb : float or None
        Total memory in GiB (GPU memory; system RAM for the CPU where it can be read).
    """

    id: str
    name: str
    memory_gb: float | None = None


def list_devices() -> list[DeviceInfo]:
    """The CPU, every CUDA GPU and Apple's MPS when present, in that order."""
    import torch

    out = [DeviceInfo("cpu", f"CPU ({os.cpu_count() or '?'} cores)", _system_memory_gb())]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            p = torch.cuda.get_device_properties(i)
            out.append(DeviceInfo(f"cuda:{i}", p.name, round(p.total_memory / 2**30, 1)))
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        out.append(DeviceInfo("mps", "Apple Metal (MPS)", None))
    return out


def _system_memory_gb() -> float | None:
    try:
        return round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        return None


def resolve_device(device: str):
    """``torch.device`` for a config's ``device``; ``DeviceError`` naming what exists when it is absent."""
    import torch

    ids = [d.id for d in list_devices()]
    if device == "cuda":
        device = "cuda:0"
    if device not in ids:
        raise DeviceError(f"device '{device}' is not available on this machine; available: {', '.join(ids)}")
    return torch.device(device)


def device_name(device) -> str:
    """A human-readable name of a torch device (for provenance)."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple Metal (MPS)"
    return f"CPU ({os.cpu_count() or '?'} cores, {torch.get_num_threads()} threads)"


def to_device(array, device, dtype=None):
    """A host array (numpy or CPU tensor) on ``device``: on CUDA through pinned memory with a non-blocking copy, so
    the copy overlaps the work already queued on the GPU (the caching host allocator keeps the pinned block alive
    until the copy has finished)."""
    import numpy as np
    import torch

    t = array if torch.is_tensor(array) else torch.from_numpy(np.ascontiguousarray(array))
    device = torch.device(device)
    if device.type == "cuda" and t.device.type == "cpu":
        if not t.is_pinned():
            t = t.pin_memory()
        return t.to(device, dtype=dtype, non_blocking=True)
    return t.to(device, dtype=dtype)


def to_numpy(tensor, dtype=None):
    """A tensor on any device as a numpy array (``dtype`` default: the tensor's; half precision becomes float32)."""
    import torch

    t = tensor.detach()
    if dtype is None and t.dtype in (torch.bfloat16, torch.float16):
        t = t.float()
    out = t.cpu().numpy()
    return out if dtype is None else out.astype(dtype, copy=False)


def oom_message(device, *, batch_size: int | None = None, precision: str | None = None, what: str = "training") -> str:
    """What to change after running out of memory."""
    hints = []
    if batch_size is not None and batch_size > 2:
        hints.append(f"a smaller batch_size (e.g. {max(2, batch_size // 2)} instead of {batch_size})")
    if precision == "fp32":
        hints.append("precision bf16 (halves activation memory on GPUs that support it)")
    hints.append("a smaller model (model.params: hidden / dim / depth)")
    return (f"out of memory on {device} while {what}: try " + "; or ".join(hints)
            + ". Other programs using the GPU also count (see nvidia-smi).")


@contextlib.contextmanager
def oom_guard(device, *, batch_size: int | None = None, precision: str | None = None,
              what: str = "training") -> Iterator[None]:
    """Turn ``torch.OutOfMemoryError`` (and the CPU allocator's failure) into a ``DeviceError`` saying what to change.

    The CUDA cache is emptied first, so the process can go on (e.g. retry with a smaller batch).
    """
    import torch

    try:
        yield
    except torch.OutOfMemoryError as e:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise DeviceError(oom_message(device, batch_size=batch_size, precision=precision, what=what)) from e
    except RuntimeError as e:
        msg = str(e)
        if "DefaultCPUAllocator" in msg and "not enough memory" in msg:
            raise DeviceError(oom_message(device, batch_size=batch_size, precision=precision, what=what)) from e
        raise
