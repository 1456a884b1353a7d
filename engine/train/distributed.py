"""Several processes (GPUs, nodes) through accelerate; one process is the same code with every collective a no-op.

Launch a multi-process run with ``torchrun --nproc_per_node N -m engine.cli.main train ...`` or ``accelerate launch
--multi_gpu --num_processes N ...``. Each process builds the same model from the same seed (rank 0's weights are
broadcast to be sure), takes its share of every global batch (a contiguous block of rows, so the global batch size and
the data order do not depend on the number of processes), and the gradients are averaged over processes before each
optimizer step. Only rank 0 writes the run folder. On CPU the processes talk over gloo (``Accelerator(cpu=True)``).

One recipe for any number of processes
--------------------------------------
The contrastive terms (InfoNCE, SoftCLIP, BiMixCo) compare every sample with every other sample of the batch, and the
MoE load-balancing term depends on the batch's mean routing; computed per process they would see only a slice. So the
trainer gathers each process's outputs into the global batch (``gather_rows``: all-gather forward, all-reduce of the
gradient backward, so the local rows get the gradient of the global loss from every process) and every process
computes the same global loss; MoE routing statistics are summed over processes the same way (``sum_over_processes``
through ``engine.models.losses.global_batch``). Every process's local gradient is then N × that of the global loss, and
the averaging over N processes gives exactly the single-process gradient of the global batch. BiMixCo draws its
partners and weights for the global batch from the trainer's generator, which is in the same state on every process.
Dropout and router noise use the global torch generator, seeded per process and step so the processes draw
independent masks (one process over the whole batch would not repeat a mask either): with them the result matches a
single process in distribution; without them (``dropout: 0``, ``router_noise: 0``), to float tolerance.

Gradients are averaged in one flat all-reduce instead of wrapping the model in DistributedDataParallel: encoders return
dataclasses and have parameters a stage does not use (the MAE decoder while fine-tuning), which DDP handles poorly.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.distributed as dist


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

    def split_sizes(self, n: int) -> list[int]:
        """Rows of a global batch of ``n`` held by each process (contiguous blocks, sizes differing by at most 1)."""
        return [len(part) for part in np.array_split(np.arange(n), self.world_size)]

    def local_slice(self, n: int) -> slice:
        """This process's block of a global batch of ``n`` rows; blocks in rank order restore the batch's order."""
        if not self.active:
            return slice(0, n)
        sizes = self.split_sizes(n)
        start = sum(sizes[: self.rank])
        return slice(start, start + sizes[self.rank])

    def shard(self, rows: np.ndarray) -> np.ndarray:
        """This process's share of a global batch (``local_slice``)."""
        return rows[self.local_slice(len(rows))]

    def local_weight(self, n: int) -> float:
        """Factor for a loss averaged over this process's rows so that averaging gradients over processes gives the
        gradient of the mean over all ``n`` rows (1 when the blocks are equal)."""
        return self.world_size * (self.local_slice(n).stop - self.local_slice(n).start) / n if self.active else 1.0

    def gather_rows(self, x, n_global: int):
        """The global batch (n_global, ...) from this process's rows, in rank order; differentiable (see module)."""
        if not self.active or x is None:
            return x
        return _GatherRows.apply(x, self.split_sizes(n_global), self.rank)

    def gather_output(self, out, n_global: int):
        """An ``EncoderOutput`` with every batch tensor the losses read gathered into the global batch."""
        if not self.active:
            return out
        import dataclasses

        gather = self.gather_rows
        extras = dict(out.extras)
        if extras.get("blurry") is not None:
            extras["blurry"] = gather(extras["blurry"], n_global)
        return dataclasses.replace(out, embedding=gather(out.embedding, n_global),
                                   retrieval=gather(out.retrieval, n_global), extras=extras,
                                   caption=gather(getattr(out, "caption", None), n_global))

    def sum_over_processes(self, x):
        """``x`` summed over processes; differentiable (the gradient is summed over processes too)."""
        if not self.active:
            return x
        return _SumOverProcesses.apply(x)

    def seed_step(self, seed: int, step: int) -> None:
        """Seed the global torch generator (dropout, router noise) for this process and step: independent draws per
        process, reproducible on resume. A single process keeps its continuous generator."""
        if self.active:
            self._torch.manual_seed((int(seed) * 1_000_003 + int(step)) * 4099 + self.rank)

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

    def close(self) -> None:
        """Tear the process group down before the process exits. Left to the interpreter's exit, a process that
        outlives its peer can abort on gloo's "connection closed by peer" (SIGABRT; seen once under load)."""
        if not self.active:
            return
        import torch.distributed as dist

        if dist.is_initialized():
            dist.destroy_process_group()


class _GatherRows(torch.autograd.Function):
    """All-gather of row blocks of different sizes; backward: the summed gradient of this process's rows."""

    @staticmethod
    def forward(ctx, x, sizes, rank):
        ctx.sizes, ctx.rank = sizes, rank
        buf = x.new_zeros((max(sizes),) + tuple(x.shape[1:]))
        buf[: x.shape[0]] = x
        parts = [torch.empty_like(buf) for _ in sizes]
        dist.all_gather(parts, buf)
        return torch.cat([part[:n] for part, n in zip(parts, sizes)])

    @staticmethod
    def backward(ctx, grad):
        # Every process computed the global loss from the gathered batch: this process's rows get the sum of their
        # gradients over processes. An all-reduce works on every backend (gloo has no reduce-scatter).
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        start = sum(ctx.sizes[: ctx.rank])
        return grad[start : start + ctx.sizes[ctx.rank]], None, None


class _SumOverProcesses(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        out = x.clone()
        dist.all_reduce(out, op=dist.ReduceOp.SUM)
        return out

    @staticmethod
    def backward(ctx, grad):
        grad = grad.contiguous().clone()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)
        return grad
