"""Mixture-of-Experts encoder: topologies, dispatch and capacity, routing records, router-only fine-tuning, a toy
problem whose routing has to separate two groups of inputs, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.errors import ConfigError
from engine.models.registry import load_encoder_folder
from engine.models.losses import mse_loss
from engine.models.moe import MoEConfig, MoEEncoder
from engine.models.moe_dispatch import dispatch_mask, expert_capacity
from engine.models.registry import build_encoder

TINY = {"hidden": 16, "n_blocks": 1, "dropout": 0.0}
LAYOUTS = [
    {"topology": "flat", "n_experts": [4]},
    {"topology": "multi", "n_experts": [2, 4]},
    {"topology": "hierarchical", "n_experts": [2, 4, 8]},
    {"topology": "hierarchical", "n_experts": [2, 4], "routing": "token_choice", "top_k": 2, "balance": "switch"},
]


def _betas(n, v, seed=0):
    return torch.randn(n, v, generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models run faster without intra-op threads
    yield
    torch.set_num_threads(n)


@pytest.mark.parametrize("layout", LAYOUTS, ids=lambda d: f"{d['topology']}-{len(d['n_experts'])}")
@pytest.mark.parametrize("target_shape", [(6,), (2, 5)])
def test_shapes_and_aux_loss(layout, target_shape):
    torch.manual_seed(0)
    enc = build_encoder("moe", {**TINY, **layout}, n_voxels={"a": 20, "b": 13}, target_shape=target_shape)
    out = enc(_betas(4, 13), subject="b")
    n_levels = len(layout["n_experts"])
    assert out.embedding.shape == (4, *target_shape)
    assert out.retrieval.shape == (4, int(np.prod(target_shape)))
    assert out.extras["levels"].shape == (n_levels, 4, *target_shape)
    torch.testing.assert_close(out.extras["levels"].mean(0), out.embedding)
    assert out.aux_losses["load_balance"].ndim == 0
    out.embedding.sum().backward()
    assert enc.levels[0].router.weight.grad is not None


def test_expert_choice_capacity_respected():
    probs = torch.rand(3, 2, 10, 4, generator=torch.Generator().manual_seed(0)).softmax(-1)
    for cf in (1.0, 0.5, 2.0):
        mask = dispatch_mask(probs, "expert_choice", cf)
        k = expert_capacity(10, 4, "expert_choice", cf)
        assert k == max(1, min(10, int(10 / 4 * cf)))
        assert torch.all(mask.sum(dim=-2) == k)  # every expert takes exactly k units
        # ... and they are its k most probable units.
        kth = probs.topk(k, dim=-2).values[..., -1:, :]
        assert torch.all(probs[mask] >= kth.expand_as(probs)[mask])


def test_token_choice_capacity_and_top_k():
    probs = torch.rand(5, 1, 12, 3, generator=torch.Generator().manual_seed(1)).softmax(-1)
    mask = dispatch_mask(probs, "token_choice", 1.0, top_k=2)
    cap = expert_capacity(12, 3, "token_choice", 1.0, 2)
    assert cap == 8
    assert torch.all(mask.sum(-1) <= 2) and torch.all(mask.sum(-2) <= cap)
    # With a very tight capacity some units are dropped, never more than capacity per expert.
    tight = dispatch_mask(probs, "token_choice", 0.25, top_k=1)
    assert torch.all(tight.sum(-2) <= expert_capacity(12, 3, "token_choice", 0.25, 1))
    assert torch.all(tight.sum(-1) <= 1)
    # A unit never goes to an expert it did not pick.
    picked = probs.argmax(-1, keepdim=True)
    assert torch.all(tight.float().argmax(-1, keepdim=True)[tight.any(-1, keepdim=True)] ==
                     picked[tight.any(-1, keepdim=True)])


def test_routing_noise_only_in_training():
    torch.manual_seed(0)
    enc = build_encoder("moe", {**TINY, "n_experts": [2, 4], "router_noise": 0.05}, n_voxels=12,
                        target_shape=(4,))
    x = _betas(3, 12)
    enc.eval()
    torch.testing.assert_close(enc(x).embedding, enc(x).embedding, rtol=0, atol=0)
    enc.train()
    assert not torch.equal(enc(x).embedding, enc(x).embedding)


def test_routing_weights_records():
    torch.manual_seed(0)
    enc = build_encoder("moe", {**TINY, "n_experts": [2, 4, 8]}, n_voxels={"a": 12}, target_shape=(4,))
    rw = enc.routing_weights(_betas(7, 12).numpy(), "a", batch_size=3)
    assert rw.subject == "a" and rw.n_experts == [2, 4, 8]
    lv0, lv1, lv2 = rw.levels
    assert lv0.weights.shape == (7, 16, 2) and lv0.source == "input" and list(lv0.parents) == [-1, -1]
    # Expert choice at capacity 1: each expert takes half of the units in every trial.
    assert np.all((lv0.weights > 0).sum(axis=1) == 8)
    for lv in rw.levels:
        np.testing.assert_allclose(lv.usage.sum(axis=1), 1.0, rtol=1e-5)
    # Level 1 routes the parents' hidden units (8 each) to their own 2 children only.
    assert lv1.weights.shape == (7, 16, 4) and list(lv1.parents) == [0, 0, 1, 1]
    assert np.all(lv1.weights[:, :8, 2:] == 0) and np.all(lv1.weights[:, 8:, :2] == 0)
    assert lv2.weights.shape == (7, 16, 8) and list(lv2.parents) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert enc.training  # the mode is restored


def test_router_only_freezes_experts_and_projectors():
    torch.manual_seed(0)
    enc = build_encoder("moe", {**TINY, "n_experts": [2, 4]}, n_voxels={"old": 12}, target_shape=(4,))
    enc.add_subject("new", 9)
    groups = enc.param_groups("router_only", subject="new", weight_decay=0.01)
    trainable = {n for n, p in enc.named_parameters() if p.requires_grad}
    expected = {"subject_layers.new.weight", "subject_layers.new.bias"} | {
        f"levels.{i}.router.{k}" for i in range(2) for k in ("weight", "unit_bias")}
    assert trainable == expected
    assert sum(len(g["params"]) for g in groups) == len(expected)
    out = enc(_betas(5, 9), subject="new")
    (out.embedding.pow(2).mean() + out.aux_losses["load_balance"]).backward()
    for name, p in enc.named_parameters():
        if name in expected:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
        else:
            assert p.grad is None, name
    before = {n: p.detach().clone() for n, p in enc.named_parameters()}
    torch.optim.AdamW(groups, lr=1e-2).step()
    for name, p in enc.named_parameters():
        assert torch.equal(p, before[name]) == (name not in expected), name


def test_moe_learns_to_route_two_groups_apart(one_thread):
    """Targets x0·x1 and x2·x3: each expert sees only 2 of the 4 units, so the product of a pair can only be computed
    if both of its units reach the same expert. Routing must learn to send {0, 1} and {2, 3} to different experts."""
    torch.manual_seed(0)
    enc = build_encoder("moe", {"hidden": 4, "topology": "flat", "n_experts": [2], "n_blocks": 1, "expert_width": 16,
                                "dropout": 0.0, "retrieval": False, "router_noise": 1e-2},
                        n_voxels=4, target_shape=(2,))
    with torch.no_grad():  # units = voxels, so the test looks at routing alone
        enc.subject_layer(None).weight.copy_(torch.eye(4))
        enc.subject_layer(None).bias.zero_()
    routers = list(enc._router_parameters().values())
    rest = [p for n, p in enc.named_parameters() if not n.startswith("subject_layers")
            and all(p is not r for r in routers)]
    opt = torch.optim.Adam([{"params": rest, "lr": 1e-2}, {"params": routers, "lr": 0.1}])
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        x = torch.randn(64, 4, generator=g)
        y = torch.stack([x[:, 0] * x[:, 1], x[:, 2] * x[:, 3]], dim=1)
        loss = mse_loss(enc(x).embedding, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    rw = enc.routing_weights(torch.randn(128, 4, generator=g).numpy())
    taken = (rw.levels[0].weights > 0).mean(axis=0)  # (units, experts): how often each expert takes each unit
    first = int(np.argmax(taken[0]))
    assert taken[0, first] > 0.95 and taken[1, first] > 0.95
    assert taken[2, 1 - first] > 0.95 and taken[3, 1 - first] > 0.95
    assert loss.item() < 0.2  # products of unit-variance inputs have variance 1


def test_save_load_identical_outputs_and_routing(tmp_path):
    torch.manual_seed(0)
    cfg = {**TINY, "n_experts": [2, 4], "routing": "token_choice", "top_k": 2}
    enc = build_encoder("moe", cfg, n_voxels={"a": 11, "b": 9}, target_shape=(2, 3)).eval()
    enc.save(tmp_path / "moe")
    back = load_encoder_folder(tmp_path / "moe")
    assert isinstance(back, MoEEncoder) and back.config == enc.config and back.subjects == enc.subjects
    back.eval()
    x = _betas(4, 9)
    torch.testing.assert_close(enc(x, "b").embedding, back(x, "b").embedding, rtol=0, atol=0)
    np.testing.assert_array_equal(enc.routing_weights(x, "b").levels[1].weights,
                                  back.routing_weights(x, "b").levels[1].weights)


def test_config_checks():
    with pytest.raises(ConfigError, match="topology 'flat'"):
        MoEConfig(topology="flat", n_experts=(2, 4))
    with pytest.raises(ConfigError, match="hierarchical"):
        MoEConfig(topology="hierarchical", n_experts=(2, 3))
    with pytest.raises(ConfigError, match="routing"):
        MoEConfig.from_dict({"routing": "random"})
    cfg = MoEConfig.from_dict({"n_experts": [2, 4], "capacity_factor": 2})
    assert cfg.n_experts == (2, 4) and cfg.capacity_factor == 2.0
    assert MoEConfig.from_dict(cfg.to_dict()) == cfg


@settings(max_examples=40, deadline=None)
@given(hidden=st.integers(1, 4096), levels=st.lists(st.integers(1, 3), min_size=1, max_size=4),
       routing=st.sampled_from(["expert_choice", "token_choice"]), cf=st.floats(0.1, 4.0),
       noise=st.floats(0.0, 0.1), bias=st.booleans(), balance=st.sampled_from(["mse", "switch"]))
def test_config_round_trip_property(hidden, levels, routing, cf, noise, bias, balance):
    experts, e = [], 1
    for f in levels:  # each level a larger multiple of the previous one: valid for every topology but flat
        e *= f + 1
        experts.append(e)
    cfg = MoEConfig(hidden=hidden, n_experts=tuple(experts), routing=routing, capacity_factor=cf, router_noise=noise,
                    router_unit_bias=bias, balance=balance, topology="hierarchical")
    assert MoEConfig.from_dict(cfg.to_dict()) == cfg
    assert MoEConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_roi_grouped_input_units_read_only_their_group_and_persist(tmp_path):
    torch.manual_seed(0)
    cfg = {**TINY, "hidden": 12, "topology": "hierarchical", "n_experts": [2, 4],
           "roi_groups": [["V1", "V2"], ["LO"]], "roi_group_prior": 3.0}
    enc = build_encoder("moe", cfg, n_voxels={"s": 10}, target_shape=(3,))
    rois = {"V1": np.arange(10) < 3, "V2": (np.arange(10) >= 3) & (np.arange(10) < 5), "LO": np.arange(10) >= 7}
    groups = enc.set_voxel_groups("s", rois)
    assert groups.tolist() == [0, 0, 0, 0, 0, -1, -1, 1, 1, 1]  # voxels 5, 6 are in no group: every unit reads them
    x = _betas(4, 10).requires_grad_(True)
    units = enc.subject_layer("s")(x)
    units[:, :6].sum().backward()  # units 0-5 form group 0 (12 units, 2 groups)
    assert torch.all(x.grad[:, 7:] == 0) and torch.all(x.grad[:, :7] != 0)
    # The prior: level-0 units of group 0 start on expert 0, group 1 on expert 1; the routing table follows.
    from engine.models.routing import expert_roi_table, voxel_routing

    table = expert_roi_table(voxel_routing(enc, "s", _betas(16, 10).numpy())[0], rois)
    assert table[0, 0] > 0.8 and table[1, 2] > 0.8  # V1 → expert 0, LO → expert 1
    enc.save(tmp_path / "moe")
    back = load_encoder_folder(tmp_path / "moe")
    assert back.subject_layer("s").voxel_group.tolist() == groups.tolist()
    enc.eval(), back.eval()
    torch.testing.assert_close(enc(x.detach(), "s").embedding, back(x.detach(), "s").embedding, rtol=0, atol=0)


def test_router_parameters_get_their_own_learning_rate_group():
    enc = build_encoder("moe", {**TINY, "n_experts": [2, 4]}, n_voxels=6, target_shape=(3,))
    groups = {g["name"]: g for g in enc.param_groups("all", weight_decay=0.01, router_lr_scale=10.0)}
    routers = {id(p) for p in enc._router_parameters().values()}
    assert {id(p) for p in groups["router"]["params"]} == routers
    assert groups["router"]["lr_scale"] == 10.0 and groups["router"]["weight_decay"] == 0.0
    assert not routers & {id(p) for g in ("decay", "no_decay") for p in groups[g]["params"]}
    assert sum(len(g["params"]) for g in groups.values()) == len(list(enc.parameters()))


def test_roi_group_config_checks():
    with pytest.raises(ConfigError, match="roi_groups"):
        MoEConfig(roi_groups=(("V1",), ("V1", "V2")))
    with pytest.raises(ConfigError, match="roi_groups"):
        MoEConfig(roi_groups=((),))
    with pytest.raises(ConfigError, match="roi_group_prior"):
        MoEConfig(roi_group_prior=-1.0)
