import torch

from engine.recon.conditioning import ConditioningAdapter, ConditioningConfig
from engine.recon.guidance import apply_drop, combine, drop_mask


def test_training_drop_and_sampling_use_the_same_learned_null_condition():
    a = ConditioningAdapter(ConditioningConfig(input_shape=(10,), n_tokens=3, context_dim=8, pooled_dim=4))
    c = a(torch.randn(4, 10))
    mask = torch.tensor([True, False, True, False])
    tokens, pooled = apply_drop(c.tokens, c.pooled, a.null, mask)
    null = a.null_condition(4)  # what the sampler uses as its unconditional branch
    assert torch.equal(tokens[0], null.tokens[0]) and torch.equal(tokens[2], null.tokens[2])
    assert torch.equal(pooled[0], null.pooled[0])
    assert torch.equal(tokens[1], c.tokens[1])


def test_null_condition_is_learned():
    a = ConditioningAdapter(ConditioningConfig(input_shape=(10,), n_tokens=3, context_dim=8))
    c = a(torch.randn(4, 10))
    tokens, _ = apply_drop(c.tokens, None, a.null, torch.ones(4, dtype=torch.bool))
    tokens.sum().backward()
    assert a.null.tokens.grad is not None and a.null.tokens.grad.abs().sum() > 0


def test_drop_rate_matches_the_probability():
    g = torch.Generator().manual_seed(0)
    assert abs(drop_mask(20000, 0.1, generator=g).float().mean().item() - 0.1) < 0.01
    assert not drop_mask(10, 0.0).any()


def test_guidance_formula():
    u, c = torch.zeros(3), torch.ones(3)
    assert torch.equal(combine(u, c, 0.0), u) and torch.equal(combine(u, c, 1.0), c)
    assert torch.equal(combine(u, c, 3.0), 3 * c)
