"""Several processes (GPUs, nodes) through accelerate; one process is the same code with every collective a no-op.

Launch a multi-process run with ``torchrun --nproc_per_node N -m engine.cli.main train ...`` or ``accelerate launch
--multi_gpu --num_processes N ...``. Each process builds the same model from the same seed (rank 0's weights are
broadcast to be sure), takes its share of every global batch (rows ``rank::world_size`` of the batch, so the global
batch size and the data order do not depend on the number of processes), and the gradients are averaged over processes
before each optimizer step. Only rank 0 writes the run folder. On CPU the processes talk over gloo
(``Accelerator(cpu=True)``).

Gradients are averaged in one flat all-reduce instead of wrapping the model in DistributedDataParallel: encoders return
dataclasses and have parameters a stage does not use (the MAE decoder while fine-tuning), which DDP handles poorly.
"""

from __future__ import annotations

import os

import numpy as np


def launched_world_size() -> int:
    """Processes started by torchrun / accelerate (1 when run plainly)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1"))
    except ValueError:
        return 1


class Distributed:
    """Process-group glue for the trainer.

    Parameters
    ----------
    device : str
        The config's device. With several processes, each process uses accelerate's device for its local rank
        (the CPU when ``device`` is ``"cpu"``).
    """

    def __init__(self, device: str) -> None:
        import torch

        self.world_size = launched_world_size()
        self.accelerator = None
        if self.world_size > 1:
            from accelerate import Accelerator

            self.accelerator = Accelerator(cpu=(device == "cpu"), mixed_precision="no")
            self.rank = int(self.accelerator.process_index)
            self.device = self.accelerator.device
        else:
            from engine.train.device import resolve_device

            self.rank = 0
            self.device = resolve_device(device)
        self._torch = torch

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This process's share of a global batch."""
        return rows[self.rank :: self.world_size] if self.active else rows

    def broadcast_model(self, model) -> None:
        """Copy rank 0's parameters and buffers to every process."""
        if not self.active:
            return
        import torch.distributed as dist

        with self._torch.no_grad():
            for t in model.state_dict().values():
                dist.broadcast(t, src=0)

    def average_gradients(self, params) -> None:
        """Average ``.grad`` of ``params`` over processes (missing gradients count as zeros)."""
        if not self.active:
            return
        import torch.distributed as dist

        torch = self._torch
        params = [p for p in params if p.requires_grad]
        if not params:
            return
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.reshape(-1) for g in grads])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world_size
        offset = 0
        for p in params:
            n = p.numel()
            p.grad = flat[offset : offset + n].view_as(p).clone()
            offset += n

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on any (e.g. a cancel request seen by one process)."""
        if not self.active:
            return bool(flag)
        import torch.distributed as dist

        t = self._torch.tensor([1.0 if flag else 0.0], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def mean(self, value: float) -> float:
        """The mean of a float over processes."""
        if not self.active:
            return float(value)
        import torch.distributed as dist

        t = self._torch.tensor([float(value)], dtype=self._torch.float64, device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return float(t.item()) / self.world_size

    def barrier(self) -> None:
        if self.active:
            self.accelerator.wait_for_everyone()
