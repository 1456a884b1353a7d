"""The device rules of engine/train/device.py, checked without a GPU.

Two kinds of check: the source itself (every random draw with a generator is made on the CPU; no ``.numpy()`` on a
tensor that may live on a device), and jobs run on a stand-in device (``tests/device_fixtures.py``: PyTorch's meta
device, made to check random draws as CUDA does). Both fail on the code that crashed ``finetune --device cuda``.
The ``gpu`` tests run the same paths on a real GPU where one is present.
"""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.device_fixtures import RANDOM_FUNCTIONS, meta_device, strict_random  # noqa: F401 - fixtures

ENGINE = Path(__file__).resolve().parents[2] / "engine"
# Modules whose tensors may live on a GPU (data readers, metrics and ridge's numpy side work on host arrays).
# (The demo_*.py modules build the shipped demo generator, on the CPU only.)
DEVICE_MODULES = [*sorted(p for p in (ENGINE / "recon").glob("*.py") if not p.name.startswith("demo_")), *(ENGINE / "models" / n for n in
                  ("base.py", "mlp.py", "mbm.py", "moe.py", "routing.py", "losses.py")),
                  *(ENGINE / "train" / n for n in ("trainer.py", "steps.py", "stages.py", "encoder_setup.py",
                                                   "final_model.py", "predict.py", "evaluation.py"))]


def _calls(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node


def _name(func) -> str:
    return func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")


def _is_cpu_literal(node) -> bool:
    return isinstance(node, ast.Constant) and node.value == "cpu"


def test_random_draws_with_a_generator_are_made_on_the_cpu():
    """``torch.rand(..., generator=g, device=d)`` hands the (CPU) generator to a device kernel: CUDA refuses it."""
    bad = []
    for path in sorted(ENGINE.rglob("*.py")):
        for call in _calls(path):
            kw = {k.arg: k.value for k in call.keywords}
            name = _name(call.func)
            is_torch_generator = name == "Generator" and getattr(getattr(call.func, "value", None), "id", "") == "torch"
            if is_torch_generator and "device" in kw and not _is_cpu_literal(kw["device"]):
                bad.append(f"{path.relative_to(ENGINE.parent)}:{call.lineno} torch.Generator on a device")
            if name in RANDOM_FUNCTIONS and "generator" in kw and "device" in kw and not _is_cpu_literal(kw["device"]):
                bad.append(f"{path.relative_to(ENGINE.parent)}:{call.lineno} {name}(generator=..., device=...)")
    assert not bad, "draw on the CPU, then move:\n" + "\n".join(bad)


def test_no_device_random_stream_in_model_code():
    """``randn_like(x)`` / ``x.normal_()`` in a forward pass follow the device's random stream: another GPU, another
    result. Weight initialisation (on the CPU, at construction) is the exception."""
    bad = []
    for path in DEVICE_MODULES:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for fn in ast.walk(tree):
            if not isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)) or fn.name in ("__init__",
                                                                                          "reset_parameters"):
                continue
            for call in ast.walk(fn):
                if isinstance(call, ast.Call) and _name(call.func) in ("rand_like", "randn_like", "randint_like",
                                                                      "normal_", "uniform_", "bernoulli_"):
                    bad.append(f"{path.relative_to(ENGINE.parent)}:{call.lineno} {_name(call.func)} in {fn.name}")
    assert not bad, "draw on the CPU, then move:\n" + "\n".join(bad)


def _through_cpu(node) -> bool:
    """Whether a method chain ``a.b().c()`` passes through ``.cpu()``, ``.to("cpu"...)`` or starts on the host."""
    while isinstance(node, (ast.Call, ast.Attribute, ast.Subscript)):
        if isinstance(node, ast.Call):
            name = _name(node.func)
            if name == "cpu" or (name == "to" and node.args and _is_cpu_literal(node.args[0])):
                return True
            if name in ("from_numpy", "as_tensor") or (name in RANDOM_FUNCTIONS and not any(
                    k.arg == "device" for k in node.keywords)):
                return True  # built on the host from numpy, or drawn on the CPU
            node = node.func
        else:
            node = node.value
    return False


def test_numpy_is_read_through_cpu():
    """``.numpy()`` refuses a CUDA tensor: every call in device code copies to the host first."""
    bad = []
    for path in DEVICE_MODULES:
        for call in _calls(path):
            if _name(call.func) == "numpy" and isinstance(call.func, ast.Attribute) and not call.args:
                if not _through_cpu(call.func.value):
                    bad.append(f"{path.relative_to(ENGINE.parent)}:{call.lineno}")
    assert not bad, ".numpy() without .cpu() (use engine.train.device.to_numpy):\n" + "\n".join(bad)


# ---- the stand-in device ---------------------------------------------------------------------------------------------


