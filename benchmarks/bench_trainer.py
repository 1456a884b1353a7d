"""Trainer overhead against a bare torch loop, and (on a GPU) a MindEyeV2-sized backbone step vs the bf16 peak.

CPU case: the same MLP encoder, the same batches (the trainer's seeded epoch order), the same loss and optimizer, once
through ``engine.train.trainer.train_job`` and once as a bare loop written here. Both are timed from model construction
to the last optimizer step (the trainer's data preparation, provenance, final evaluation and model saving are outside
the window, and checkpoints are turned off so the comparison is of the loop itself; its per-step work — cancel checks,
learning-rate schedule, events, loss logging — is inside). The two final models are compared weight by weight: identical weights prove the loops did the same work.
Runs alternate (and swap order every repeat); the median of each is reported, in wall time and in this process's CPU
time (``time.process_time``, which other programs loading a shared machine do not inflate; 1 torch thread).

GPU case (only when CUDA is present): one training step of MindEyeV2's backbone (15,724 voxels → hidden 4096 →
4 residual blocks → 256×1664 tokens + retrieval projector, about 2 B parameters), bf16 autocast, fused AdamW (as the
trainer on CUDA); achieved TFLOP/s (matmul FLOPs counted from the Linear layers, ×3 for forward + backward) as a
fraction of the GPU's dense bf16 peak, and the step time against its memory-bound limit: the bytes the optimizer and
the weight casts move per step (``step_bytes``: 28 B per parameter for AdamW, 18 B more per matmul weight for the
bf16 casts and reads) over the HBM bandwidth (``hbm_bandwidth``: torch's device properties, else a data-sheet table;
a measured device copy is reported beside it). At batch 32 the step is memory-bound, not compute-bound. On a CPU the
section reports itself unavailable.

Prints one JSON object and writes it to ``benchmarks/results/bench_trainer.json``.
Usage: ``nice python benchmarks/bench_trainer.py [--repeats 3] [--epochs 3] [--quick] [--gpu-only]``
"""

from __future__ import annotations

import argparse
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.results_io import report  # noqa: E402 - needs the path above

from engine.data.subject import Subject, TrialTable  # noqa: E402
from engine.events import Progress, Started  # noqa: E402
from engine.train.config import TrainConfig  # noqa: E402

N_TRAIN, N_TEST, N_VOXELS = 2048, 50, 4000


def synthetic_subject(seed: int = 0) -> Subject:
    """2,048 training trials + 50 test images × 2 repeats, 4,000 voxels linear in the images' pixels plus noise."""
    rng = np.random.default_rng(seed)
    n_images = N_TRAIN + N_TEST
    images = rng.integers(0, 256, size=(n_images, 32, 32, 3), dtype=np.uint8)
    feats = images.reshape(n_images, -1).astype(np.float32) / 255.0
    w = rng.standard_normal((feats.shape[1], N_VOXELS)).astype(np.float32) / np.sqrt(feats.shape[1])
    image_index = np.concatenate([np.arange(N_TRAIN), np.repeat(np.arange(N_TRAIN, n_images), 2)])
    repeat = np.concatenate([np.zeros(N_TRAIN, int), np.tile([0, 1], N_TEST)])
    split = np.concatenate([np.zeros(N_TRAIN, np.int8), np.ones(2 * N_TEST, np.int8)])
    n = len(image_index)
    betas = feats[image_index] @ w + rng.standard_normal((n, N_VOXELS)).astype(np.float32)
    trials = TrialTable(image_index=image_index, session=np.ones(n, np.int64), run=np.ones(n, np.int64),
                        repeat=repeat, split=split)
    return Subject(betas=betas, trials=trials, images=images, name="bench", provenance={"sources": ["bench"]})


def bench_config(epochs: int) -> TrainConfig:
    return TrainConfig.from_dict({
        "name": "bench", "epochs": epochs, "batch_size": 64, "seed": 0, "log_every": 10, "eval_every": 10_000,
        "checkpoint_every": 10**9,
        "model": {"kind": "mlp", "params": {"hidden": 512, "n_blocks": 2, "dropout": 0.15}},
        "data": {"embedder": "pixels"}, "loss": {"contrastive_kind": "mindeye", "mixco_fraction": 0.33},
    }).validate()


