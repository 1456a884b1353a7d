"""Several processes on CPU (torchrun + accelerate, gloo) train like one process over the global batch.

Two processes × B rows must equal one process × 2B rows: the contrastive terms (InfoNCE, SoftCLIP, BiMixCo) and the
MoE load-balancing term see the gathered global batch, and the gradient of each process's rows is that of the global
loss. Dropout and router noise are off so the comparison is exact to float tolerance.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from engine.cli.main import main
from engine.train.run import Run

# torchrun is torch.distributed.run; calling it through this interpreter needs no console script on PATH.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
DETERMINISTIC = {
    "mlp": ["--set", "model.params.dropout=0.0", "--set", "model.params.blurry=true",
            "--set", "model.params.blurry_dropout=0.0"],
    "moe": ["--set", "model.params.dropout=0.0", "--set", "model.params.router_noise=0.0"],
}


def _losses(run_dir) -> list[tuple[str, int, float]]:
    out = []
    for line in (run_dir / "events.jsonl").read_text().splitlines():
        e = json.loads(line)
        if e.get("event") == "Metric" and e.get("split") == "train" and e["name"].startswith("loss"):
            out.append((e["name"], e["step"], e["value"]))
    return out


@pytest.mark.parametrize("kind", ["mlp", "moe"])
def test_two_processes_match_one_over_the_global_batch(tiny_subject_path, tmp_path, kind):
    # The default loss: BiMixCo for the first third of training, then SoftCLIP, plus MSE (and the MoE's balancing
    # term, the MLP's low-level head); batch 16 = 2 processes × 8.
    args = ["train", "--preset", f"tiny-{kind}", "--set", "epochs=3", "--set", "log_every=1", *DETERMINISTIC[kind]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "engine.cli.main", *args,
                          "--data", str(tiny_subject_path), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=240, env=env)
    # The ranks' own errors come first in stderr, torchrun's summary last: show both.
    assert two.returncode == 0, two.stderr[:3000] + "\n...\n" + two.stderr[-1500:]
    assert main([*args, "--data", str(tiny_subject_path), "--out", str(tmp_path / "one")]) == 0

    assert Run.open(tmp_path / "two").provenance()["device"]["world_size"] == 2
    one_losses, two_losses = _losses(tmp_path / "one"), _losses(tmp_path / "two")
    names = {n for n, _, _ in one_losses}
    assert {"loss_bimixco", "loss_softclip"} <= names  # both contrastive phases ran
    assert ("loss_load_balance" in names) == (kind == "moe") and ("loss_blurry" in names) == (kind == "mlp")
    assert [(n, s) for n, s, _ in one_losses] == [(n, s) for n, s, _ in two_losses]
    np.testing.assert_allclose([v for *_, v in two_losses], [v for *_, v in one_losses], rtol=1e-4, atol=1e-5)
    a = load_file(str(tmp_path / "one" / "model" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "encoder" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-4, rtol=1e-4, msg=k)


# --- the collectives on their own: gradients of uneven blocks --------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _global_losses(pred, target, probs, mix, dist):
    """Every batch-level term of the trainer's loss, on the global batch."""
    from engine.models.losses import batch_mean, bimixco_loss, global_batch, info_nce, load_balance_loss, soft_clip_loss

    n = mix.lam.shape[0]
    with global_batch(dist.sum_over_processes) if dist is not None else torch.enable_grad():
        balance = load_balance_loss(batch_mean(probs, dim=(0,)))
    if dist is not None:
        pred, target = dist.gather_rows(pred, n), dist.gather_rows(target, n)
    return (info_nce(pred, target) + soft_clip_loss(pred, target) + bimixco_loss(pred, target, mix.lam, mix.perm)
            + 10 * balance)


def _batch(n=5):
    from engine.models.losses import mixco_batch

    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    target = torch.randn(n, 4, generator=g)
    mix = mixco_batch(x, prob=1.0, generator=torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    model = torch.nn.Linear(6, 4 + 3)
    return mix.betas, target, mix, model


def _split(model, x):
    out = model(x)
    return out[:, :4], out[:, 4:].softmax(-1)


def _worker(rank: int, port: int, queue) -> None:
    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from engine.train.distributed import Distributed

    dist = Distributed("cpu")
    x, target, mix, model = _batch()
    local = dist.local_slice(len(x))
    pred, probs = _split(model, x[local])
    loss = _global_losses(pred, target[local], probs, mix, dist)
    loss.backward()
    dist.average_gradients(list(model.parameters()))
    queue.put((rank, local.stop - local.start, float(loss), [p.grad.numpy().copy() for p in model.parameters()]))
    dist.barrier()


def test_gathered_losses_give_the_single_process_gradient_with_uneven_blocks():
    x, target, mix, model = _batch()
    pred, probs = _split(model, x)
    loss = _global_losses(pred, target, probs, mix, None)
    loss.backward()
    expected = [p.grad.numpy() for p in model.parameters()]

    ctx = torch.multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(queue.get(timeout=120) for _ in procs)
    for p in procs:
        p.join(timeout=60)
        assert p.exitcode == 0
    assert [r[1] for r in results] == [3, 2]  # 5 rows: uneven blocks
    for _, _, value, grads in results:
        assert value == pytest.approx(float(loss.detach()), rel=1e-5)
        for g, e in zip(grads, expected):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)
