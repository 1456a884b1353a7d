"""Shared fixtures. Qt runs offscreen; the demo subject is created once per test session."""

from __future__ import annotations

import os

# Qt tests render offscreen (the same pixels with or without a display); the OpenGL test, which needs a display,
# reruns itself on the X display when there is one (tests/app/test_surface3d_gl.py). An explicit QT_QPA_PLATFORM wins.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("QT_DISABLE_SHADER_DISK_CACHE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("NEUROLENS_CACHE_DIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "neurolens-test-cache"))

import numpy as np
import pytest
from hypothesis import settings

# The suite is a gate: property tests draw the same examples on every run (derandomize), so a red run means a
# change broke something. `NEUROLENS_FUZZ=1 pytest tests/engine/data` draws new random examples on each run.
settings.register_profile("suite", derandomize=True)
settings.register_profile("fuzz", derandomize=False)
settings.load_profile("fuzz" if os.environ.get("NEUROLENS_FUZZ") else "suite")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def demo_subject_path(tmp_path_factory):
    """A full demo subject (subject 1, seed 0), created once for the whole test session."""
    from engine.data.demo import create_demo_subject

    path = tmp_path_factory.mktemp("demo") / "demo-sub01.nlsubj"
    create_demo_subject(path, seed=0, subject=1)
    return path


@pytest.fixture(scope="session")
def demo_subject(demo_subject_path):
    from engine.data import open_subject

    return open_subject(demo_subject_path)


@pytest.fixture
def tiny_subject():
    """A small in-memory subject (200 train trials, 10 test images × 3 repeats, 64 voxels, 16×16 images)."""
    from tests.helpers import make_tiny_subject

    return make_tiny_subject()
