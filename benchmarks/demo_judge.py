"""An independent judge of demo reconstructions: a classifier of object category and colour, trained here.

The demo image embedder defines the space the generator inverts, so judging reconstructions with it would grade the
generator in its own terms. The judge shares nothing with it: another architecture (strided conv net with batch norm and
a global max and mean over space), its own training images (``render_stimuli(n, seed=JUDGE_SEED)``, a seed no model
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

    def conv(cin, cout, k, stride):
        return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2), nn.BatchNorm2d(cout), nn.ReLU())

    class Judge(nn.Module):
        def __init__(self):
            super().__init__()
            # Strided from the first layer: cheap enough to train inside the benchmark on a loaded CPU.
            self.features = nn.Sequential(conv(3, 32, 5, 2), conv(32, 64, 3, 2), conv(64, 96, 3, 1),
                                          conv(96, 128, 3, 2), conv(128, 128, 3, 1))
            self.category = nn.Linear(256, n_categories)
            self.colour = nn.Linear(256, n_colours)

        def forward(self, x):
            f = self.features(x)
            f = torch.cat([f.amax(dim=(2, 3)), f.mean(dim=(2, 3))], dim=1)  # where the object is does not matter
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

    def __init__(self, n_images: int = 12000, epochs: int = 4, batch: int = 64, lr: float = 3e-3) -> None:
        import torch

        from engine.data.demo.stimuli import render_stimuli

        t0 = time.perf_counter()
        self.recipe = self._recipe(n_images, epochs, batch, lr)
        train = render_stimuli(n_images, seed=JUDGE_SEED)
        self.categories, self.colours = train.categories, train.colour_names
        self.net = _net(len(self.categories), len(self.colours))
        x_all = _to_tensor(train.images)
        cat = torch.as_tensor(train.labels)
        col = torch.as_tensor(train.attributes["colour"])
        opt = torch.optim.AdamW(self.net.parameters(), lr=lr, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(JUDGE_SEED)
        total = epochs * -(-n_images // batch)
        step = 0
        self.net.train()
        for _ in range(epochs):
            order = torch.randperm(n_images, generator=gen)
            for s in range(0, n_images, batch):
                for g in opt.param_groups:
                    g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * step / total))
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

    def save(self, folder) -> None:
        """Weights (safetensors) + info (JSON), so a re-run of the benchmark in the same work folder reuses them."""
        import json
        from pathlib import Path

        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        save_file({k: v.contiguous() for k, v in self.net.state_dict().items()}, str(folder / "judge.safetensors"))
        (folder / "judge.json").write_text(json.dumps({**self.info(), "recipe": self.recipe}, indent=2) + "\n")

    @classmethod
    def load_or_train(cls, folder, **recipe) -> "DemoJudge":
        """The judge saved in ``folder`` by the same recipe, or a new one trained (and saved there)."""
        import json
        from pathlib import Path

        from safetensors.torch import load_file

        folder = Path(folder)
        meta = folder / "judge.json"
        if meta.is_file() and json.loads(meta.read_text()).get("recipe") == cls._recipe(**recipe):
            judge = cls.__new__(cls)
            info = json.loads(meta.read_text())
            from engine.data.demo.stimuli import CATEGORIES, COLOURS

            judge.categories, judge.colours = list(CATEGORIES), [c[0] for c in COLOURS]
            judge.net = _net(len(judge.categories), len(judge.colours))
            judge.net.load_state_dict(load_file(str(folder / "judge.safetensors")))
            judge.net.eval()
            judge.train_seconds, judge.heldout, judge.recipe = info["train_seconds"], info["heldout_fresh_renders"], \
                info["recipe"]
            return judge
        judge = cls(**recipe)
        judge.save(folder)
        return judge

    @staticmethod
    def _recipe(n_images: int = 12000, epochs: int = 4, batch: int = 64, lr: float = 3e-3) -> dict:
        return {"n_images": n_images, "epochs": epochs, "batch": batch, "lr": lr, "seed": JUDGE_SEED}

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
        return {"seed": JUDGE_SEED, "architecture": "5 convs (32-128 ch, strided, batch norm), global max + mean",
                "train_seconds": self.train_seconds, "heldout_fresh_renders": self.heldout}
