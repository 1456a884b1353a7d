"""Fixtures of the training-engine tests: a tiny subject on disk and tiny configs of every model kind."""

from __future__ import annotations

import pytest

from engine.train.config import TrainConfig

def tiny_config(kind: str = "mlp", **overrides) -> TrainConfig:
    """The ``tiny-<kind>`` preset (trains in about a second on pixel targets) with top-level overrides."""
    from engine.train.presets import get_preset

    return get_preset(f"tiny-{kind}").with_overrides(overrides)


@pytest.fixture(scope="session")
def tiny_subject_path(tmp_path_factory):
    from engine.data.native import write_subject
    from tests.helpers import make_tiny_subject

    path = tmp_path_factory.mktemp("train") / "tiny.nlsubj"
    write_subject(make_tiny_subject(n_train=96, n_test_images=8, repeats=2, n_voxels=48), path)
    return path
