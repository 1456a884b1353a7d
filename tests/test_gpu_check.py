"""The GPU check's pieces that run anywhere: its summary, the memory-bound arithmetic, the SD-1.5-layout folder.

The check itself (benchmarks/gpu_check.sh) runs the whole CLI path; on a CPU its reduced mode is run by hand
(``--device cpu --quick``, several minutes), see docs/benchmarks.md.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def test_summary_lists_every_step_and_fails_on_a_failed_step(tmp_path, capsys):
    from benchmarks.gpu_check import summary

    work = tmp_path / "work"
    (work / "results").mkdir(parents=True)
    (work / "logs").mkdir()
    (work / "steps.tsv").write_text("demo\tok\t3.5\ntrain-demo-mlp\tFAILED (exit 2)\t1.0\n"
                                    "bench-sampling\tskipped (time budget)\t0\n")
    (work / "results" / "reconstruct_timing.json").write_text(json.dumps(
        {"images": 100, "samples": 400, "steps": 25, "seconds": 4.2}))
    (work / "logs" / "evaluate.log").write_text("warning: x\n" + json.dumps({"rows": [{"folder": "r", "images": "blurry",
                                                                                 "SSIM": 0.85321}]}))
    assert summary(str(work), "cuda", 12.0, str(tmp_path / "out")) == 1
    text = capsys.readouterr().out
    assert "train-demo-mlp" in text and "FAILED (exit 2)" in text and "skipped (time budget)" in text
    saved = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert saved["figures"]["reconstruct_demo_s"] == 4.2 and saved["figures"]["evaluate"] == [{"images": "blurry", "SSIM": 0.853}]
    assert not saved["all_passed"] and (tmp_path / "out" / "summary.txt").is_file()


def test_memory_bound_counts_the_optimizer_and_the_casts():
    from benchmarks.bench_trainer import BYTES_OPTIMIZER, hbm_bandwidth, step_bytes

    model = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.LayerNorm(20))
    moved = step_bytes(model)
    n_params = 10 * 20 + 20 + 2 * 20
    assert moved["params"] == n_params and moved["matmul_weights"] == 200
    assert moved["bytes"] == n_params * BYTES_OPTIMIZER + 200 * 18
    props = SimpleNamespace(memory_clock_rate=2_619_000, memory_bus_width=5120)  # H100 SXM: 2 × 2.619 GHz × 640 B
    assert hbm_bandwidth(props, "NVIDIA H100 80GB HBM3")[0] == pytest.approx(3.35e12, rel=0.01)
    bw, source = hbm_bandwidth(SimpleNamespace(), "NVIDIA H200")
    assert bw == 4.8e12 and "H200" in source
    assert hbm_bandwidth(SimpleNamespace(), "Some GPU")[0] is None


def test_the_cpu_reports_the_gpu_sections_unavailable():
    from benchmarks.bench_trainer import gpu_backbone

    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    assert gpu_backbone()["status"].startswith("unavailable")


def test_sd15_layout_folder_loads_as_a_generator(tmp_path):
    from benchmarks.make_sd15_folder import make_sd15_folder
    from engine.recon.generators import load_generator

    folder = make_sd15_folder(tmp_path / "sd15", "tiny")
    gen = load_generator(str(folder), device="cpu")
    assert gen.kind == "sd15" and gen.image_size == 32 and gen.context_dim == 32


def test_the_check_script_parses_and_refuses_unknown_arguments():
    script = ROOT / "benchmarks" / "gpu_check.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    bad = subprocess.run(["bash", str(script), "--fast"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown argument '--fast'" in bad.stderr
