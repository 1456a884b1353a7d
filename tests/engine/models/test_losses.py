"""Losses against brute-force reference computations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.models.base import EncoderOutput
from engine.models.losses import (LossConfig, bimixco_loss, cosine_loss, encoder_loss, info_nce, load_balance_loss,
                                  mixco_batch, mixco_targets, mse_loss, soft_clip_loss, switch_balance_loss)


def _data(n=6, d=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), torch.randn(n, d, generator=g, dtype=torch.float64)


def _unit(x):
    x = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _logsoftmax(row):
    m = max(row)
    return [v - m - math.log(sum(math.exp(u - m) for u in row)) for v in row]


def _soft_ce_loop(logits, soft):
    n = len(logits)
    return sum(-sum(soft[i][j] * _logsoftmax(logits[i])[j] for j in range(n)) for i in range(n)) / n


def test_info_nce_matches_loop():
    p, t = _data()
    tau = 0.1
    pn, tn = _unit(p), _unit(t)
    n = len(pn)
    logits = [[float(pn[i] @ tn[j]) / tau for j in range(n)] for i in range(n)]
    cols = [[logits[j][i] for j in range(n)] for i in range(n)]
    fwd = sum(-_logsoftmax(logits[i])[i] for i in range(n)) / n
    bwd = sum(-_logsoftmax(cols[i])[i] for i in range(n)) / n
    assert float(info_nce(p, t, tau)) == pytest.approx((fwd + bwd) / 2, rel=1e-5)


def test_info_nce_flattens_tokens_and_rewards_alignment():
    _, t = _data(n=4, d=6)
    tokens = t.reshape(4, 2, 3)
    assert float(info_nce(tokens, tokens, 0.05)) < float(info_nce(tokens.flip(0), tokens, 0.05))


def test_soft_clip_matches_loop():
    p, t = _data()
    tau = 0.5
    pn, tn = _unit(p), _unit(t)
    n = len(pn)
    tt = [[float(tn[i] @ tn[j]) / tau for j in range(n)] for i in range(n)]
    soft = [[math.exp(v) for v in _logsoftmax(row)] for row in tt]
    logits = [[float(pn[i] @ tn[j]) / tau for j in range(n)] for i in range(n)]
    cols = [[logits[j][i] for j in range(n)] for i in range(n)]
    ref = (_soft_ce_loop(logits, soft) + _soft_ce_loop(cols, soft)) / 2
    assert float(soft_clip_loss(p, t, tau)) == pytest.approx(ref, rel=1e-5)


def test_mixco_batch_mixes_selected_rows_only():
    x = torch.randn(16, 7, generator=torch.Generator().manual_seed(1))
    orig = x.clone()
    mb = mixco_batch(x, beta=0.15, prob=0.5, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(x, orig)  # input untouched
    assert mb.select.any() and (~mb.select).any()
    assert torch.all(mb.lam[~mb.select] == 1)
    assert torch.all((mb.lam >= 0) & (mb.lam <= 1))
    for i in range(16):
        ref = orig[i] * mb.lam[i] + orig[mb.perm[i]] * (1 - mb.lam[i])
        torch.testing.assert_close(mb.betas[i], ref)
    again = mixco_batch(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(again.betas, mb.betas)


def test_mixco_lambda_follows_beta_distribution():
    mb = mixco_batch(torch.zeros(20000, 1), beta=0.15, prob=1.0, generator=torch.Generator().manual_seed(0))
    lam = mb.lam.double()
    assert float(lam.mean()) == pytest.approx(0.5, abs=0.02)
    assert float(lam.var()) == pytest.approx(0.15 ** 2 / (0.3 ** 2 * 1.3), abs=0.01)


def test_bimixco_matches_loop_and_targets_sum_to_one():
    p, t = _data(n=5)
    lam = torch.tensor([0.3, 1.0, 0.8, 0.5, 1.0], dtype=torch.float64)
    perm = torch.tensor([2, 1, 0, 3, 4])  # rows 1, 3, 4 are their own partner
    soft = mixco_targets(lam, perm)
    torch.testing.assert_close(soft.sum(1), torch.ones(5, dtype=soft.dtype))
    tau = 0.2
    pn, tn = _unit(p), _unit(t)
    logits = [[float(pn[i] @ tn[j]) / tau for j in range(5)] for i in range(5)]
    cols = [[logits[j][i] for j in range(5)] for i in range(5)]
    s = soft.tolist()
    st = [[s[j][i] for j in range(5)] for i in range(5)]
    ref = (_soft_ce_loop(logits, s) + _soft_ce_loop(cols, st)) / 2
    assert float(bimixco_loss(p, t, lam, perm, tau)) == pytest.approx(ref, rel=1e-5)
    # Without mixing (λ = 1) BiMixCo is InfoNCE.
    ones = torch.ones(5, dtype=torch.float64)
    assert float(bimixco_loss(p, t, ones, torch.arange(5), tau)) == pytest.approx(float(info_nce(p, t, tau)))


def test_cosine_and_mse():
    p, t = _data()
    pn, tn = _unit(p), _unit(t)
    assert float(cosine_loss(p, t)) == pytest.approx(float(np.mean(1 - (pn * tn).sum(1))), rel=1e-6)
    assert float(mse_loss(p, t)) == pytest.approx(float(((p - t) ** 2).mean()), rel=1e-6)
    assert float(cosine_loss(p, 3 * p)) == pytest.approx(0.0, abs=1e-7)


def test_load_balance_zero_only_for_uniform():
    assert float(load_balance_loss(torch.full((4,), 0.25))) == 0.0
    assert float(load_balance_loss(torch.full((3, 2), 0.5))) == 0.0
    skewed = torch.tensor([0.7, 0.1, 0.1, 0.1])
    assert float(load_balance_loss(skewed)) == pytest.approx(float(((skewed - 0.25) ** 2).mean()))
    assert float(load_balance_loss(skewed)) > 0
    assert float(switch_balance_loss(torch.full((4,), 0.25), torch.full((4,), 0.25))) == pytest.approx(1.0)
    assert float(switch_balance_loss(torch.tensor([1.0, 0.0]), torch.tensor([0.9, 0.1]))) > 1.0


def test_loss_config_round_trip_phases_and_errors():
    cfg = LossConfig()
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ConfigError, match="mixco_tau"):
        LossConfig.from_dict({"mixco_tau": 0.1})
    with pytest.raises(ConfigError, match="contrastive_kind"):
        LossConfig.from_dict({"contrastive_kind": "triplet"})
    assert cfg.uses_mixco(0.1) and not cfg.uses_mixco(0.5)
    assert cfg.softclip_tau(0.33) == pytest.approx(0.004)
    assert cfg.softclip_tau(1.0) == pytest.approx(0.0075)
    assert not LossConfig(contrastive_kind="softclip").uses_mixco(0.0)


def test_encoder_loss_weights_its_parts():
    g = torch.Generator().manual_seed(0)
    target = torch.randn(6, 2, 4, generator=g)
    out = EncoderOutput(embedding=torch.randn(6, 2, 4, generator=g), retrieval=torch.randn(6, 8, generator=g),
                        aux_losses={"load_balance": torch.tensor(0.2)},
                        extras={"blurry": torch.randn(6, 3, 4, 4, generator=g)})
    blurry_t = torch.randn(6, 3, 4, 4, generator=g)
    cfg = LossConfig(mse=2.0, cosine=0.5, blurry=0.5, load_balance=3.0, contrastive_kind="softclip")
    total, parts = encoder_loss(out, target, cfg, progress=0.5, blurry_target=blurry_t)
    assert set(parts) == {"softclip", "mse", "cosine", "blurry", "load_balance"}
    ref = parts["softclip"] + 2 * parts["mse"] + 0.5 * parts["cosine"] + 0.5 * parts["blurry"] + 3 * 0.2
    assert float(total) == pytest.approx(ref, rel=1e-5)
    mix = mixco_batch(torch.zeros(6, 3), prob=1.0, generator=torch.Generator().manual_seed(1))
    _, parts = encoder_loss(out, target, LossConfig(), progress=0.0, mix=mix)
    assert "bimixco" in parts


def test_batch_statistics_cover_the_global_batch():
    from engine.models.losses import batch_mean, batch_sum, global_batch

    x = torch.arange(12.0).reshape(3, 2, 2)
    torch.testing.assert_close(batch_mean(x, dim=(0, 2)), x.mean(dim=(0, 2)))
    # Two processes holding the same 3 rows: the sums double, the mean over 6 rows equals the mean over 3.
    with global_batch(lambda t: 2 * t):
        torch.testing.assert_close(batch_sum(x, dim=(0, 2)), 2 * x.sum(dim=(0, 2)))
        torch.testing.assert_close(batch_mean(x, dim=(0, 2)), x.mean(dim=(0, 2)))
    torch.testing.assert_close(batch_sum(x, dim=(0,)), x.sum(0))  # the context is left
