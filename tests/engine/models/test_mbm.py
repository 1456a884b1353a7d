"""Masked brain model (MinD-Vis SC-MBM): patching, positions, masked loss, pre-training, decoding head, save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.models.registry import load_encoder_folder
from engine.models.mbm import MBMConfig, MBMEncoder, sincos_positions, wrap_pad
from engine.models.registry import build_encoder

TINY = {"patch_size": 4, "dim": 16, "depth": 2, "heads": 2, "decoder_dim": 8, "decoder_depth": 1,
        "decoder_heads": 2}


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster without intra-op threads
    yield
    torch.set_num_threads(n)


def _betas(n, v, seed=0):
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed))


def test_wrap_pad_matches_numpy():
    x = torch.arange(20.0).reshape(2, 10)
    ref = np.pad(x.numpy(), ((0, 0), (0, 2)), mode="wrap")
    np.testing.assert_array_equal(wrap_pad(x, 4).numpy(), ref)
    np.testing.assert_array_equal(wrap_pad(x, 5).numpy(), x.numpy())
    small = torch.arange(3.0).reshape(1, 3)
    np.testing.assert_array_equal(wrap_pad(small, 8).numpy(), np.pad(small.numpy(), ((0, 0), (0, 5)), mode="wrap"))


def test_sincos_positions_match_mae_formula():
    n, d = 5, 8
    omega = 1.0 / 10000 ** (np.arange(d // 2) / (d / 2.0))
    out = np.arange(n)[:, None] * omega[None]
    ref = np.concatenate([np.sin(out), np.cos(out)], axis=1)
    np.testing.assert_allclose(sincos_positions(n, d).numpy(), ref, atol=1e-6)


@pytest.mark.parametrize("target_shape", [(6,), (3, 6)])
def test_forward_shapes_per_subject(target_shape):
    torch.manual_seed(0)
    enc = build_encoder("mbm", TINY, n_voxels={"a": 30, "b": 17}, target_shape=target_shape)
    for name, v in (("a", 30), ("b", 17)):
        out = enc(_betas(3, v), subject=name)
        assert out.embedding.shape == (3, *target_shape)
        assert out.retrieval.shape == (3, int(np.prod(target_shape)))
        assert out.extras["tokens"].shape == (3, -(-v // 4), 16)


def test_masked_loss_only_counts_masked_patches():
    torch.manual_seed(0)
    enc = build_encoder("mbm", TINY, n_voxels=30, target_shape=(6,))
    x = _betas(4, 30)
    pred, target, mask = enc.mae_forward(x, generator=torch.Generator().manual_seed(5))
    n_patches = 8  # ceil(30 / 4)
    assert pred.shape == target.shape == (4, n_patches, 4)
    assert torch.all(mask.sum(1) == n_patches - 2)  # 25 % of 8 patches stay visible
    np.testing.assert_array_equal(target.reshape(4, -1).numpy(), np.pad(x.numpy(), ((0, 0), (0, 2)), mode="wrap"))
    loss = enc.pretrain_loss(x, generator=torch.Generator().manual_seed(5))
    ref = (((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()
    assert loss.item() == pytest.approx(ref.item(), rel=1e-6)
    # The same pass through forward (what a DDP-wrapped model calls).
    out = enc(x, pretrain=True, generator=torch.Generator().manual_seed(5))
    assert out.aux_losses["mae"].item() == pytest.approx(loss.item(), rel=1e-6)
    torch.testing.assert_close(out.extras["mask"], mask)
    # Predictions on visible patches get no gradient.
    pred.retain_grad()
    ((((pred - target) ** 2).mean(-1) * mask).sum() / mask.sum()).backward()
    assert torch.all(pred.grad[mask == 0] == 0)


def test_pretraining_lowers_the_masked_loss(one_thread):
    torch.manual_seed(0)
    enc = build_encoder("mbm", TINY, n_voxels=32, target_shape=(6,))
    # Rank-1 voxels (one latent factor times a fixed pattern): the visible patches determine the masked ones.
    g0 = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, generator=g0) @ torch.randn(1, 32, generator=g0)
    opt = torch.optim.AdamW(enc.pretrain_parameters().values(), lr=1e-2)
    g = torch.Generator().manual_seed(2)
    first = enc.pretrain_loss(x, generator=torch.Generator().manual_seed(9)).item()
    for _ in range(80):
        loss = enc.pretrain_loss(x, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last = enc.pretrain_loss(x, generator=torch.Generator().manual_seed(9)).item()
    assert last < 0.5 * first


def test_save_load_identical_outputs(tmp_path):
    torch.manual_seed(0)
    enc = build_encoder("mbm", TINY, n_voxels={"a": 30, "b": 17}, target_shape=(2, 6)).eval()
    enc.save(tmp_path / "mbm")
    back = load_encoder_folder(tmp_path / "mbm").eval()
    assert isinstance(back, MBMEncoder) and back.config == enc.config
    x = _betas(3, 17)
    torch.testing.assert_close(enc(x, "b").embedding, back(x, "b").embedding, rtol=0, atol=0)
    g1, g2 = torch.Generator().manual_seed(4), torch.Generator().manual_seed(4)
    assert enc.pretrain_loss(_betas(3, 30), "a", generator=g1).item() == back.pretrain_loss(
        _betas(3, 30), "a", generator=g2).item()


def test_input_only_trains_the_subject_mapper():
    enc = build_encoder("mbm", TINY, n_voxels={"a": 30}, target_shape=(6,))
    enc.add_subject("b", 21)
    names = enc.set_trainable("input_only", subject="b")
    assert names and all(n.startswith("subject_layers.b.") for n in names)
    assert "head.weight" not in enc.pretrain_parameters()


def test_config_checks():
    with pytest.raises(ConfigError, match="heads"):
        MBMConfig(dim=10, heads=3)
    with pytest.raises(ConfigError, match="mask_ratio"):
        MBMConfig.from_dict({"mask_ratio": 1.0})
    assert MBMConfig.from_dict(MBMConfig().to_dict()) == MBMConfig()
