"""An independent judge of demo reconstructions: a classifier of object category and colour, trained here.

The demo image embedder defines the space the generator inverts, so judging reconstructions with it would grade the
generator in its own terms. The judge shares nothing with it: another architecture (max-pooled conv net with batch
norm and a global max over space), its own training images (``render_stimuli(n, seed=JUDGE_SEED)``, a seed no model
of the demo trains on) and its own seed. It trains with mild blur and noise so that it reads shapes and colours, not
the renderer's exact anti-aliasing. Held-out accuracy on fresh renders and on the ground-truth test images is
reported next to what it says about reconstructions, so a reader can see how far to trust it.
"""

from __future__ import annotations

import time

import numpy as np

JUDGE_SEED = 424242


def _net(n_categories: int, n_colours: int):
    import torch
    from torch import nn

    def block(cin, cout):
        return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(),
                             nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(), nn.MaxPool2d(2))

    class Judge(nn.Module):
        def __init__(self):
            super().__init__()
            self.features = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 96))
            self.category = nn.Linear(96, n_categories)
            self.colour = nn.Linear(96, n_colours)

        def forward(self, x):
            f = self.features(x).amax(dim=(2, 3))
            return self.category(f), self.colour(f)

    torch.manual_seed(JUDGE_SEED)
    return Judge()


def _to_tensor(images_u8: np.ndarray):
    import torch

    return torch.from_numpy(np.ascontiguousarray(images_u8)).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _augment(x, gen):
    """Random blur (3×3 box mixed in by a random amount) and pixel noise, per image."""
    import torch
    from torch.nn import functional as F

    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    a = torch.rand(x.shape[0], 1, 1, 1, generator=gen)
    return (1 - a) * x + a * blurred + 0.05 * torch.rand(x.shape[0], 1, 1, 1, generator=gen) * torch.randn(
        x.shape, generator=gen)


class DemoJudge:
    """Category and colour classifier of 64×64 demo images (see the module docstring)."""

    def __init__(self, n_images: int = 12000, epochs: int = 4, batch: int = 64) -> None:
        import torch

        from engine.data.demo.stimuli import render_stimuli

        t0 = time.perf_counter()
        train = render_stimuli(n_images, seed=JUDGE_SEED)
        self.categories, self.colours = train.categories, train.colour_names
        self.net = _net(len(self.categories), len(self.colours))
        x_all = _to_tensor(train.images)
        cat = torch.as_tensor(train.labels)
        col = torch.as_tensor(train.attributes["colour"])
        opt = torch.optim.AdamW(self.net.parameters(), lr=2e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(JUDGE_SEED)
        total = epochs * -(-n_images // batch)
        step = 0
        self.net.train()
        for _ in range(epochs):
            order = torch.randperm(n_images, generator=gen)
            for s in range(0, n_images, batch):
                for g in opt.param_groups:
                    g["lr"] = 2e-3 * 0.5 * (1 + np.cos(np.pi * step / total))
                step += 1
                i = order[s:s + batch]
                lc, lo = self.net(_augment(x_all[i], gen))
                loss = torch.nn.functional.cross_entropy(lc, cat[i]) + torch.nn.functional.cross_entropy(lo, col[i])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.net.eval()
        self.train_seconds = round(time.perf_counter() - t0, 1)
        held = render_stimuli(1000, seed=JUDGE_SEED + 1)
        c, o = self.predict(held.images)
        self.heldout = {"category_acc": float((c == held.labels).mean()),
                        "colour_acc": float((o == held.attributes["colour"]).mean()), "n": len(held)}

    def predict(self, images_u8: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(category index, colour index) per uint8 image ``(N, 64, 64, 3)``."""
        import torch

        cats, cols = [], []
        with torch.no_grad():
            for s in range(0, len(images_u8), 256):
                lc, lo = self.net(_to_tensor(images_u8[s:s + 256]))
                cats.append(lc.argmax(1).numpy())
                cols.append(lo.argmax(1).numpy())
        return np.concatenate(cats), np.concatenate(cols)

    def info(self) -> dict:
        return {"seed": JUDGE_SEED, "architecture": "4 conv blocks (16-96 ch, batch norm, max-pool), global max",
                "train_seconds": self.train_seconds, "heldout_fresh_renders": self.heldout}
