"""Fixtures of the reconstruction tests: tiny generators and tiny trained runs, built once per session."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    # Tiny models: one thread is fastest, and two compete badly on a shared 2-core machine.
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def tiny_demo_gen(tmp_path_factory):
    """An untrained demo-layout generator (32 px) reading 64-d 'pixels' embeddings."""
    from tests.engine.recon.tiny_models import build_tiny_demo_generator

    return build_tiny_demo_generator(tmp_path_factory.mktemp("gen") / "tiny-demo")


@pytest.fixture(scope="session")
def tiny_subject_s():
    from tests.helpers import make_tiny_subject

    return make_tiny_subject()


def _train(preset: str, subject, folder):
    from engine.events import drive
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job

    drive(train_job(get_preset(preset, subject), subject, folder))
    return folder


@pytest.fixture(scope="session")
def ridge_run(tmp_path_factory, tiny_subject_s):
    return _train("tiny-ridge", tiny_subject_s, tmp_path_factory.mktemp("runs") / "ridge")


@pytest.fixture(scope="session")
def moe_run(tmp_path_factory, tiny_subject_s):
    return _train("tiny-moe", tiny_subject_s, tmp_path_factory.mktemp("runs") / "moe")


@pytest.fixture(scope="session")
def tiny_sd15(tmp_path_factory):
    from tests.engine.recon.tiny_models import build_tiny_sd15

    return build_tiny_sd15(tmp_path_factory.mktemp("sd") / "sd15")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory):
    from tests.engine.recon.tiny_models import build_tiny_sdxl

    return build_tiny_sdxl(tmp_path_factory.mktemp("sd") / "sdxl")
