"""Train the demo image embedder (``resources/models/demo-image-embedder/``) with a fixed recipe and seed.

The embedder stands in for CLIP on the demo subject: a small conv net (``engine.models.embedders.demo``) whose pooled
vector and spatial tokens must carry what was seen, so that the demo generator can invert it. The renderer is free, so
it is trained supervised on what the demo world varies, on ``n_images`` rendered stimuli:

- linear heads on the pooled vector: category, colour, background type and background colour (cross-entropy); x, y
  and size (MSE, weight ``geometry_weight``); rotation as (cos kθ, sin kθ) with k the object's rotational symmetry
  (masked for circles and rings) and left/right flip for the asymmetric objects;
- a 16×16 thumbnail of the image decoded linearly from the pooled vector, and another from the tokens (each token its
  4×4 patch), so both keep the layout, background texture and colours (MSE, weight ``pixel_weight``).

Usage::

    python resources/build/build_demo_embedder.py --out /tmp/demo-image-embedder     # then compare, and
    python resources/build/build_demo_embedder.py --replace                            # overwrite the shipped one

Replacing the embedder changes every demo target: rebuild the demo generator afterwards
(``python resources/build/build_demo_generator.py``) and clear the embedding cache (``~/.cache/neurolens/embeddings``).
The held-out figures (heads on ``heldout_images`` fresh renders of another seed) are recorded in ``config.json``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

# Rotational symmetry order of each category's outline (0: none to learn; 1: a full turn).
SYMMETRY = {"circle": 0, "square": 4, "triangle": 3, "star": 5, "cross": 4, "ring": 0, "house": 1, "tree": 1,
            "fish": 1, "car": 1, "face": 1, "flower": 6}
MIRRORED = ("house", "fish", "car")  # categories whose left/right flip changes the picture
THUMB = 16


def attribute_targets(stim, seed: int) -> dict:
    """Per-image training targets of ``render_stimuli(len(stim), seed)`` as numpy arrays (see the module docstring)."""
    a = stim.attributes
    cats = [stim.categories[i] for i in stim.labels]
    k = np.array([SYMMETRY[c] for c in cats], np.float32)
    th = np.deg2rad(a["rotation"]) * k
    thumb = stim.images.reshape(len(stim), THUMB, 64 // THUMB, THUMB, 64 // THUMB, 3).mean((2, 4)) / 127.5 - 1.0
    return {"category": stim.labels, "colour": a["colour"], "background": a["background"],
            "background_colour": a["background_colour"],
            "geometry": np.stack([(a["x"] - 0.5) * 4, (a["y"] - 0.5) * 4, (a["scale"] - 0.215) / 0.05], 1),
            "rotation": np.stack([np.cos(th), np.sin(th)], 1), "rotation_mask": (k > 0).astype(np.float32),
            "flip": _flips(seed, len(stim)), "flip_mask": np.array([c in MIRRORED for c in cats], np.float32),
            "thumb": thumb.astype(np.float32)}


def _flips(seed: int, n: int) -> np.ndarray:
    """The renderer's left/right flip of images ``0..n-1`` of ``seed`` (redrawn from each image's own generator)."""
    from engine.data.demo.stimuli import _draw_attributes

    return np.array([_draw_attributes(np.random.default_rng([seed, i]))["flip"] for i in range(n)], np.float32)


def build_heads(dim: int, token_dim: int, n: dict):
    import torch

    return torch.nn.ModuleDict({
        "category": torch.nn.Linear(dim, n["category"]), "colour": torch.nn.Linear(dim, n["colour"]),
        "background": torch.nn.Linear(dim, n["background"]),
        "background_colour": torch.nn.Linear(dim, n["background_colour"]),
        "geometry": torch.nn.Linear(dim, 3), "rotation": torch.nn.Linear(dim, 2), "flip": torch.nn.Linear(dim, 1),
        "thumb": torch.nn.Linear(dim, THUMB * THUMB * 3), "token_pixels": torch.nn.Linear(token_dim, 48)})


def losses(net, heads, x, t: dict, pixel_weight: float, geometry_weight: float) -> dict:
    """Every term of the objective for one batch (``t``: tensors of ``attribute_targets``)."""
    import torch.nn.functional as F

    pooled, tok = net(x)
    b, g = x.shape[0], net.config.grid
    per = THUMB // g  # thumbnail pixels per token side
    tok_img = heads["token_pixels"](tok).view(b, g, g, per, per, 3).permute(0, 1, 3, 2, 4, 5).reshape(b, THUMB,
                                                                                                    THUMB, 3)
    rot_err = ((heads["rotation"](pooled) - t["rotation"]) ** 2).sum(1)
    flip_err = F.binary_cross_entropy_with_logits(heads["flip"](pooled)[:, 0], t["flip"], reduction="none")
    return {"category": F.cross_entropy(heads["category"](pooled), t["category"]),
            "colour": F.cross_entropy(heads["colour"](pooled), t["colour"]),
            "background": F.cross_entropy(heads["background"](pooled), t["background"]),
            "background_colour": F.cross_entropy(heads["background_colour"](pooled), t["background_colour"]),
            "geometry": geometry_weight * F.mse_loss(heads["geometry"](pooled), t["geometry"]),
            "rotation": (rot_err * t["rotation_mask"]).sum() / t["rotation_mask"].sum().clamp_min(1),
            "flip": (flip_err * t["flip_mask"]).sum() / t["flip_mask"].sum().clamp_min(1),
            "thumb": pixel_weight * F.mse_loss(heads["thumb"](pooled).view(b, THUMB, THUMB, 3), t["thumb"]),
            "token_pixels": pixel_weight * F.mse_loss(tok_img, t["thumb"])}


def heldout_scores(net, heads, stim, seed: int, input_size: int) -> dict:
    """Accuracy / R² of the heads on fresh renders (linear read-outs of the pooled vector)."""
    import torch

    from engine.models.embedders.demo import normalise

    t = attribute_targets(stim, seed)
    with torch.no_grad():
        pooled = torch.cat([net(normalise(stim.images[i:i + 256], input_size))[0] for i in range(0, len(stim), 256)])
        out = {k: heads[k](pooled).numpy() for k in ("category", "colour", "background", "background_colour",
                                                     "geometry", "rotation", "thumb")}

    def r2(pred, true):
        return float(1 - ((pred - true) ** 2).mean() / true.var())

    m = t["rotation_mask"] > 0
    thumb_true = t["thumb"].reshape(len(stim), -1)
    return {"category_acc": float((out["category"].argmax(1) == t["category"]).mean()),
            "colour_acc": float((out["colour"].argmax(1) == t["colour"]).mean()),
            "background_acc": float((out["background"].argmax(1) == t["background"]).mean()),
            "background_colour_acc": float((out["background_colour"].argmax(1) == t["background_colour"]).mean()),
            "x_r2": r2(out["geometry"][:, 0], t["geometry"][:, 0]), "y_r2": r2(out["geometry"][:, 1],
                                                                                t["geometry"][:, 1]),
            "scale_r2": r2(out["geometry"][:, 2], t["geometry"][:, 2]),
            "rotation_r2": r2(out["rotation"][m], t["rotation"][m]),
            "thumbnail_r2": r2(out["thumb"], thumb_true)}


def parse_args(argv) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, help="output folder (default: a sibling of the shipped folder, '.new')")
    p.add_argument("--replace", action="store_true", help="write into the shipped folder")
    p.add_argument("--n-images", type=int, default=24000)
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--geometry-weight", type=float, default=5.0, help="weight of the x, y, size regression loss")
    p.add_argument("--pixel-weight", type=float, default=5.0, help="weight of the two thumbnail losses")
    p.add_argument("--heldout-images", type=int, default=2000)
    p.add_argument("--seed", type=int, default=0, help="torch seed")
    p.add_argument("--train-seed", type=int, default=1000, help="stimulus seed of the training images")
    p.add_argument("--device", default="cpu")
    return p.parse_args(argv)


def learning_rate(step: int, total: int, warm: int, lr: float) -> float:
    """The learning rate of ``step`` (0-based) of ``total``: linear warm-up over ``warm`` steps, then cosine to 0."""
    return lr * (step + 1) / warm if step < warm else \
        0.5 * lr * (1 + np.cos(np.pi * (step - warm) / max(1, total - warm)))


def recipe_of(args, scores: dict, train_seconds: float) -> dict:
    """What ``config.json`` records of how the embedder was trained, with its held-out ``scores``."""
    import torch

    return {"script": "resources/build/build_demo_embedder.py", "n_images": args.n_images, "epochs": args.epochs,
            "batch_size": args.batch_size, "lr": args.lr, "schedule": "5% warm-up, cosine",
            "geometry_weight": args.geometry_weight, "pixel_weight": args.pixel_weight, "torch_seed": args.seed,
            "train_seed": args.train_seed, "heldout_seed": args.train_seed + 1,
            "heldout_images": args.heldout_images,
            "heads": {"category": "class", "colour": "class", "background": "class", "background_colour": "class",
                      "x": "reg", "y": "reg", "scale": "reg", "rotation": "cos/sin of k*angle", "flip": "binary"},
            "objectives": ["linear attribute heads on the pooled vector",
                           "16x16 thumbnail from the pooled vector", "16x16 thumbnail from the tokens"],
            "heldout": scores, "torch": torch.__version__, "device": args.device,
            "train_seconds": train_seconds}


def main(argv=None) -> int:
    import torch

    from engine.data.demo.stimuli import BACKGROUND_COLOURS, BACKGROUNDS, CATEGORIES, COLOURS, render_stimuli
    from engine.models.embedders.demo import (DemoEmbedderConfig, DemoEmbedderNet, default_folder, normalise,
                                              save_demo_embedder)

    args = parse_args(argv)
    out = default_folder() if args.replace else (args.out or default_folder().with_name("demo-image-embedder.new"))

    torch.manual_seed(args.seed)
    if args.device == "cpu":
        torch.set_num_threads(1)  # same numbers on every machine; one core of a shared machine
    dev = torch.device(args.device)
    train = render_stimuli(args.n_images, seed=args.train_seed)
    held = render_stimuli(args.heldout_images, seed=args.train_seed + 1)
    cfg = DemoEmbedderConfig()
    net = DemoEmbedderNet(cfg).to(dev)
    sizes = {"category": len(CATEGORIES), "colour": len(COLOURS), "background": len(BACKGROUNDS),
             "background_colour": len(BACKGROUND_COLOURS)}
    heads = build_heads(cfg.dim, cfg.token_dim, sizes).to(dev)
    params = [*net.parameters(), *heads.parameters()]
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    targets = {k: torch.as_tensor(v).to(dev) for k, v in attribute_targets(train, args.train_seed).items()}
    for k in ("category", "colour", "background", "background_colour"):
        targets[k] = targets[k].long()
    n = len(train)
    per_epoch = -(-n // args.batch_size)
    total = args.epochs * per_epoch
    warm = max(1, total // 20)
    gen = torch.Generator().manual_seed(args.seed)
    t0 = time.perf_counter()
    step = 0
    for epoch in range(args.epochs):
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, args.batch_size):
            lr = learning_rate(step, total, warm, args.lr)
            for group in opt.param_groups:
                group["lr"] = lr
            step += 1
            i = order[s:s + args.batch_size]
            x = normalise(train.images[i.numpy()], cfg.input_size, dev)
            terms = losses(net, heads, x, {k: v[i.to(dev)] for k, v in targets.items()}, args.pixel_weight,
                           args.geometry_weight)
            loss = sum(terms.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step % 100 == 0:
                print(f"step {step}/{total} ({time.perf_counter() - t0:.0f} s): loss {loss.item():.3f} "
                      + " ".join(f"{k} {v.item():.3f}" for k, v in terms.items()), flush=True)
        net.eval()
        scores = heldout_scores(net.cpu(), heads.cpu(), held, args.train_seed + 1, cfg.input_size)
        net.to(dev).train()
        heads.to(dev)
        print(f"epoch {epoch + 1}/{args.epochs}: held-out " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()),
              flush=True)

    net.eval().cpu()
    save_demo_embedder(net, out, recipe=recipe_of(args, scores, round(time.perf_counter() - t0, 1)))
    print(f"wrote {out}; held-out: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