def run_trainer(cfg: TrainConfig, subject: Subject, out: Path) -> tuple[float, float, dict]:
    from engine.train.trainer import train_job

    t_start = t_end = c_start = c_end = None
    job = train_job(cfg, subject, out)
    while True:
        try:
            ev = next(job)
        except StopIteration:
            break
        if isinstance(ev, Started):
            t_start, c_start = time.perf_counter(), time.process_time()
        elif isinstance(ev, Progress) and ev.total and ev.step == ev.total:
            t_end, c_end = time.perf_counter(), time.process_time()
    from safetensors.torch import load_file

    return t_end - t_start, c_end - c_start, load_file(str(out / "model" / "encoder" / "model.safetensors"))


def run_bare(cfg: TrainConfig, subject: Subject) -> tuple[float, float, dict]:
    """The same work as the trainer's loop, written plainly (data prepared outside the timed window)."""
    from engine.models.losses import encoder_loss, mixco_batch
    from engine.models.registry import build_encoder
    from engine.train.dataset import prepare_data
    from engine.train.schedule import learning_rate
    from engine.train.stages import epoch_order

    data = prepare_data(subject, cfg.data)
    loss_cfg = cfg.loss_config()
    t0, c0 = time.perf_counter(), time.process_time()
    torch.manual_seed(cfg.seed)
    np.random.seed(cfg.seed)
    random.seed(cfg.seed)
    model = build_encoder("mlp", cfg.model_config(), n_voxels={subject.name: data.n_voxels},
                          target_shape=data.target_shape)
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    groups = model.param_groups("all", subject=subject.name, weight_decay=cfg.optim.weight_decay)
    params = [p for g in groups for p in g["params"]]
    opt = torch.optim.AdamW(groups, lr=cfg.optim.lr, betas=cfg.optim.betas)
    n = data.train_betas.shape[0]
    nb = n // cfg.batch_size
    total = cfg.epochs * nb
    step = 0
    model.train()
    for epoch in range(cfg.epochs):
        order = epoch_order(cfg.seed, 0, epoch, n)
        for b in range(nb):
            rows = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            lr = learning_rate(cfg.optim, step, total)
            for g in opt.param_groups:
                g["lr"] = lr
            x = torch.from_numpy(data.train_betas[rows])
            y = torch.from_numpy(data.targets[data.train_image[rows]])
            progress = step / total
            mix = mixco_batch(x, beta=loss_cfg.mixco_beta, prob=loss_cfg.mixco_prob, generator=gen) \
                if loss_cfg.uses_mixco(progress) else None
            out = model(mix.betas if mix is not None else x, subject=subject.name)
            loss, _ = encoder_loss(out, y, loss_cfg, progress=progress, mix=mix)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, cfg.optim.grad_clip)
            opt.step()
            step += 1
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    return elapsed, cpu, {k: v.detach().clone() for k, v in model.state_dict().items()}


