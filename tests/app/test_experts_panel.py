"""Experts panel parts: the ground-truth check's distance, and a click on an expert painting it on the brain view."""

from __future__ import annotations

import numpy as np

from neurolens_app.panels.experts import (EXPERT_OVERLAY, ExpertAnalysis, LevelAnalysis, ground_truth_check,
                                          js_distance)


def test_ground_truth_check_separates_only_what_is_separate(rng):
    n = 400
    rois = {"V1": np.arange(n) < 100, "V2": (np.arange(n) >= 100) & (np.arange(n) < 200),
            "LO": (np.arange(n) >= 200) & (np.arange(n) < 300), "VOT": np.arange(n) >= 300}
    early = np.arange(n) < 200
    separated = np.where(early[:, None], [0.9, 0.1], [0.1, 0.9]) + rng.uniform(0, 0.01, (n, 2))
    separated /= separated.sum(1, keepdims=True)
    mixed = rng.dirichlet([5, 5], n)
    c = ground_truth_check([separated, mixed], rois)
    assert c.early == ["V1", "V2"] and c.category == ["LO", "VOT"]
    assert c.js_distance[0] > 0.5 > c.null_95[0]
    assert c.js_distance[1] < c.null_95[1] * 3 and c.js_distance[1] < 0.1
    assert np.argmax(c.early_dist[0]) == 0 and np.argmax(c.category_dist[0]) == 1
    assert js_distance([1, 0], [0, 1]) == 1.0 and js_distance([0.5, 0.5], [0.5, 0.5]) == 0.0
    assert ground_truth_check([separated], {"V1": rois["V1"]}) is None  # no category-selective ROI


def test_clicking_an_expert_paints_it_on_the_brain(qtbot, loaded_window):
    win = loaded_window
    s = win.context.subject.subject
    ep = win.panels["experts"]
    w = np.random.default_rng(1).dirichlet([1, 1, 1], s.n_voxels).astype(np.float32)
    table = np.stack([w[np.asarray(m, bool)].mean(0) for m in s.rois.values()], axis=1)
    level = LevelAnalysis(3, w, table, np.array([[0, 1], [2, 3], [4, 5]]), np.full(3, 1 / 3), 0.9,
                          np.zeros(s.n_voxels, np.float32))
    ep._generation += 1
    before = win.context.overlays.current
    ep._on_analysis(ep._generation, ExpertAnalysis("runs/x", list(s.rois), [level]))
    assert win.context.overlays.current == before  # a new analysis does not take over the brain view
    assert EXPERT_OVERLAY in win.context.overlays  # but the map is there to choose
    assert (ep.heatmap.rowCount(), ep.heatmap.columnCount()) == (3, len(s.rois))
    assert ep.heatmap.item(0, 0).text() == f"{table[0, 0]:.3f}"
    ep.heatmap.row_clicked.emit(2)
    ov = win.context.overlays.current_overlay()
    assert ov.name == EXPERT_OVERLAY
    np.testing.assert_array_equal(ov.values, w[:, 2])
    assert ep.images.count() == 2 and "Expert 2" in ep.categories.text()
    ep.show_entropy_on_brain()
    assert "entropy" in win.context.overlays.current


def test_the_check_says_when_the_split_was_a_starting_prior(qtbot, loaded_window):
    win = loaded_window
    s = win.context.subject.subject
    ep = win.panels["experts"]
    w = np.zeros((s.n_voxels, 2), np.float32)
    early = np.asarray(s.rois["V1"], bool)
    w[early, 0], w[~early, 1] = 1.0, 1.0
    table = np.stack([w[np.asarray(m, bool)].mean(0) for m in s.rois.values()], axis=1)
    level = LevelAnalysis(2, w, table, np.array([[0, 1], [2, 3]]), np.full(2, 0.5), 0.5, np.zeros(s.n_voxels))
    check = ground_truth_check([w], {"V1": early, "LO": np.asarray(s.rois["LO"], bool)})
    for prior, said in ((0.0, False), (2.0, True)):
        ep._generation += 1
        ep._on_analysis(ep._generation, ExpertAnalysis("runs/x", list(s.rois), [level], check=check, prior=prior))
        assert ("starting bias" in ep.check_label.text()) is said


def test_the_headline_reconciles_per_trial_entropy_with_the_routing_share():
    """Voxels that each route to one expert (low per-voxel entropy, a clean table) while every trial spreads over
    both experts (per-trial entropy near 1): the headline gives both numbers and says why they differ."""
    from neurolens_app.panels.experts import ExpertAnalysis, LevelAnalysis, entropy_summary

    w = np.array([[0.95, 0.05]] * 5 + [[0.05, 0.95]] * 5, np.float32)
    p = np.clip(w, 1e-12, 1)
    voxel_entropy = -(p * np.log(p)).sum(1) / np.log(2)
    lv = LevelAnalysis(n_experts=2, voxel_weights=w, table=np.array([[0.95, 0.05], [0.05, 0.95]]),
                       top_images=np.zeros((2, 1), int), usage=np.array([0.5, 0.5]), trial_entropy=0.99,
                       voxel_entropy=voxel_entropy.astype(np.float32))
    text = entropy_summary(ExpertAnalysis("/runs/moe", ["V1", "LO"], levels=[lv]))
    assert f"per voxel, mean over voxels (what the table below sums by ROI): level 0 {voxel_entropy.mean():.2f}" in text
    assert "per trial (a trial's weight over the experts): level 0 0.99" in text
    assert "every image drives voxels that route to different experts" in text
