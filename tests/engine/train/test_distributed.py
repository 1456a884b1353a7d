"""Two processes on CPU (torchrun + accelerate, gloo) give the same model as one process."""

from __future__ import annotations

import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from engine.cli.main import main
from engine.train.run import Run

# torchrun is torch.distributed.run; calling it through this interpreter needs no console script on PATH.
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]
# MSE only and no dropout: the mean of the two half-batch gradients is then the full-batch gradient.
ARGS = ["train", "--preset", "tiny-mlp", "--set", "loss.contrastive=0", "--set", "model.params.dropout=0.0"]


def test_two_processes_match_one(tiny_subject_path, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    two = subprocess.run([*TORCHRUN, "--standalone", "--nproc_per_node", "2", "-m", "engine.cli.main", *ARGS,
                          "--data", str(tiny_subject_path), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=120, env=env)
    assert two.returncode == 0, two.stderr[-3000:]
    assert main([*ARGS, "--data", str(tiny_subject_path), "--out", str(tmp_path / "one")]) == 0

    prov = Run.open(tmp_path / "two").provenance()
    assert prov["device"]["world_size"] == 2
    assert Run.open(tmp_path / "two").status()["status"] == "done"
    a = load_file(str(tmp_path / "one" / "model" / "encoder" / "model.safetensors"))
    b = load_file(str(tmp_path / "two" / "model" / "encoder" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], atol=1e-4, rtol=1e-4)
