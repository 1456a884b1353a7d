"""The Training panel's config form offers the pixel decoder's basis (pixel-ridge runs only)."""

from __future__ import annotations

from engine.train.presets import get_preset
from neurolens_app.widgets.config_form import TrainConfigForm


def test_the_form_edits_the_pixel_basis_of_pixel_ridge_runs_only(qtbot):
    form = TrainConfigForm()
    qtbot.addWidget(form)
    form.set_config(get_preset("pixel-ridge"))
    assert form.pixel_basis.isEnabled() and form.pixel_basis.currentText() == "pixels"
    assert not form.pca_components.isEnabled()  # K belongs to the PCA basis
    form.pixel_basis.setCurrentText("pca")
    assert form.pca_components.isEnabled()
    form.pca_components.setValue(40)
    cfg = form.config()
    assert (cfg.data.pixel_basis, cfg.data.pca_components, cfg.data.embedder) == ("pca", 40, "stimulus-pixels")
    form.pixel_basis.setCurrentText("multiscale")
    assert form.config().data.pixel_basis == "multiscale" and not form.pca_components.isEnabled()

    form.set_config(cfg)  # a saved config shows its basis
    assert form.pixel_basis.currentText() == "pca" and form.pca_components.value() == 40
    form.embedder.setCurrentText("demo")  # another target: no pixel basis, and the config stays valid
    assert not form.pixel_basis.isEnabled() and form.config().data.pixel_basis == "pixels"
    form.set_config(get_preset("demo-mlp"))
    assert not form.pixel_basis.isEnabled() and form.config().data.pixel_basis == "pixels"


def test_the_reconstruction_panel_names_the_pixel_basis_of_a_run(tmp_path):
    import json

    from engine.recon.decoder import decoder_state

    (tmp_path / "model").mkdir()
    info = {"kind": "ridge", "subject": "s", "embedder": "stimulus-pixels", "target": "pooled", "target_shape": [784],
            "pixel_basis": {"kind": "pca", "n_components": 40}}
    (tmp_path / "model" / "run_model.json").write_text(json.dumps(info))
    text, can_reconstruct, _ = decoder_state(tmp_path)
    assert "PCA K=40" in text and can_reconstruct
    info["pixel_basis"] = {"kind": "multiscale"}
    (tmp_path / "model" / "run_model.json").write_text(json.dumps(info))
    assert "multi-scale" in decoder_state(tmp_path)[0]
