"""A second device on a CPU-only machine: PyTorch's ``meta`` device made to behave like CUDA where bugs hide.

The CUDA bugs this catches without a GPU are of two kinds:

- mixing devices: a CPU tensor meeting a device tensor in one op. The ``meta`` device already refuses that, as CUDA
  does ("Tensor on device cpu is not on the expected device meta!"), and ``.numpy()`` refuses meta tensors as it
  refuses CUDA ones;
- random draws: CUDA refuses a CPU ``torch.Generator`` for a CUDA tensor ("Expected a 'cuda' device type for
  generator but found 'cpu'"), and a draw made on the device follows the device's own random stream (a seed then
  gives other numbers on a GPU). ``meta`` checks neither, so ``strict_random`` wraps every random function of torch:
  a generator whose device differs from the output's raises CUDA's own error, and any draw on a non-CPU device
  raises (the project's rule: draw on the CPU, then move).

``meta_device`` also lets a whole job finish there: copying a meta tensor back to the host (``.cpu()``, ``.to("cpu")``,
``.item()``, ``float()``, ``bool()``) gives stand-in values of the right shape and dtype instead of "Cannot copy out
of meta tensor", so a job runs end to end and every op on the way is checked. (Only the values are fake; shapes, dtypes and
devices are real.)
"""

from __future__ import annotations

import functools

import pytest
import torch

RANDOM_FUNCTIONS = ("rand", "randn", "randint", "randperm", "normal", "bernoulli", "multinomial", "poisson",
                    "rand_like", "randn_like", "randint_like")
RANDOM_METHODS = ("normal_", "uniform_", "bernoulli_", "random_", "exponential_", "geometric_", "log_normal_",
                  "cauchy_", "bernoulli", "multinomial")


def _output_device(name: str, args, kwargs) -> torch.device:
    if kwargs.get("device") is not None:
        return torch.device(kwargs["device"])
    tensors = [a for a in list(args) + list(kwargs.values()) if torch.is_tensor(a)]
    if tensors and (name.endswith("_like") or name in ("normal", "bernoulli", "multinomial", "poisson")):
        return tensors[0].device
    return torch.device("cpu")


def _check(name: str, device: torch.device, generator) -> None:
    if generator is not None and generator.device.type != device.type:
        raise RuntimeError(f"Expected a '{device.type}' device type for generator but found "
                           f"'{generator.device.type}' (torch.{name})")
    if device.type != "cpu":
        raise RuntimeError(f"torch.{name} drew random numbers on {device}: draw on the CPU from the job's "
                           "generator, then move, so a seed gives the same numbers on every device")


def _wrap_function(name: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        _check(name, _output_device(name, args, kwargs), kwargs.get("generator"))
        return fn(*args, **kwargs)
    return wrapper


def _wrap_method(name: str, fn):
    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        _check(f"Tensor.{name}", self.device, kwargs.get("generator"))
        return fn(self, *args, **kwargs)
    return wrapper


@pytest.fixture
def strict_random(monkeypatch):
    """Every torch random draw is checked as CUDA would check it, plus the draw-on-the-CPU rule."""
    for name in RANDOM_FUNCTIONS:
        monkeypatch.setattr(torch, name, _wrap_function(name, getattr(torch, name)))
    for name in RANDOM_METHODS:
        monkeypatch.setattr(torch.Tensor, name, _wrap_method(name, getattr(torch.Tensor, name)))


def _host_values(t: torch.Tensor) -> torch.Tensor:
    """Stand-in values of a meta tensor read back: fixed pseudo-random floats (fits and norms stay well posed),
    True for booleans (checks such as ``isfinite`` pass), zeros for integers."""
    if t.dtype == torch.bool:
        return torch.ones(t.shape, dtype=torch.bool)
    if not t.dtype.is_floating_point:
        return torch.zeros(t.shape, dtype=t.dtype)
    return torch.randn(t.shape, generator=torch.Generator().manual_seed(t.numel())).to(t.dtype)


@pytest.fixture
def meta_device(strict_random, monkeypatch):
    """``torch.device("meta")`` as a stand-in GPU: strict random draws, and host copies that read back stand-in
    values."""
    cpu, to, item, as_bool = torch.Tensor.cpu, torch.Tensor.to, torch.Tensor.item, torch.Tensor.__bool__

    def meta_cpu(self, *args, **kwargs):
        return _host_values(self) if self.is_meta else cpu(self, *args, **kwargs)

    def meta_to(self, *args, **kwargs):
        if self.is_meta:
            named = [a for a in args if isinstance(a, (str, torch.device))] + [a.device for a in args
                                                                                  if torch.is_tensor(a)]
            target = kwargs.get("device", named[0] if named else self.device)
            if torch.device(target).type == "cpu":
                return to(_host_values(self), *args, **kwargs)
        return to(self, *args, **kwargs)

    def meta_item(self):
        return item(_host_values(self)) if self.is_meta else item(self)

    monkeypatch.setattr(torch.Tensor, "cpu", meta_cpu)
    monkeypatch.setattr(torch.Tensor, "to", meta_to)
    monkeypatch.setattr(torch.Tensor, "item", meta_item)
    monkeypatch.setattr(torch.Tensor, "__float__", lambda self: float(meta_item(self)))
    monkeypatch.setattr(torch.Tensor, "__int__", lambda self: int(meta_item(self)))
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: bool(meta_item(self)) if self.is_meta
                        else as_bool(self))
    return torch.device("meta")
