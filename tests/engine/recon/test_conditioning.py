import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.recon.conditioning import ConditioningAdapter, ConditioningConfig


@pytest.mark.parametrize("shape", [(10,), (6, 10)])
def test_adapter_maps_pooled_and_token_embeddings_to_context_tokens(shape):
    a = ConditioningAdapter(ConditioningConfig(input_shape=shape, n_tokens=77, context_dim=32))
    a.set_statistics(np.random.default_rng(0).standard_normal((20, *shape)))
    c = a(torch.randn(3, *shape))
    assert c.tokens.shape == (3, 77, 32) and c.pooled is None
    assert c.repeat(2).tokens.shape == (6, 77, 32)
    assert torch.equal(c.repeat(2).tokens[0], c.repeat(2).tokens[1])


def test_sdxl_adapter_gives_a_pooled_vector_and_null_has_one_too():
    a = ConditioningAdapter(ConditioningConfig(input_shape=(10,), n_tokens=4, context_dim=32, pooled_dim=16))
    c = a(torch.randn(2, 10))
    n = a.null_condition(2)
    assert c.pooled.shape == (2, 16) and n.pooled.shape == (2, 16) and n.tokens.shape == (2, 4, 32)


def test_adapter_is_insensitive_to_the_shrinkage_of_regression_predictions():
    # A ridge/MSE encoder predicts embeddings pulled toward the mean; the input LayerNorm undoes the scale.
    torch.manual_seed(0)
    a = ConditioningAdapter(ConditioningConfig(input_shape=(10,), n_tokens=2, context_dim=8)).eval()
    x = torch.randn(2, 10)
    assert torch.allclose(a(x).tokens, a(0.3 * x).tokens, atol=1e-3)


def test_adapter_rejects_the_wrong_embedding_shape_naming_both():
    a = ConditioningAdapter(ConditioningConfig(input_shape=(10,), n_tokens=2, context_dim=8))
    with pytest.raises(ConfigError, match=r"expected \(batch, 10\), found \(2, 12\)"):
        a(torch.randn(2, 12))


def test_adapter_round_trips_through_its_folder(tmp_path):
    a = ConditioningAdapter(ConditioningConfig(input_shape=(5, 10), n_tokens=7, context_dim=8, pooled_dim=4))
    a.set_statistics(np.random.default_rng(1).standard_normal((9, 5, 10)))
    a.save(tmp_path / "ad")
    b = ConditioningAdapter.load(tmp_path / "ad")
    x = torch.randn(2, 5, 10)
    assert b.config == a.config
    assert torch.allclose(a(x).tokens, b(x).tokens) and torch.equal(a.null.tokens, b.null.tokens)


def test_config_refuses_bad_shapes():
    with pytest.raises(ConfigError, match="input_shape"):
        ConditioningConfig(input_shape=(2, 3, 4))


@pytest.mark.parametrize("head", ["mlp", "conv"])
def test_spatial_map_round_trips_and_only_the_conv_kind_is_written_to_the_config(tmp_path, head):
    cfg = ConditioningConfig(input_shape=(10,), n_tokens=2, context_dim=8, spatial_shape=(4, 16, 16),
                             spatial_head=head)
    a = ConditioningAdapter(cfg).eval()
    a.save(tmp_path / "ad")
    b = ConditioningAdapter.load(tmp_path / "ad").eval()
    x = torch.randn(3, 10)
    assert a(x).spatial.shape == (3, 4, 16, 16) and torch.allclose(a(x).spatial, b(x).spatial)
    assert b.config.spatial_head == head
    # adapter folders written before the conv kind keep their config file byte for byte
    assert ("spatial_head" in (tmp_path / "ad" / "config.json").read_text()) == (head == "conv")


def test_config_refuses_an_unknown_spatial_head():
    with pytest.raises(ConfigError, match="spatial_head"):
        ConditioningConfig(input_shape=(10,), spatial_shape=(4, 16, 16), spatial_head="transformer")
    with pytest.raises(ConfigError, match="spatial_shape"):
        ConditioningConfig(input_shape=(10,), spatial_shape=(4, 12, 12), spatial_head="conv")
