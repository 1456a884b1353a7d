"""Routing analysis for the expert views: unit → voxel attribution, expert × ROI table, top images, entropy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from engine.errors import ConfigError
from engine.models.moe import LevelRouting, RoutingWeights
from engine.models.registry import build_encoder
from engine.models.routing import (expert_roi_table, routing_entropy, top_images_per_expert, unit_routing,
                                   voxel_routing)


def _forced_moe(n_experts=(2, 4)):
    """A hierarchical MoE whose input layer maps voxels 0-3 to units 0-3 and voxels 4-7 to units 4-7, and whose
    level-0 router sends units 0-3 to expert 0 and units 4-7 to expert 1 whatever their values."""
    torch.manual_seed(0)
    enc = build_encoder("moe", {"hidden": 8, "n_experts": list(n_experts), "n_blocks": 1, "router_noise": 0.0},
                        n_voxels={"s": 8, "other": 5}, target_shape=(3,))
    with torch.no_grad():
        enc.subject_layer("s").weight.copy_(torch.eye(8))
        enc.subject_layer("s").bias.zero_()
        r = enc.levels[0].router
        r.weight.zero_()
        r.unit_bias.zero_()
        r.unit_bias[0, :4, 0] = 10.0
        r.unit_bias[0, 4:, 1] = 10.0
    return enc


def test_voxel_routing_follows_the_input_layer():
    enc = _forced_moe()
    betas = np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32)
    levels = voxel_routing(enc, "s", betas)
    assert [lv.shape for lv in levels] == [(8, 2), (8, 4)]
    for lv in levels:
        np.testing.assert_allclose(lv.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(levels[0][:4], [[1, 0]] * 4, atol=1e-3)
    np.testing.assert_allclose(levels[0][4:], [[0, 1]] * 4, atol=1e-3)
    # Level 1: children 0, 1 belong to expert 0, children 2, 3 to expert 1.
    assert np.all(levels[1][:4, 2:] < 1e-3) and np.all(levels[1][4:, :2] < 1e-3)
    with pytest.raises(ConfigError, match="Mixture-of-Experts"):
        voxel_routing(build_encoder("mlp", {"hidden": 8}, n_voxels=8, target_shape=(3,)), "default", betas)


def test_unit_routing_chains_hierarchical_levels():
    # One trial, 2 input units, 2 level-0 experts, each with 1 hidden unit routed to 2 children.
    lv0 = LevelRouting(weights=np.array([[[0.6, 0.0], [0.0, 0.9]]], np.float32),
                       usage=np.array([[0.4, 0.6]], np.float32), parents=np.array([-1, -1]), source="input")
    w1 = np.zeros((1, 2, 4), np.float32)
    w1[0, 0, :2] = [0.3, 0.1]  # parent 0's unit: 3/4 of its routed weight to child 0
    w1[0, 1, 2:] = [0.5, 0.5]
    lv1 = LevelRouting(weights=w1, usage=w1.sum(1) / w1.sum(), parents=np.array([0, 0, 1, 1]), source="parent")
    r0, r1 = unit_routing(RoutingWeights(subject="s", levels=[lv0, lv1]))
    np.testing.assert_array_equal(r0, lv0.weights)
    np.testing.assert_allclose(r1[0], [[0.45, 0.15, 0, 0], [0, 0, 0.45, 0.45]], rtol=1e-6)


def test_expert_roi_table():
    v = np.array([[1.0, 0.0], [0.8, 0.2], [0.1, 0.9], [0.3, 0.7]])
    rois = {"V1": np.array([1, 1, 0, 0], bool), "LO": np.array([0, 0, 1, 1], bool), "none": np.zeros(4, bool)}
    table = expert_roi_table(v, rois)
    assert table.shape == (2, 3)
    np.testing.assert_allclose(table[:, 0], [0.9, 0.1])
    np.testing.assert_allclose(table[:, 1], [0.2, 0.8])
    assert np.all(np.isnan(table[:, 2]))
    with pytest.raises(ConfigError, match="ROI 'bad'"):
        expert_roi_table(v, {"bad": np.ones(3, bool)})


def test_expert_roi_table_separates_forced_routing():
    enc = _forced_moe()
    betas = np.random.default_rng(1).standard_normal((10, 8)).astype(np.float32)
    level0 = voxel_routing(enc, "s", betas)[0]
    table = expert_roi_table(level0, {"early": np.arange(8) < 4, "category": np.arange(8) >= 4})
    assert table[0, 0] > 0.99 and table[1, 1] > 0.99


def test_top_images_per_expert_averages_repeats():
    usage = np.array([[0.9, 0.1], [0.1, 0.9], [0.7, 0.3], [0.5, 0.5], [0.2, 0.8]])
    image_index = np.array([5, 7, 5, 9, 7])  # image 5: 0.8/0.2, image 7: 0.15/0.85, image 9: 0.5/0.5
    top = top_images_per_expert(usage, image_index, k=2)
    np.testing.assert_array_equal(top, [[5, 9], [7, 9]])
    assert top_images_per_expert(usage, image_index, k=10).shape == (2, 3)
    with pytest.raises(ConfigError):
        top_images_per_expert(usage, image_index[:3])


def test_routing_entropy():
    assert routing_entropy(np.array([0.25, 0.25, 0.25, 0.25])) == pytest.approx(1.0)
    assert routing_entropy(np.array([0.0, 3.0, 0.0])) == pytest.approx(0.0)
    h = routing_entropy(np.array([[1.0, 1.0], [1.0, 0.0]]), normalize=False)
    np.testing.assert_allclose(h, [np.log(2), 0.0])


def test_gradient_voxel_routing_sees_what_experts_use():
    enc = _forced_moe()
    betas = np.random.default_rng(2).standard_normal((12, 8)).astype(np.float32)
    levels = voxel_routing(enc, "s", betas, method="gradient", chunk_size=5)
    assert [lv.shape for lv in levels] == [(8, 2), (8, 4)]
    np.testing.assert_allclose(levels[0].sum(axis=1), 1.0, rtol=1e-5)
    # Expert 0 never receives units 4-7, so voxels 4-7 carry no gradient to it (and vice versa).
    np.testing.assert_allclose(levels[0][:4], [[1, 0]] * 4, atol=1e-6)
    np.testing.assert_allclose(levels[0][4:], [[0, 1]] * 4, atol=1e-6)
    assert np.all(levels[1][:4, 2:] < 1e-6) and np.all(levels[1][4:, :2] < 1e-6)
    assert enc.training
    with pytest.raises(ConfigError, match="method"):
        voxel_routing(enc, "s", betas, method="saliency")