def test_the_stand_in_device_refuses_what_cuda_refuses(meta_device):
    g = torch.Generator().manual_seed(0)
    with pytest.raises(RuntimeError, match="Expected a 'meta' device type for generator but found 'cpu'"):
        torch.rand(3, generator=g, device=meta_device)
    with pytest.raises(RuntimeError, match="drew random numbers on meta"):
        torch.randn_like(torch.empty(3, device=meta_device))
    with pytest.raises(RuntimeError, match="not on the expected device"):
        torch.nn.Linear(3, 2).to(meta_device)(torch.ones(1, 3))
    with pytest.raises(TypeError):
        torch.ones(2, device=meta_device).numpy()
    assert torch.ones(2, 3, device=meta_device).cpu().shape == (2, 3)


def test_drop_mask_is_drawn_on_the_cpu_and_moved(meta_device):
    from engine.recon.guidance import drop_mask

    mask = drop_mask(16, 0.5, generator=torch.Generator().manual_seed(3), device=meta_device)
    assert mask.device.type == "meta" and mask.shape == (16,) and mask.dtype == torch.bool
    # The same draws as on the CPU: the mask does not depend on the device.
    on_cpu = drop_mask(16, 0.5, generator=torch.Generator().manual_seed(3), device="cpu")
    assert torch.equal(on_cpu, torch.rand(16, generator=torch.Generator().manual_seed(3)) < 0.5)


def test_moe_training_forward_and_routing_analysis_on_another_device(meta_device):
    from engine.models.registry import build_encoder
    from engine.models.routing import voxel_routing

    model = build_encoder("moe", {"hidden": 16, "n_experts": [2, 4], "n_blocks": 1,
                                  "router_noise": 0.1}, n_voxels={"s": 24},
                          target_shape=(8,))
    torch.manual_seed(0)
    model.train()
    reference = model(torch.ones(4, 24), subject="s").embedding
    model.to(meta_device).train()
    out = model(torch.ones(4, 24, device=meta_device), subject="s")  # router noise: drawn on the CPU, moved
    assert out.embedding.device.type == "meta" and out.embedding.shape == reference.shape
    # The routing analysis reads a model on any device from host betas.
    routing = model.routing_weights(np.ones((5, 24), np.float32), "s")
    assert [lv.weights.shape[0] for lv in routing.levels] == [5, 5]
    assert [v.shape for v in voxel_routing(model, "s", np.ones((5, 24), np.float32))] == [(24, 2), (24, 4)]


def test_encoder_outputs_run_on_the_requested_device(meta_device):
    from engine.models.registry import build_encoder
    from engine.train.trained_model import encoder_outputs

    model = build_encoder("mlp", {"hidden": 16, "n_blocks": 1}, n_voxels={"s": 24}, target_shape=(8,))
    emb, levels, blurry = encoder_outputs(model, np.ones((5, 24), np.float32), "s", (8,), device=meta_device)
    assert next(model.parameters()).device.type == "meta"
    assert emb.shape == (5, 8) and emb.dtype == np.float32 and levels is None and blurry is None


def test_to_device_and_to_numpy_round_trip():
    from engine.train.device import to_device, to_numpy

    a = np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2]  # not contiguous
    t = to_device(a, "cpu")
    assert t.device.type == "cpu" and np.array_equal(to_numpy(t), a)
    assert to_numpy(torch.ones(2, dtype=torch.bfloat16)).dtype == np.float32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_to_device_copies_through_pinned_memory_on_cuda():
    from engine.train.device import to_device, to_numpy

    a = np.random.default_rng(0).standard_normal((64, 32)).astype(np.float32)
    t = to_device(a, "cuda")
    assert t.device.type == "cuda" and np.array_equal(to_numpy(t), a)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("preset,precision", [("tiny-moe", "bf16"), ("tiny-mlp", "fp16"), ("tiny-mbm", "fp32")])
def test_training_on_cuda(tiny_subject, tmp_path, preset, precision):
    """Every torch encoder kind trains on CUDA (autocast; loss scaling with fp16) and its routing analysis reads it."""
    import dataclasses

    from engine.events import drive
    from engine.models.routing import voxel_routing
    from engine.train.predict import load_encoder
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    cfg = dataclasses.replace(get_preset(preset, tiny_subject), device="cuda", precision=precision)
    result = drive(train_job(cfg, tiny_subject, tmp_path / "run"))
    assert result.status == "done" and all(np.isfinite(v) for v in result.metrics.values())
    if preset == "tiny-moe":
        model = load_encoder(tmp_path / "run", device="cuda")
        levels = voxel_routing(model, model.resolve_subject(None), np.asarray(tiny_subject.betas[:8], np.float32))
        assert all(np.allclose(v.sum(axis=1), 1, atol=1e-4) for v in levels)
