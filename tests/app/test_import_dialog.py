"""The Import arrays dialog on a fixture .npz: guessed mapping, preview, validation, import through the engine."""

from __future__ import annotations

import numpy as np
import yaml


def _fixture_npz(path):
    rng = np.random.default_rng(0)
    n_train, n_test, n_vox = 40, 5, 30
    np.savez(path,
             fmri_train=rng.standard_normal((n_train, n_vox)).astype(np.float32),
             fmri_test=rng.standard_normal((n_test * 2, n_vox)).astype(np.float32),
             stim_train=rng.integers(0, 256, (n_train, 3, 12, 12)).astype(np.uint8),
             stim_test=rng.integers(0, 256, (n_test, 3, 12, 12)).astype(np.uint8),
             test_index=np.repeat(np.arange(n_test), 2),
             roi_v1=np.arange(n_vox) < 15)
    return path


def test_import_dialog_previews_validates_and_imports(qtbot, window, tmp_path):
    from neurolens_app.dialogs.import_dialog import ImportArraysDialog

    src = _fixture_npz(tmp_path / "sub01.npz")
    dlg = ImportArraysDialog(window.context, window)
    qtbot.addWidget(dlg)
    dlg.show()
    dlg.set_file(str(src))
    assert dlg.array_table.rowCount() == 6
    assert dlg.combos["betas.train"].currentText() == "fmri_train"
    assert dlg.combos["images.test"].currentText() == "stim_test"
    assert dlg.combos["trials.test_image_index"].currentText() == "test_index"
    # the images are NCHW: with the default NHWC layout the preview reports the engine's error
    qtbot.waitUntil(lambda: dlg.message.text() != "", timeout=10000)
    assert "not an image stack" in dlg.message.text() or "image" in dlg.message.text()
    dlg.layout_box.setCurrentText("NCHW")
    qtbot.waitUntil(lambda: dlg.last_preview.get("images") is not None, timeout=10000)
    assert dlg.last_preview["images"].shape == (8, 12, 12, 3)
    assert dlg.last_preview["betas_shape"] == (40, 30) and dlg.hist.listDataItems()
    assert dlg.import_button.isEnabled()
    # an invalid mapping (no training betas) disables Import and names the key
    dlg.combos["betas.train"].setCurrentText("(none)")
    assert not dlg.import_button.isEnabled() and "betas.train" in dlg.message.text()
    dlg.combos["betas.train"].setCurrentText("fmri_train")
    out = tmp_path / "sub01.nlsubj"
    dlg.out.setText(str(out))
    with qtbot.waitSignal(dlg.subject_imported, timeout=30000) as sig:
        dlg.import_button.click()
    assert sig.args[0] == str(out) and (out / "subject.json").is_file()
    mapping = yaml.safe_load((tmp_path / "sub01.mapping.yaml").read_text())
    assert mapping["images"]["layout"] == "NCHW" and mapping["rois"] == {"V1": "roi_v1"}
    from engine.data import open_subject

    s = open_subject(out)
    assert (s.n_trials, s.n_voxels, s.n_images) == (50, 30, 45) and list(s.rois) == ["V1"]
