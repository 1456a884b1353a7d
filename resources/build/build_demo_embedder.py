"""Train the demo image embedder (``resources/models/demo-image-embedder/``) with a fixed recipe and seed.

The embedder stands in for CLIP on the demo subject: a small conv net (``engine.models.embedders.demo``) whose pooled
vector and spatial tokens must carry what was seen. It is trained on rendered demo stimuli with:

- heads on the pooled vector for the object's category and colour (cross-entropy) and its x, y and size (MSE);
- a low-resolution (8×8) reconstruction of the image from the tokens (MSE), so the tokens keep the layout;
- InfoNCE between the pooled vectors of two noisy views of each image (temperature 0.1).

Usage::

    python resources/build/build_demo_embedder.py --out /tmp/demo-image-embedder     # then compare, and
    python resources/build/build_demo_embedder.py --replace                            # overwrite the shipped one

Replacing the embedder changes every demo target: rebuild the demo generator's adapter afterwards
(``python resources/build/build_demo_generator.py --refit-adapter``), and clear the embedding cache
(``~/.cache/neurolens/embeddings``). The shipped weights record their recipe in ``config.json``; they were trained by
an earlier revision of this script that was not kept, with the same objectives and sizes, so a rebuild gives an
equivalent, not a bit-identical, model.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    import torch
    import torch.nn.functional as F

    from engine.data.demo.stimuli import render_stimuli
    from engine.models.embedders.demo import (DemoEmbedderConfig, DemoEmbedderNet, default_folder, normalise,
                                              save_demo_embedder)

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="output folder (default: a sibling of the shipped folder, '.new')")
    p.add_argument("--replace", action="store_true", help="write into the shipped folder")
    p.add_argument("--n-images", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--schedule", choices=("constant", "cosine"), default="constant",
                   help="learning rate: constant, or 5%% linear warm-up then cosine decay to zero")
    p.add_argument("--geometry-weight", type=float, default=1.0, help="weight of the x, y, size regression loss")
    p.add_argument("--seed", type=int, default=0, help="torch seed")
    p.add_argument("--train-seed", type=int, default=1000, help="stimulus seed of the training images")
    args = p.parse_args(argv)
    out = default_folder() if args.replace else (args.out or default_folder().with_name("demo-image-embedder.new"))

    torch.manual_seed(args.seed)
    torch.set_num_threads(1)  # same numbers on every machine
    train = render_stimuli(args.n_images, seed=args.train_seed)
    held = render_stimuli(300, seed=args.train_seed + 1)
    cfg = DemoEmbedderConfig()
    net = DemoEmbedderNet(cfg)
    n_cat, n_col = len(train.categories), len(train.colour_names)
    heads = torch.nn.ModuleDict({"category": torch.nn.Linear(cfg.dim, n_cat), "colour": torch.nn.Linear(cfg.dim, n_col),
                                 "geometry": torch.nn.Linear(cfg.dim, 3),
                                 "pixels": torch.nn.Linear(cfg.token_dim, 2 * 2 * 3)})
    opt = torch.optim.AdamW([*net.parameters(), *heads.parameters()], lr=args.lr, weight_decay=1e-4)

    def targets(s):
        a = s.attributes
        geo = np.stack([a["x"], a["y"], a["scale"] / 0.25], 1).astype(np.float32)
        small = s.images.reshape(len(s), 8, 8, 8, 8, 3).mean((2, 4)).astype(np.float32) / 255.0  # (n, 8, 8, 3)
        return (torch.as_tensor(s.labels), torch.as_tensor(a["colour"]), torch.as_tensor(geo),
                torch.as_tensor(small))

    x_all = normalise(train.images, cfg.input_size)
    cat, col, geo, small = targets(train)
    n = len(train)
    total = args.epochs * -(-n // args.batch_size)
    warm = max(1, total // 20)

    def lr_at(step: int) -> float:
        if args.schedule == "constant":
            return args.lr
        if step < warm:
            return args.lr * (step + 1) / warm
        return 0.5 * args.lr * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm)))

    t0 = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(n)
        for s in range(0, n, args.batch_size):
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            step += 1
            i = order[s : s + args.batch_size]
            x = x_all[i]
            v1 = x + 0.1 * torch.randn_like(x)
            v2 = x + 0.1 * torch.randn_like(x)
            (p1, tok), (p2, _) = net(v1), net(v2)
            g = cfg.grid  # tokens (B, g², D) → 2×2 pixels per token of the 8×8 thumbnail
            rec = heads["pixels"](tok).view(len(i), g, g, 2, 2, 3).permute(0, 1, 3, 2, 4, 5).reshape(len(i), 8, 8, 3)
            z1, z2 = F.normalize(p1, dim=1), F.normalize(p2, dim=1)
            logits = z1 @ z2.T / 0.1
            lab = torch.arange(len(i))
            loss = (F.cross_entropy(heads["category"](p1), cat[i]) + F.cross_entropy(heads["colour"](p1), col[i])
                    + args.geometry_weight * F.mse_loss(heads["geometry"](p1), geo[i]) + 10.0 * F.mse_loss(rec, small[i])
                    + 0.5 * (F.cross_entropy(logits, lab) + F.cross_entropy(logits.T, lab)))
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}/{args.epochs}: loss {loss.item():.3f}", flush=True)

    net.eval()
    with torch.no_grad():
        ph, _ = net(normalise(held.images, cfg.input_size))
        hc, hcol, hgeo, _ = targets(held)
        pg = heads["geometry"](ph)

        def r2(k):
            return float(1 - ((pg[:, k] - hgeo[:, k]) ** 2).mean() / hgeo[:, k].var())

        heldout = {"category_acc": float((heads["category"](ph).argmax(1) == hc).float().mean()),
                   "colour_acc": float((heads["colour"](ph).argmax(1) == hcol).float().mean()),
                   "x_r2": r2(0), "y_r2": r2(1), "scale_r2": r2(2)}
    recipe = {"script": "resources/build/build_demo_embedder.py", "n_images": args.n_images, "epochs": args.epochs,
              "batch_size": args.batch_size, "lr": args.lr, "schedule": args.schedule,
              "geometry_weight": args.geometry_weight, "torch_seed": args.seed, "train_seed": args.train_seed,
              "heads": {"category": "class", "colour": "class", "x": "reg", "y": "reg", "scale": "reg"},
              "objectives": ["heads", "8x8 reconstruction from tokens", "two-view InfoNCE"],
              "heldout": heldout, "torch": torch.__version__, "train_seconds": round(time.perf_counter() - t0, 1)}
    save_demo_embedder(net, out, recipe=recipe)
    print(f"wrote {out}; held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in heldout.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
