"""Brain encoders are never built while another thread runs a low-memory ``from_pretrained`` (accelerate patches
``nn.Module.register_parameter`` process-wide meanwhile: a module built then would have empty meta weights)."""

from __future__ import annotations

import threading
import time

import pytest
import torch

from engine.errors import CheckpointError
from engine.models.construction import MODEL_BUILD_LOCK
from engine.models.registry import build_encoder


def test_an_encoder_waits_for_a_pretrained_load_in_another_thread_and_gets_real_weights():
    from accelerate import init_empty_weights

    entered, release = threading.Event(), threading.Event()

    def loader():  # what model_folder.load_part does around diffusers' low-memory loading
        with MODEL_BUILD_LOCK, init_empty_weights():
            entered.set()
            release.wait(10)

    a = threading.Thread(target=loader)
    a.start()
    assert entered.wait(10)
    out: dict = {}
    b = threading.Thread(target=lambda: out.setdefault("model", build_encoder(
        "mlp", {"hidden": 16, "n_blocks": 1}, n_voxels=12, target_shape=(4,))))
    b.start()
    time.sleep(0.3)
    assert "model" not in out  # still waiting for the loader
    release.set()
    a.join(10)
    b.join(10)
    assert not any(p.is_meta for p in out["model"].parameters())


def test_the_generator_loader_holds_the_lock(tmp_path):
    from engine.recon.model_folder import load_part

    class Probe:  # stands in for a diffusers model class: records whether the lock is held while it loads
        @classmethod
        def from_pretrained(cls, path, **kwargs):
            return MODEL_BUILD_LOCK._is_owned()

    assert load_part(Probe, tmp_path, "unet") is True


def test_loading_into_an_encoder_without_storage_is_refused():
    with torch.device("meta"):
        model = build_encoder("mlp", {"hidden": 16, "n_blocks": 1}, n_voxels=12, target_shape=(4,))
    real = build_encoder("mlp", {"hidden": 16, "n_blocks": 1}, n_voxels=12, target_shape=(4,))
    with pytest.raises(CheckpointError, match="meta device"):
        model.load_state_dict_checked(real.state_dict())
