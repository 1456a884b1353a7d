"""MLP encoder (MindEyeV2 backbone) and the BrainEncoder contract: shapes, subjects, save/load, configs, freezing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from engine.errors import CheckpointError, ConfigError
from engine.models.base import BrainEncoder, EncoderOutput
from engine.models.mlp import MLPConfig, MLPEncoder
from engine.models.registry import ENCODER_KINDS, build_encoder, config_for, load_encoder_folder

TINY = {"hidden": 16, "n_blocks": 2, "dropout": 0.1}


def _betas(n, v, seed=0):
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("target_shape", [(12,), (3, 8)])
def test_shapes_pooled_and_tokens(target_shape):
    torch.manual_seed(0)
    enc = build_encoder("mlp", TINY, n_voxels={"s1": 40, "s2": 25}, target_shape=target_shape)
    out = enc(_betas(5, 25), subject="s2")
    assert isinstance(out, EncoderOutput)
    assert out.embedding.shape == (5, *target_shape)
    d = 1
    for s in target_shape:
        d *= s
    assert out.retrieval.shape == (5, d)
    assert out.aux_losses == {} and out.extras == {}


def test_blurry_head_and_no_projector():
    torch.manual_seed(0)
    cfg = {**TINY, "blurry": True, "blurry_shape": [4, 8, 8], "blurry_channels": 8, "retrieval": False}
    enc = build_encoder("mlp", cfg, n_voxels=30, target_shape=(6,))
    out = enc(_betas(3, 30))
    assert out.retrieval is None
    assert out.extras["blurry"].shape == (3, 4, 8, 8)
    with pytest.raises(ConfigError, match="blurry_shape"):
        MLPConfig(blurry=True, blurry_shape=(3, 10, 10), blurry_upsamples=2)


def test_subject_errors():
    enc = build_encoder("mlp", TINY, n_voxels={"a": 10, "b": 12}, target_shape=(4,))
    with pytest.raises(ConfigError, match="several subjects"):
        enc(_betas(2, 10))
    with pytest.raises(ConfigError, match="unknown subject 'c'"):
        enc(_betas(2, 10), subject="c")
    with pytest.raises(ConfigError, match=r"expected shape \(batch, 12\)"):
        enc(_betas(2, 10), subject="b")
    with pytest.raises(ConfigError, match="already exists"):
        enc.add_subject("a", 5)


def test_save_load_identical_outputs(tmp_path):
    torch.manual_seed(0)
    cfg = {**TINY, "blurry": True, "blurry_shape": [3, 8, 8], "blurry_channels": 8}
    enc = build_encoder("mlp", cfg, n_voxels={"subj.01": 20, "subj02": 15}, target_shape=(2, 6)).eval()
    enc.save(tmp_path / "model")
    spec = json.loads((tmp_path / "model" / "config.json").read_text())
    assert spec["class"] == "MLPEncoder" and spec["schema"] == 1
    back = load_encoder_folder(tmp_path / "model").eval()
    assert isinstance(back, MLPEncoder)
    assert back.config == enc.config and back.subjects == enc.subjects and back.target_shape == (2, 6)
    x = _betas(4, 20)
    a, b = enc(x, subject="subj.01"), back(x, subject="subj.01")
    torch.testing.assert_close(a.embedding, b.embedding, rtol=0, atol=0)
    torch.testing.assert_close(a.retrieval, b.retrieval, rtol=0, atol=0)
    torch.testing.assert_close(a.extras["blurry"], b.extras["blurry"], rtol=0, atol=0)
    # Saving again replaces the folder atomically.
    enc.save(tmp_path / "model")
    assert MLPEncoder.load(tmp_path / "model").config == enc.config


def test_load_errors(tmp_path):
    enc = build_encoder("mlp", TINY, n_voxels=10, target_shape=(4,))
    with pytest.raises(CheckpointError, match="missing config.json"):
        load_encoder_folder(tmp_path / "nothing")
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "notes.txt").write_text("keep me")
    with pytest.raises(CheckpointError, match="not an encoder folder"):
        enc.save(tmp_path / "user")
    enc.save(tmp_path / "m")
    spec = json.loads((tmp_path / "m" / "config.json").read_text())
    spec["config"]["hidden"] = 8
    (tmp_path / "m" / "config.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="do not match"):
        load_encoder_folder(tmp_path / "m")
    spec["class"] = "Nope"
    (tmp_path / "m" / "config.json").write_text(json.dumps(spec))
    with pytest.raises(CheckpointError, match="key 'class'"):
        load_encoder_folder(tmp_path / "m")
    build_encoder("moe", {"hidden": 16, "n_experts": [2]}, n_voxels=10, target_shape=(4,)).save(tmp_path / "moe")
    with pytest.raises(CheckpointError, match="key 'class': expected MLPEncoder, found MoEEncoder"):
        MLPEncoder.load(tmp_path / "moe")  # one kind's load refuses another kind's folder
    with pytest.raises(TypeError, match="encoder_from_spec"):
        BrainEncoder.load(tmp_path / "moe")  # the base class builds no kind: the registry does


@pytest.mark.parametrize("kind", sorted(ENCODER_KINDS))
def test_config_round_trip_and_unknown_key(kind):
    cfg = config_for(kind, {})
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    with pytest.raises(ConfigError, match="hiden"):
        config_for(kind, {"hiden": 3})
    with pytest.raises(ConfigError, match="encoder kind"):
        config_for("transformer", {})


def test_config_type_errors():
    with pytest.raises(ConfigError, match="key 'hidden'"):
        MLPConfig.from_dict({"hidden": "big"})
    with pytest.raises(ConfigError, match="key 'blurry'"):
        MLPConfig.from_dict({"blurry": 1})
    with pytest.raises(ConfigError, match="key 'dropout'"):
        MLPConfig.from_dict({"dropout": 1.5})
    assert MLPConfig.from_dict({"dropout": 0}).dropout == 0.0


def test_input_only_trains_new_subject_layer():
    torch.manual_seed(0)
    enc = build_encoder("mlp", TINY, n_voxels={"old": 10}, target_shape=(4,))
    enc.add_subject("new", 7)
    groups = enc.param_groups("input_only", weight_decay=0.01)
    names = enc.set_trainable("input_only")
    assert names == ["subject_layers.new.bias", "subject_layers.new.weight"]
    assert sum(len(g["params"]) for g in groups) == 2
    out = enc(_betas(3, 7), subject="new")
    out.embedding.sum().backward()
    for name, p in enc.named_parameters():
        assert (p.grad is not None) == name.startswith("subject_layers.new."), name
    with pytest.raises(ConfigError, match="router_only"):
        enc.param_groups("router_only")
    with pytest.raises(ConfigError, match="train mode"):
        enc.param_groups("everything")


def test_param_groups_no_decay_on_norms_and_biases():
    enc = build_encoder("mlp", TINY, n_voxels=10, target_shape=(4,))
    groups = {g["name"]: g for g in enc.param_groups("all", weight_decay=0.1)}
    assert groups["decay"]["weight_decay"] == 0.1 and groups["no_decay"]["weight_decay"] == 0.0
    assert all(p.ndim >= 2 for p in groups["decay"]["params"])
    n = sum(len(g["params"]) for g in groups.values())
    assert n == len(list(enc.parameters()))
    assert all(p.requires_grad for p in enc.parameters())


@pytest.mark.parametrize("kind, target_shape", [("mlp", (5,)), ("mlp", (2, 3)), ("mbm", (4,)), ("mbm", (2, 3))])
def test_output_bias_starts_at_the_mean_target(kind, target_shape):
    params = {"hidden": 8, "n_blocks": 1} if kind == "mlp" else {"dim": 8, "depth": 1, "heads": 2, "decoder_dim": 8,
                                                                  "decoder_heads": 2, "patch_size": 4}
    enc = build_encoder(kind, params, n_voxels=12, target_shape=target_shape)
    mean = np.arange(np.prod(target_shape), dtype=np.float32).reshape(target_shape) + 1.0
    assert enc.init_output_bias(mean)
    with torch.no_grad():
        for p in enc.parameters():  # zero every weight: the output is then the bias alone
            if p is not enc.head.bias:
                p.zero_()
        out = enc.eval()(torch.randn(3, 12)).embedding
    expected = mean if kind == "mlp" or len(target_shape) == 1 else np.broadcast_to(mean.mean(0), target_shape)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(expected, (3, *target_shape)), rtol=1e-6)
