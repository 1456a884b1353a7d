"""The embedding prior: a brain prediction → the image embedding it most likely stands for.

A brain encoder's predictions are shrunk and noisy copies of the image embeddings the generator was trained on; the
generator, fed one, draws something between images (demo, build 5: the judge names the object in 47 % of samples
while a linear probe reads the right category from the same predictions for 97 % of test images). MindEye maps its
backbone's output into the image-embedding distribution before generating (its diffusion prior); this is the
deterministic form of that step: a small MLP fitted on the training trials, prediction → the true embedding of the
seen image (MSE, in standardised units; hidden layers of 512, or the embedding's width when wider), with Gaussian
noise added to its inputs during fitting because the predictions of the training trials are in-sample (closer to the
truth than a held-out trial's).

Used for vector embeddings only (``(batch, D)``): ``finetune`` fits it first, the adapter then trains on its output,
and ``reconstruct`` applies it to the brain's predictions (never to the oracle's true embeddings).
Saved as a folder: ``config.json`` + ``model.safetensors``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from engine.errors import CheckpointError
from engine.events import EtaClock, Metric, Progress
from engine.jsonfile import read_object
from engine.models.construction import MODEL_BUILD_LOCK

PRIOR_BATCH = 256
PRIOR_HIDDEN = 512  # at least; as wide as the embedding when that is wider (CLIP ViT-L: 768)
PRIOR_LR = 1e-3


class EmbeddingPrior(nn.Module):
    """Prediction ``(batch, dim)`` → embedding ``(batch, dim)``: standardise, MLP (two GELU hidden layers, dropout
    after the first while fitting), un-standardise with the true embeddings' statistics.

    Its weights are drawn from the caller's generator, never from torch's global random stream, so fitting one does
    not move the random draws of the job around it.
    """

    def __init__(self, dim: int, hidden: int = PRIOR_HIDDEN, dropout: float = 0.2, *, generator=None) -> None:
        super().__init__()
        self.dim, self.hidden, self.dropout = int(dim), int(hidden), float(dropout)
        for name in ("in_mean", "out_mean"):
            self.register_buffer(name, torch.zeros(dim))
        for name in ("in_std", "out_std"):
            self.register_buffer(name, torch.ones(dim))
        with torch.random.fork_rng(devices=[]):  # nn.Linear's own initial draw, undone; replaced below
            self.layers = nn.ModuleList([nn.Linear(a, b) for a, b in ((dim, hidden), (hidden, hidden), (hidden, dim))])
        gen = generator if generator is not None else torch.Generator().manual_seed(0)
        with torch.no_grad():
            for lin in self.layers:  # nn.Linear's own default: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
                bound = 1 / math.sqrt(lin.in_features)
                nn.init.uniform_(lin.weight, -bound, bound, generator=gen)
                nn.init.uniform_(lin.bias, -bound, bound, generator=gen)

    def net(self, z: torch.Tensor, generator=None) -> torch.Tensor:
        """The MLP on standardised inputs; with ``generator``, dropout masks drawn from it (fitting)."""
        h = nn.functional.gelu(self.layers[0](z))
        if generator is not None and self.dropout:
            keep = torch.rand(h.shape, generator=generator).to(h.device) >= self.dropout
            h = h * keep / (1 - self.dropout)
        return self.layers[2](nn.functional.gelu(self.layers[1](h)))

    def standardise(self, predictions: torch.Tensor) -> torch.Tensor:
        return (predictions - self.in_mean) / self.in_std

    def forward(self, predictions: torch.Tensor) -> torch.Tensor:
        return self.net(self.standardise(predictions)) * self.out_std + self.out_mean

    def map_array(self, predictions: np.ndarray, batch: int = 4096) -> np.ndarray:
        """``forward`` on a numpy array ``(n, dim)``, in batches on the prior's device; float32 numpy out."""
        dev = self.in_mean.device
        out = np.empty((len(predictions), self.dim), np.float32)
        with torch.no_grad():
            for s in range(0, len(predictions), batch):
                x = torch.from_numpy(np.asarray(predictions[s:s + batch], np.float32)).to(dev)
                out[s:s + batch] = self(x).float().cpu().numpy()
        return out

    def save(self, folder: str | Path) -> Path:
        from engine.atomic import atomic_dir, atomic_save_safetensors

        with atomic_dir(folder, overwrite=True) as tmp:
            (tmp / "config.json").write_text(json.dumps(
                {"class": "EmbeddingPrior", "dim": self.dim, "hidden": self.hidden, "dropout": self.dropout},
                indent=2) + "\n")
            atomic_save_safetensors(tmp / "model.safetensors", self.state_dict())
        return Path(folder)

    @classmethod
    def load(cls, folder: str | Path) -> "EmbeddingPrior":
        from safetensors.torch import load_file

        folder = Path(folder)
        try:
            meta = read_object(folder / "config.json")
            if meta.get("class") != "EmbeddingPrior":
                raise KeyError("class")
            with MODEL_BUILD_LOCK:  # see engine/models/construction.py
                prior = cls(meta["dim"], meta["hidden"], meta["dropout"])
            prior.load_state_dict(load_file(str(folder / "model.safetensors")))
        except (OSError, KeyError, TypeError, RuntimeError, json.JSONDecodeError) as e:
            raise CheckpointError(f"{folder}: not an embedding prior folder ({type(e).__name__}: {e})") from None
        return prior.eval()


def fit_embedding_prior(predictions: np.ndarray, targets: np.ndarray, *, steps: int, noise: float, seed: int,
                        cancel, device=None):
    """Job: fit an ``EmbeddingPrior`` on training pairs (prediction of a trial, true embedding of its image).

    ``noise`` is the standard deviation of the Gaussian noise added to the standardised predictions of each batch.
    Every draw (weights, batches, noise, dropout) comes from one generator seeded with ``seed``: torch's global
    stream does not move. Yields ``Metric`` (``prior_loss``) and ``Progress``; returns the prior in eval mode.
    """
    x = torch.as_tensor(np.asarray(predictions, np.float32))
    y = torch.as_tensor(np.asarray(targets, np.float32))
    gen = torch.Generator().manual_seed(seed)
    with MODEL_BUILD_LOCK:
        prior = EmbeddingPrior(x.shape[1], max(PRIOR_HIDDEN, x.shape[1]), generator=gen)
    prior.in_mean.copy_(x.mean(0))
    prior.in_std.copy_(x.std(0).clamp_min(1e-6))
    prior.out_mean.copy_(y.mean(0))
    prior.out_std.copy_(y.std(0).clamp_min(1e-6))
    z_in, z_out = prior.standardise(x), (y - prior.out_mean) / prior.out_std
    prior.to(device).train()
    opt = torch.optim.AdamW(prior.layers.parameters(), lr=PRIOR_LR, weight_decay=1e-2)
    clock = EtaClock(steps)
    for step in range(steps):
        cancel.raise_if_set()
        for g in opt.param_groups:
            g["lr"] = PRIOR_LR * 0.5 * (1 + math.cos(math.pi * step / steps))
        idx = torch.randint(0, len(x), (min(PRIOR_BATCH, len(x)),), generator=gen)
        inp = z_in[idx] + noise * torch.randn((len(idx), x.shape[1]), generator=gen)
        loss = ((prior.net(inp.to(device), generator=gen) - z_out[idx].to(device)) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % 100 == 0 or step == steps - 1:
            yield Metric("prior_loss", float(loss.detach()), step=step + 1)
            yield Progress(step + 1, steps, eta_s=clock.eta(step + 1), stage="embedding prior")
    return prior.eval()
