"""App test fixtures: isolated settings and logs, a small synthetic subject on fsaverage5, a window, and a check
that no worker thread outlives its test."""

from __future__ import annotations

import os

import numpy as np
import pytest

import neurolens_app  # noqa: F401 - guards against the PySide6 emit refcount bug before any Qt use


@pytest.fixture(scope="session", autouse=True)
def _app_env(tmp_path_factory):
    os.environ["NEUROLENS_LOG_DIR"] = str(tmp_path_factory.mktemp("logs"))
    yield


@pytest.fixture(scope="session", autouse=True)
def _gui_thread_collector(qapp):
    """As in the app: cyclic garbage (closed windows of earlier tests) is collected in the GUI thread only."""
    from neurolens_app.gui_gc import install_gui_collector

    collector = install_gui_collector(qapp)
    yield collector
    collector.uninstall()


@pytest.fixture(autouse=True)
def no_threads_left(qapp):
    """Fail a test that leaves a worker thread running (napari does the same)."""
    yield
    from neurolens_app.workers.engine_worker import running_threads, wait_for_threads
    from neurolens_app.workers.short_job import wait_for_short_jobs

    left = [t.objectName() for t in running_threads()]
    ok = wait_for_threads(20.0)
    wait_for_short_jobs(20000)
    assert ok, f"worker threads still running after the test: {left}"


@pytest.fixture
def settings(tmp_path):
    from neurolens_app.state.settings import AppSettings

    return AppSettings(tmp_path / "settings.ini")


def make_surface_subject(n_train: int = 120, n_test: int = 10, repeats: int = 3, seed: int = 0):
    """A small subject whose voxels lie on occipital fsaverage5 vertices of both hemispheres (≈1,600 voxels)."""
    from nilearn.datasets import load_fsaverage

    from engine.data.subject import Stimuli, Subject, TrialTable, VoxelTable

    rng = np.random.default_rng(seed)
    fs = load_fsaverage("fsaverage5")
    hemi, vert, band = [], [], []
    for h, name in enumerate(("left", "right")):
        y = fs["pial"].parts[name].coordinates[:, 1]
        idx = np.flatnonzero(y < -75)
        hemi.append(np.full(len(idx), h))
        vert.append(idx)
        band.append(np.digitize(y[idx], [-95, -85]))
    hemi, vert, band = np.concatenate(hemi), np.concatenate(vert), np.concatenate(band)
    n_vox = len(hemi)
    rois = {"LO": band == 0, "V2": band == 1, "V1": band == 2}
    n_img = n_train + n_test
    images = rng.integers(0, 256, (n_img, 16, 16, 3), dtype=np.uint8)
    image_index = np.concatenate([np.arange(n_train), np.repeat(np.arange(n_train, n_img), repeats)])
    repeat = np.concatenate([np.zeros(n_train, int), np.tile(np.arange(repeats), n_test)])
    split = np.concatenate([np.zeros(n_train, np.int8), np.ones(n_test * repeats, np.int8)])
    n_trials = len(image_index)
    betas = rng.standard_normal((n_trials, n_vox)).astype(np.float32)
    trials = TrialTable(image_index=image_index, session=1 + np.arange(n_trials) * 2 // n_trials,
                        run=np.ones(n_trials, np.int64), repeat=repeat, split=split)
    voxels = VoxelTable(hemi=hemi.astype(np.int8), vertex=vert.astype(np.int32), ijk=np.full((n_vox, 3), -1, np.int32),
                        noise_ceiling=rng.uniform(0.1, 0.7, n_vox).astype(np.float32))
    cats = ["face", "animal", "vehicle", "food"]
    stimuli = Stimuli(categories=cats, labels=np.arange(n_img) % 4, captions=[f"a {cats[i % 4]}" for i in range(n_img)])
    truth = {"prf_x": rng.standard_normal(n_vox).astype(np.float32),
             "prf_y": rng.standard_normal(n_vox).astype(np.float32),
             "prf_size": rng.uniform(0.5, 3, n_vox).astype(np.float32)}
    return Subject(betas=betas, trials=trials, images=images, voxels=voxels, rois=rois, stimuli=stimuli,
                   name="surface-test", provenance={"simulation": True, "sources": ["tests/app/conftest.py"]},
                   ground_truth=truth)


@pytest.fixture(scope="session")
def surface_subject_path(tmp_path_factory):
    from engine.data.native import write_subject

    return write_subject(make_surface_subject(), tmp_path_factory.mktemp("subj") / "surface.nlsubj")


@pytest.fixture
def window(qtbot, settings):
    from neurolens_app.main_window import MainWindow

    win = MainWindow(settings)
    qtbot.addWidget(win)
    win.resize(1200, 800)
    win.show()
    yield win
    win.close()


@pytest.fixture
def loaded_window(qtbot, window, surface_subject_path):
    """A window showing the synthetic surface subject, with the flatmap drawn."""
    with qtbot.waitSignal(window.subject_loaded, timeout=30000):
        window.open_subject(str(surface_subject_path))
    window.brain.load_mesh()
    qtbot.waitUntil(lambda: window.brain.is_drawn, timeout=60000)
    return window
