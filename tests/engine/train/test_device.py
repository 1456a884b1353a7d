"""Device listing and out-of-memory messages."""

from __future__ import annotations

import pytest
import torch

from engine.errors import DeviceError
from engine.train.device import list_devices, oom_guard, resolve_device


def test_cpu_is_always_listed():
    devices = list_devices()
    assert devices[0].id == "cpu" and devices[0].name
    assert len({d.id for d in devices}) == len(devices)


def test_absent_device_is_a_device_error():
    with pytest.raises(DeviceError, match="cuda:7"):
        resolve_device("cuda:7")
    assert resolve_device("cpu") == torch.device("cpu")


def test_out_of_memory_says_what_to_change():
    with pytest.raises(DeviceError, match=r"batch_size \(e\.g\. 32 instead of 64\).*bf16"):
        with oom_guard("cuda:0", batch_size=64, precision="fp32"):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    with pytest.raises(RuntimeError, match="unrelated"):
        with oom_guard("cpu"):
            raise RuntimeError("unrelated")