def cpu_overhead(repeats: int, epochs: int) -> dict:
    subject = synthetic_subject()
    cfg = bench_config(epochs)
    steps = epochs * (N_TRAIN // cfg.batch_size)
    trainer_t, bare_t, trainer_c, bare_c = [], [], [], []
    same = True
    tmp = Path(tempfile.mkdtemp(prefix="bench-trainer-"))
    try:
        run_bare(cfg, subject)  # warm-up: imports, allocator, first-call overheads
        for r in range(repeats):
            # Alternate which loop runs first, so warm caches and machine-load drifts favour neither.
            if r % 2 == 0:
                tb, cb, wb = run_bare(cfg, subject)
                tt, ct, wt = run_trainer(cfg, subject, tmp / f"run{r}")
            else:
                tt, ct, wt = run_trainer(cfg, subject, tmp / f"run{r}")
                tb, cb, wb = run_bare(cfg, subject)
            bare_t.append(tb)
            trainer_t.append(tt)
            bare_c.append(cb)
            trainer_c.append(ct)
            same = same and all(torch.equal(wb[k], wt[k]) for k in wb)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mt, mb = statistics.median(trainer_t), statistics.median(bare_t)
    ct, cb = statistics.median(trainer_c), statistics.median(bare_c)
    return {
        "model": "MLP hidden 512, 2 blocks, 4000 voxels -> 64-d target, batch 64, BiMixCo then SoftCLIP + MSE",
        "steps": steps, "repeats": repeats, "torch_threads": torch.get_num_threads(),
        "trainer_s": [round(t, 3) for t in trainer_t], "bare_s": [round(t, 3) for t in bare_t],
        "trainer_ms_per_step": round(1000 * mt / steps, 2), "bare_ms_per_step": round(1000 * mb / steps, 2),
        "overhead_pct_wall": round(100 * (mt - mb) / mb, 2),
        "overhead_pct_wall_best": round(100 * (min(trainer_t) - min(bare_t)) / min(bare_t), 2),
        "trainer_cpu_s": [round(t, 3) for t in trainer_c], "bare_cpu_s": [round(t, 3) for t in bare_c],
        "overhead_pct_cpu": round(100 * (ct - cb) / cb, 2),
        "goal_pct": 5.0,
        "identical_weights": bool(same),
        "note": "checkpoints off inside the window (checkpoint_every larger than the run); events.jsonl writes, "
                "cancel checks, schedule and loss logging are inside it",
    }


# ----------------------------------------------------------------------------------------------------------------------
# GPU

DENSE_BF16_PEAK_TFLOPS = {"H100 SXM": 989.0, "H100 PCIe": 756.0, "H100": 989.0, "H200": 989.0, "A100": 312.0,
                          "L40S": 362.0, "RTX 4090": 165.0, "A6000": 155.0}


def _peak(name: str) -> tuple[str, float] | tuple[None, None]:
    for key in sorted(DENSE_BF16_PEAK_TFLOPS, key=len, reverse=True):
        parts = key.split()
        if all(p.lower() in name.lower() for p in parts):
            if key == "H100" and "pcie" in name.lower():
                continue
            return key, DENSE_BF16_PEAK_TFLOPS[key]
    return None, None


HBM_TB_S = {"H200": 4.8, "H100 SXM": 3.35, "H100 PCIe": 2.0, "H100": 3.35, "A100": 2.0, "L40S": 0.864,
            "RTX 4090": 1.008, "A6000": 0.768}
# Bytes one training step moves per parameter, besides activations (bf16 autocast, fp32 weights, fused AdamW):
BYTES_OPTIMIZER = 28  # AdamW reads weight, grad, exp_avg, exp_avg_sq (4 × 4 B) and writes weight and both moments
BYTES_CAST = 6  # autocast reads each fp32 matmul weight (4 B) and writes its bf16 copy (2 B)
BYTES_GRAD_CAST = 8  # the bf16 weight gradient is written (2), read (2) and written again as the fp32 .grad (4)
BYTES_MATMUL_READS = 4  # the bf16 copy is read by the forward and by the backward's input gradient (2 + 2)


def hbm_bandwidth(props, name: str) -> tuple[float | None, str]:
    """(bytes/s, source) of a GPU's memory: from torch's device properties (2 × memory clock × bus width, HBM/GDDR
    double data rate) when it reports them, else a table of data-sheet figures."""
    clock_khz, bus_bits = getattr(props, "memory_clock_rate", 0), getattr(props, "memory_bus_width", 0)
    if clock_khz and bus_bits:
        return 2.0 * clock_khz * 1e3 * bus_bits / 8, "device properties"
    for key in sorted(HBM_TB_S, key=len, reverse=True):
        if all(p.lower() in name.lower() for p in key.split()):
            return HBM_TB_S[key] * 1e12, f"data sheet ({key})"
    return None, "unknown GPU"


def step_bytes(model) -> dict:
    """Bytes the optimizer and the weight casts move in one step (see the BYTES_* constants)."""
    import torch

    matmul = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    total = sum(p.numel() for p in model.parameters() if p.requires_grad)
    per_step = (total * BYTES_OPTIMIZER
                + matmul * (BYTES_CAST + BYTES_GRAD_CAST + BYTES_MATMUL_READS))
    return {"params": total, "matmul_weights": matmul, "bytes": per_step}


def copy_bandwidth(dev, gib: float = 4.0) -> float:
    """Measured device-to-device copy bandwidth (bytes read + written per second), the best a step can stream."""
    import torch

    n = int(gib * 2**30 // 4)
    a = torch.empty(n, device=dev)
    b = torch.empty_like(a)
    b.copy_(a)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(5):
        b.copy_(a)
    torch.cuda.synchronize()
    bw = 5 * 2 * a.numel() * 4 / (time.perf_counter() - t0)
    del a, b
    torch.cuda.empty_cache()
    return bw


def gpu_backbone(batch: int = 32, steps: int = 10) -> dict:
    if not torch.cuda.is_available():
        return {"status": "unavailable: no GPU here", "device": "cpu", "memory_bound_ms": "unavailable (no GPU)"}
    from engine.models.losses import LossConfig, encoder_loss
    from engine.models.registry import build_encoder

    dev = torch.device("cuda:0")
    name = torch.cuda.get_device_name(dev)
    with dev:  # initialise the 2 B parameters on the GPU (seconds on the CPU)
        model = build_encoder("mlp", {"hidden": 4096, "n_blocks": 4, "dropout": 0.15}, n_voxels={"subj01": 15724},
                              target_shape=(256, 1664))
    model.to(dev)
    groups = model.param_groups("all", weight_decay=1e-2)
    opt = torch.optim.AdamW(groups, lr=3e-4, fused=True)  # as the trainer does on CUDA
    loss_cfg = LossConfig(contrastive_kind="softclip")
    x = torch.randn(batch, 15724, device=dev)
    y = torch.randn(batch, 256, 1664, device=dev)

    flops = {"fwd": 0}

    def count(mod, inp, out):
        flops["fwd"] += 2 * inp[0].numel() // inp[0].shape[-1] * mod.in_features * mod.out_features

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, torch.nn.Linear)]
    with torch.autocast("cuda", dtype=torch.bfloat16):
        model(x)
    for h in hooks:
        h.remove()

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            out = model(x)
            loss, _ = encoder_loss(out, y, loss_cfg, progress=0.5)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.perf_counter() - t0) / steps
    tflops = 3 * flops["fwd"] / dt / 1e12
    key, peak = _peak(name)
    moved = step_bytes(model)
    spec_bw, bw_source = hbm_bandwidth(torch.cuda.get_device_properties(dev), name)
    copy_bw = copy_bandwidth(dev)
    bound = None if spec_bw is None else moved["bytes"] / spec_bw
    return {"status": "ok", "device": name, "batch": batch, "params_M": round(moved["params"] / 1e6, 1),
            "step_ms": round(dt * 1000, 2), "matmul_tflop_per_step": round(3 * flops["fwd"] / 1e12, 3),
            "achieved_tflops": round(tflops, 1), "peak_key": key, "dense_bf16_peak_tflops": peak,
            "fraction_of_peak": None if peak is None else round(tflops / peak, 3),
            "bytes_moved_per_step_GB": round(moved["bytes"] / 1e9, 2),
            "bytes_per_param": {"optimizer": BYTES_OPTIMIZER, "weight_cast": BYTES_CAST,
                                "grad_cast": BYTES_GRAD_CAST, "matmul_reads": BYTES_MATMUL_READS},
            "hbm_TB_s": None if spec_bw is None else round(spec_bw / 1e12, 2), "hbm_source": bw_source,
            "memory_bound_ms": None if bound is None else round(bound * 1000, 2),
            "fraction_of_memory_bound": None if bound is None else round(bound / dt, 3),
            "measured_copy_TB_s": round(copy_bw / 1e12, 2),
            "memory_bound_at_copy_bandwidth_ms": round(moved["bytes"] / copy_bw * 1000, 2),
            "goal_fraction_of_memory_bound": 0.7,
            "max_memory_gb": round(torch.cuda.max_memory_allocated(dev) / 2**30, 1)}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (1 is steadiest on a shared machine)")
    ap.add_argument("--quick", action="store_true", help="1 repeat of 1 epoch for the CPU comparison")
    ap.add_argument("--gpu-only", action="store_true", help="skip the CPU comparison")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    repeats, epochs = (1, 1) if args.quick else (args.repeats, args.epochs)
    result = {"benchmark": "bench_trainer",
              "cpu_overhead": "skipped (--gpu-only)" if args.gpu_only else cpu_overhead(repeats, epochs),
              "gpu_backbone": gpu_backbone()}
    report(result, "bench_trainer")
    return result


if __name__ == "__main__":
    main()
