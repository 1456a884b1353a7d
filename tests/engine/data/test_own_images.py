"""Flattened image rows (shape/order), grey images, prior images: import through the real mapping path."""

from __future__ import annotations

import numpy as np
import pytest

from engine.data import open_subject
from engine.data.native import read_native, write_subject
from engine.data.readers.own_images import is_grey, unflatten_images
from engine.errors import ConfigError, SubjectFormatError
from tests.engine.data.own_fixtures import grey_images, write_flat_matlab


@pytest.mark.parametrize("v73", [False, True])
def test_column_major_rows_import_as_the_images(v73, tmp_path):
    info = write_flat_matlab(tmp_path, v73=v73, prior=5)
    s = open_subject(info["mapping"])
    assert s.image_shape == (12, 12, 3) and is_grey(np.asarray(s.images))
    assert np.array_equal(s.images[:20, :, :, 0], info["train"])
    assert np.array_equal(s.images[20:, :, :, 1], info["test"])
    assert s.prior_images.shape == (5, 12, 12, 3) and np.array_equal(s.prior_images[..., 2], info["prior"])
    assert s.provenance["image_channels"] == 1
    assert s.provenance["flattened_images"] == {"shape": [12, 12], "order": "F"}
    out = write_subject(s, tmp_path / "s.nlsubj")
    back = read_native(out)
    assert np.array_equal(back.prior_images, s.prior_images) and back.summary()["n_prior_images"] == 5


def test_order_c_against_f_differ_and_colour_rows():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 255, (3, 4, 5, 3), dtype=np.uint8)
    rows_c = imgs.reshape(3, -1)
    rows_f = np.stack([im.reshape(-1, order="F") for im in imgs])
    assert np.array_equal(unflatten_images(rows_c, (4, 5, 3), "C", "x", "k"), imgs)
    assert np.array_equal(unflatten_images(rows_f, (4, 5, 3), "F", "x", "k"), imgs)


def test_shape_that_does_not_match_the_rows_is_one_clear_line(tmp_path):
    info = write_flat_matlab(tmp_path)
    info["mapping"].write_text(info["mapping"].read_text().replace("shape: [12, 12]", "shape: [12, 11]"))
    with pytest.raises(SubjectFormatError) as e:
        open_subject(info["mapping"])
    msg = str(e.value)
    assert "\n" not in msg and "stim_train" in msg and "132 values per row" in msg and "144" in msg


@pytest.mark.parametrize("bad, key", [("order: F", "order: K"), ("shape: [12, 12]", "shape: [12]"),
                                      ("shape: [12, 12]", "shape: [12, 12, 2]")])
def test_bad_order_or_shape_keys(bad, key, tmp_path):
    info = write_flat_matlab(tmp_path)
    info["mapping"].write_text(info["mapping"].read_text().replace(bad, key))
    with pytest.raises(ConfigError) as e:
        open_subject(info["mapping"])
    msg = str(e.value)
    assert "\n" not in msg and "mapping.yaml" in msg and ("images.order" in msg or "images.shape" in msg)


def _png_folder(folder, images, mode):
    from PIL import Image

    folder.mkdir()
    for i, im in enumerate(images):
        Image.fromarray(im, mode=mode).save(folder / f"p{i:03d}.png")


def test_prior_png_folder_and_its_size_and_channel_checks(tmp_path):
    info = write_flat_matlab(tmp_path)
    text = info["mapping"].read_text()
    _png_folder(tmp_path / "ok", grey_images(4, 12, seed=5), "L")
    info["mapping"].write_text(text + "prior_images: ok\n")
    s = open_subject(info["mapping"])
    assert s.prior_images.shape == (4, 12, 12, 3) and np.array_equal(s.prior_images[..., 0], grey_images(4, 12, 5))

    _png_folder(tmp_path / "big", grey_images(2, 16), "L")
    info["mapping"].write_text(text + "prior_images: big\n")
    with pytest.raises(SubjectFormatError, match=r"another size.*expected 12×12 images.*found 16×16"):
        open_subject(info["mapping"])

    rgb = np.repeat(grey_images(2, 12)[..., None], 3, -1)
    rgb[..., 0] //= 2
    _png_folder(tmp_path / "rgb", rgb, "RGB")
    info["mapping"].write_text(text + "prior_images: rgb\n")
    with pytest.raises(SubjectFormatError) as e:
        open_subject(info["mapping"])
    assert "channel count" in str(e.value) and "1 channel (grey)" in str(e.value) and "\n" not in str(e.value)


def test_demo_create_with_own_stimuli_from_the_cli(tmp_path):
    """The demo's visual system shown a PNG folder: the stored stimuli are the user's (size, grey), the test set is
    held out and repeated, and the voxels respond to the images (early-visual voxels differ between images)."""
    from PIL import Image

    from engine.cli.main import main

    folder = tmp_path / "pngs"
    folder.mkdir()
    imgs = grey_images(40, 16, seed=2)
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(folder / f"im{i:02d}.png")
    assert main(["demo", "create", str(tmp_path / "s.nlsubj"), "--stimuli", str(folder), "--test-images", "5"]) == 0
    s = read_native(tmp_path / "s.nlsubj")
    assert s.image_shape == (16, 16, 3) and is_grey(np.asarray(s.images)) and s.is_simulation
    assert s.summary()["n_test_images"] == 5 and s.summary()["repeats"] == 3
    stored = {im[..., 0].tobytes() for im in np.asarray(s.images)}
    assert stored == {im.tobytes() for im in imgs}
    v1 = s.roi_mask("V1")
    tr = s.split_indices("train")
    by_image = np.asarray(s.betas)[tr][:, v1]
    assert np.corrcoef(by_image[:2])[0, 1] < 0.999 and "SIMULATED" in s.provenance["note"]


def test_demo_create_refuses_too_few_images(tmp_path):
    from engine.data.demo.builder import create_demo_subject
    from engine.data.demo.own_stimuli import OwnStimuli
    from engine.errors import DataError

    with pytest.raises(DataError, match="at least 20 images"):
        create_demo_subject(tmp_path / "s", stimuli=OwnStimuli(np.zeros((5, 8, 8, 3), np.uint8), None, [], "x"))
