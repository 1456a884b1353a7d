import numpy as np
import torch

from engine.recon.timestep_router import TimestepRouter


def test_weights_per_step_are_a_distribution_and_start_coarse_to_fine():
    r = TimestepRouter(4)
    w = r.weights_per_step(np.linspace(999, 0, 10))
    assert w.shape == (10, 4)
    np.testing.assert_allclose(w.sum(1), 1.0, atol=1e-5)
    # Initial prior: the coarsest level dominates early (t high), the finest late (t low).
    assert w[0].argmax() == 0 and w[-1].argmax() == 3


def test_mix_weights_levels_per_sample_and_learns():
    torch.manual_seed(0)
    r = TimestepRouter(3)
    levels = torch.randn(3, 5, 8)
    t = torch.tensor([900, 10, 500, 0, 999])
    out = r.mix(levels, t)
    w = r(t)
    assert out.shape == (5, 8)
    assert torch.allclose(out[1], (w[1, :, None] * levels[:, 1]).sum(0), atol=1e-6)
    out.sum().backward()
    assert r.keys.grad is not None and r.slope.grad is not None


def test_router_round_trips(tmp_path):
    r = TimestepRouter(2, dim=16)
    r.save(tmp_path / "router")
    q = TimestepRouter.load(tmp_path / "router")
    np.testing.assert_allclose(q.weights_per_step([999, 500, 1]), r.weights_per_step([999, 500, 1]))
