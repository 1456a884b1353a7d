"""``engine.config.Config``: numbers as YAML users write them, unknown keys and bad values named by their dotted key
(and file), nested sections, round trips, ``replace``; the same rules for every config that uses it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest
import yaml

from engine.config import Config, check
from engine.errors import ConfigError
from engine.train.config import TrainConfig


@dataclass(frozen=True)
class Inner(Config):
    hidden: int = 8
    rate: float = 0.5
    enabled: bool = False

    def __post_init__(self):
        check(self.hidden > 0, "Inner", "hidden", "a positive integer", self.hidden)


@dataclass(frozen=True)
class Outer(Config):
    name: str = "x"
    inner: Inner = field(default_factory=Inner)
    optional: Inner | None = None
    sizes: tuple[int, ...] = ()
    mode: Literal["a", "b"] = "a"
    extra: dict = field(default_factory=dict)


@dataclass
class Mutable(Config):  # adopting the base is one line, frozen or not
    steps: int = 3


def test_numbers_from_strings_the_way_yaml_reads_them():
    d = yaml.safe_load("inner: {hidden: '1000', rate: 1e-3, enabled: yes}\nsizes: ['2', 3.0]")
    assert d["inner"]["rate"] == "1e-3"  # PyYAML: no dot, a string
    cfg = Outer.from_dict(d)
    assert cfg.inner == Inner(hidden=1000, rate=1e-3, enabled=True) and cfg.sizes == (2, 3)
    assert Outer.from_dict({"inner": {"enabled": "No"}}).inner.enabled is False


@pytest.mark.parametrize("inner, key, expected", [
    ({"rate": "abc"}, "inner.rate", "a number"),
    ({"rate": True}, "inner.rate", "a number"),
    ({"hidden": "1.5"}, "inner.hidden", "an integer"),
    ({"enabled": 1}, "inner.enabled", "true/false"),
    ({"enabled": "maybe"}, "inner.enabled", "true/false"),
    ({"hidden": 0}, "inner.hidden", "a positive integer"),  # the class's own check, prefixed by from_dict
])
def test_bad_values_carry_the_dotted_key(inner, key, expected):
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"inner": inner})
    err = info.value
    assert err.key == key and err.expected == expected and err.source is None
    assert f"key '{key}'" in str(err) and "\n" not in str(err)


def test_unknown_keys_are_refused_with_their_dotted_key():
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"optional": {"hiden": 3}})
    assert info.value.key == "optional.hiden" and "unknown key" in str(info.value)
    with pytest.raises(ConfigError, match="also") as info:
        Outer.from_dict({"zeta": 1, "alpha": 2})
    assert info.value.key == "alpha"
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"inner": [1, 2]})
    assert info.value.key == "inner" and info.value.expected == "a mapping of keys"
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"sizes": [1, "x"]})
    assert info.value.key == "sizes[1]"
    with pytest.raises(ConfigError) as info:
        Outer.from_dict({"mode": "c"})
    assert info.value.key == "mode" and "['a', 'b']" in str(info.value)


def test_key_prefix_and_source_are_named():
    with pytest.raises(ConfigError) as info:
        Inner.from_dict({"rate": "fast"}, "model.config", source="/runs/a/config.yaml")
    err = info.value
    assert (err.key, err.source, err.found) == ("model.config.rate", "/runs/a/config.yaml", "fast")
    assert str(err) == "/runs/a/config.yaml: key 'model.config.rate': expected a number, found 'fast'"


def test_round_trip_nested_sections_and_replace():
    cfg = Outer.from_dict({"name": "n", "inner": {"hidden": 4}, "optional": {"rate": 2}, "sizes": [1, 2],
                           "mode": "b", "extra": {"k": (1, 2)}})
    d = cfg.to_dict()
    assert d["optional"] == {"hidden": 8, "rate": 2.0, "enabled": False} and d["sizes"] == [1, 2]
    assert d["extra"] == {"k": [1, 2]} and Outer.from_dict(d) == cfg
    assert Outer.from_dict(yaml.safe_load(yaml.safe_dump(d))) == cfg
    changed = cfg.replace(inner=Inner(hidden=5), sizes=(3,))
    assert changed.inner.hidden == 5 and changed.sizes == (3,) and cfg.inner.hidden == 4
    assert cfg.replace(inner={"rate": "1e-2"}).inner == Inner(rate=0.01)  # a dict section is parsed, defaults fill in
    with pytest.raises(ConfigError) as info:
        cfg.replace(inner={"hidden": -1})
    assert info.value.key == "inner.hidden"
    m = Mutable.from_dict({"steps": "7"})
    assert m.steps == 7 and m.to_dict() == {"steps": 7} and m.replace(steps=2) == Mutable(2)


def test_train_config_reads_hand_written_yaml(tmp_path):
    """The run config used to refuse ``lr: 1e-3`` (a string to PyYAML) while the model config accepted it."""
    p = tmp_path / "config.yaml"
    p.write_text("epochs: 3\noptim: {lr: 1e-3, weight_decay: 5e-2}\nmodel: {kind: mlp, params: {dropout: 1e-1}}\n")
    cfg = TrainConfig.load(p)
    assert cfg.optim.lr == 1e-3 and cfg.optim.weight_decay == 0.05
    assert cfg.validate().model_config().dropout == 0.1
    p.write_text("optim: {lr: abc}\n")
    with pytest.raises(ConfigError) as info:
        TrainConfig.load(p)
    assert (info.value.key, info.value.source) == ("optim.lr", str(p))
    assert str(info.value).startswith(f"{p}: key 'optim.lr': expected a number, found 'abc'")


@pytest.mark.parametrize("d, key", [
    ({"optim": {"lrr": 1}}, "optim.lrr"),
    ({"pretrain": {"optim": {"momentum": 0.9}}}, "pretrain.optim.momentum"),
    ({"optim": {"lr": -1}}, "optim.lr"),
    ({"model": {"kind": "mlp", "params": {"hiden": 3}}}, "model.params.hiden"),
    ({"model": {"kind": "moe", "params": {"n_experts": [4, 2]}}}, "model.params.n_experts"),
    ({"loss": {"mse": -1}}, "loss.mse"),
])
def test_train_config_errors_carry_the_key_of_the_whole_config(d, key):
    with pytest.raises(ConfigError) as info:
        TrainConfig.from_dict(d).validate()
    assert info.value.key == key


def test_model_configs_and_evaluation_config_use_the_same_base():
    from engine.evaluate import EvaluationConfig
    from engine.models.losses import LossConfig
    from engine.models.mlp import MLPConfig
    from engine.recon.index import ReconIndex  # noqa: F401 - the frozen index does not use Config, it is data

    assert MLPConfig.from_dict({"hidden": "64", "dropout": "1e-1"}) == MLPConfig(hidden=64, dropout=0.1)
    assert LossConfig.from_dict({"mse": "2"}).mse == 2.0
    ev = EvaluationConfig.from_dict({"n_way": {"n": "10"}, "retrieval": {"pool": 50}, "blend": "yes"})
    assert (ev.n_way.n, ev.retrieval.pool, ev.blend) == (10, 50, True)
    assert EvaluationConfig.from_dict(ev.to_dict()) == ev
    with pytest.raises(ConfigError) as info:
        EvaluationConfig.from_dict({"retrieval": {"pools": 3}})
    assert info.value.key == "retrieval.pools"


def test_a_missing_required_key_is_a_config_error_not_a_type_error():
    """``X(**saved)`` raised a bare TypeError on a missing or unknown key; ``from_dict`` names it."""
    from engine.recon.conditioning import ConditioningConfig

    cfg = ConditioningConfig.from_dict({"input_shape": ["16"], "n_tokens": 4, "context_dim": 8})
    assert cfg.input_shape == (16,) and "spatial_shape" not in cfg.to_dict()  # old adapter files stay as they were
    assert ConditioningConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError) as info:
        ConditioningConfig.from_dict({"n_tokens": 4}, "decoder.adapter")
    assert info.value.key == "decoder.adapter.input_shape" and "missing" in str(info.value)
    with pytest.raises(ConfigError) as info:
        ConditioningConfig.from_dict({"input_shape": [16], "spatial_shape": [4, 8]})
    assert info.value.key == "spatial_shape"
