"""The small-dataset flow in the app, on a flattened column-major MATLAB file (grey, with prior images): open it,
train pixel-ridge, reconstruct (the predicted images), and train a generator on the subject's images from the
Reconstruction panel with progress, cancel and continue."""

from __future__ import annotations

from functools import partial

import numpy as np

from tests.engine.data.own_fixtures import write_flat_matlab


def test_matlab_subject_pixel_ridge_and_generator_training(qtbot, window, tmp_path, monkeypatch):
    from engine.recon import own_generator
    from engine.train.presets import get_preset

    # a tiny network; enough steps that the cancel (sent at the first checkpoint) lands before the end
    tiny = own_generator.OwnGeneratorConfig(n_components=8, unet_channels=(16, 16, 32), steps=120, batch_size=4,
                                            checkpoint_every=2, warmup=2)
    monkeypatch.setattr(own_generator, "train_generator_job", partial(own_generator.train_generator_job, config=tiny))
    info = write_flat_matlab(tmp_path / "data", n_train=60, n_test=6, size=12, n_voxels=40, prior=10)
    window.settings.set_value("folders/runs", str(tmp_path / "runs"))
    with qtbot.waitSignal(window.subject_loaded, timeout=30000):
        window.open_subject(str(info["mapping"]))
    s = window.context.subject.subject
    assert s.image_shape == (12, 12, 3) and s.prior_images.shape[0] == 10
    assert np.array_equal(np.asarray(s.images)[:60, :, :, 0], info["train"])  # column-major rows read right

    tp, rp = window.panels["training"], window.panels["reconstruction"]
    tp.form.set_config(get_preset("pixel-ridge", s))
    assert tp.start_training() is not None
    qtbot.waitUntil(lambda: tp.worker is None, timeout=90000)
    assert rp.run_dir == tp.run_dir and rp.can_reconstruct and "pixel decoder" in rp.decoder_row.decoder_label.text()
    rp.settings_row.samples.setValue(1)
    assert rp.reconstruct_all() is not None
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    assert len(rp.results) == 6
    r = next(iter(rp.results.values()))
    assert r.samples.shape[1:3] == (12, 12) and (r.samples[..., 0] == r.samples[..., 1]).all()  # grey stays grey

    # generator: cancel at the first checkpoint, then the same button continues from it
    out = own_generator.default_generator_folder(s)
    assert rp.decoder_row.generator_btn.isEnabled()
    worker = rp.start_generator_training()
    assert worker is not None and not rp.decoder_row.generator_btn.isEnabled()
    assert rp.settings_row.cancel_btn.isEnabled()
    worker.event.connect(lambda ev: rp.cancel() if type(ev).__name__ == "Checkpoint" else None)
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    assert rp.comparison.progress.format() == "Cancelled" and not out.exists()
    assert (out.with_name(out.name + own_generator.RESUME_SUFFIX) / "state.json").is_file()
    assert rp.start_generator_training() is not None
    assert "Continuing" in rp.comparison.title.text()
    qtbot.waitUntil(lambda: rp.worker is None, timeout=120000)
    assert (out / "generator.json").is_file() and rp.comparison.progress.format() == "Done"
