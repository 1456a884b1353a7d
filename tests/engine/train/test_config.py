"""TrainConfig: YAML round trip, unknown keys and bad values are ConfigErrors naming the key, overrides."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.train.config import TrainConfig
from engine.train.presets import get_preset, list_presets


@pytest.mark.parametrize("name", list_presets())
def test_every_preset_round_trips_through_yaml(name, tmp_path):
    cfg = get_preset(name)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg
    cfg.save(tmp_path / "c.yaml")
    assert TrainConfig.load(tmp_path / "c.yaml") == cfg


@settings(max_examples=25, deadline=None)
@given(epochs=st.integers(1, 500), batch=st.integers(2, 512), lr=st.floats(1e-6, 1.0), seed=st.integers(0, 2**31),
       kind=st.sampled_from(["ridge", "mlp", "mbm", "moe"]), rois=st.lists(st.sampled_from(["V1", "V2", "FFA"])),
       precision=st.sampled_from(["fp32", "bf16", "fp16"]), init=st.one_of(st.none(), st.just("runs/a")))
def test_round_trip_property(epochs, batch, lr, seed, kind, rois, precision, init):
    cfg = TrainConfig.from_dict({"epochs": epochs, "batch_size": batch, "seed": seed, "precision": precision,
                                 "model": {"kind": kind}, "optim": {"lr": lr}, "data": {"rois": rois},
                                 "init_from": None if kind == "ridge" else init})
    assert TrainConfig.from_yaml_text(cfg.to_yaml()) == cfg


@pytest.mark.parametrize("d, key", [
    ({"epoch": 3}, "epoch"),
    ({"optim": {"learning_rate": 1e-3}}, "learning_rate"),
    ({"data": {"embeder": "demo"}}, "embeder"),
    ({"pretrain": {"optim": {"lr": 1e-3, "momentum": 0.9}}}, "momentum"),
])
def test_unknown_keys_are_named(d, key):
    with pytest.raises(ConfigError, match=key):
        TrainConfig.from_dict(d)


@pytest.mark.parametrize("d, key", [
    ({"epochs": "ten"}, "epochs"),
    ({"epochs": 0}, "epochs"),
    ({"batch_size": True}, "batch_size"),
    ({"precision": "fp8"}, "precision"),
    ({"device": "gpu0"}, "device"),
    ({"model": {"kind": "transformer"}}, "kind"),
    ({"optim": {"betas": [0.9]}}, "betas"),
    ({"train_mode": "router_only"}, "train_mode"),
    ({"model": {"kind": "ridge", "params": {"hidden": 3}}}, "params"),
])
def test_bad_values_are_named(d, key):
    with pytest.raises(ConfigError, match=key):
        TrainConfig.from_dict(d)


def test_model_and_loss_sections_are_checked_against_their_classes():
    with pytest.raises(ConfigError, match="hiden"):
        TrainConfig.from_dict({"model": {"kind": "mlp", "params": {"hiden": 3}}}).validate()
    with pytest.raises(ConfigError, match="contrastiv"):
        TrainConfig.from_dict({"loss": {"contrastiv": 1.0}}).validate()
    TrainConfig.from_dict({"model": {"kind": "moe", "params": {"n_experts": [2, 4]}}, "loss": {"mse": 0.5}}).validate()


def test_overrides():
    cfg = get_preset("demo-mlp").with_overrides({"optim.lr": 1e-3, "epochs": 3, "model.params.hidden": 64})
    assert cfg.optim.lr == 1e-3 and cfg.epochs == 3 and cfg.model.params["hidden"] == 64
    with pytest.raises(ConfigError, match="nope"):
        cfg.with_overrides({"nope.lr": 1})
    with pytest.raises(ConfigError, match="lrr"):
        cfg.with_overrides({"optim.lrr": 1})


def test_bad_yaml_names_the_file(tmp_path):
    p = tmp_path / "c.yaml"
    p.write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="c.yaml"):
        TrainConfig.load(p)
