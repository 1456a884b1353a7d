"""Native subject format: round trip, lazy opening, splits and repeat groups, and error paths."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from engine.data import open_subject
from engine.data.native import read_native, write_subject
from engine.errors import SubjectFormatError
from tests.helpers import make_tiny_subject


def test_round_trip_preserves_every_array_and_table(tmp_path):
    s = make_tiny_subject()
    p = write_subject(s, tmp_path / "s.nlsubj")
    r = open_subject(p)
    assert r.format == "native" and r.name == "tiny"
    np.testing.assert_array_equal(np.asarray(r.betas), s.betas)
    np.testing.assert_array_equal(np.asarray(r.images), s.images)
    for k, v in s.trials.as_dict().items():
        np.testing.assert_array_equal(getattr(r.trials, k), v)
    for k, v in s.voxels.as_dict().items():
        np.testing.assert_array_equal(getattr(r.voxels, k), v)
    assert list(r.rois) == list(s.rois)
    for k in s.rois:
        np.testing.assert_array_equal(r.rois[k], s.rois[k])
    assert r.stimuli.categories == s.stimuli.categories
    np.testing.assert_array_equal(r.stimuli.labels, s.stimuli.labels)
    assert r.stimuli.captions == s.stimuli.captions
    assert r.provenance["sources"] == ["tests.helpers"]
    assert "neurolens" in r.provenance["software"]


def test_large_arrays_are_memory_mapped_read_only(tmp_path):
    p = write_subject(make_tiny_subject(), tmp_path / "s.nlsubj")
    r = read_native(p)
    assert isinstance(r.betas, np.memmap) and isinstance(r.images, np.memmap)
    with pytest.raises(ValueError):
        r.betas[0, 0] = 1.0


def test_splits_and_repeat_groups(tmp_path):
    s = make_tiny_subject(n_train=50, n_test_images=4, repeats=3)
    assert len(s.split_indices("train")) == 50
    assert len(s.split_indices("test")) == 12
    imgs, groups = s.repeat_groups("test")
    np.testing.assert_array_equal(imgs, np.arange(50, 54))
    assert groups.shape == (4, 3)
    # every group holds the trials of exactly that image, ordered by repeat number
    for img, g in zip(imgs, groups):
        assert (s.trials.image_index[g] == img).all()
        np.testing.assert_array_equal(s.trials.repeat[g], [0, 1, 2])
    summ = s.summary()
    assert summ["splits"] == {"train": 50, "test": 12}
    assert summ["n_test_images"] == 4 and summ["repeats"] == 3


def test_repeat_groups_pad_missing_repeats_with_minus_one():
    s = make_tiny_subject(n_train=20, n_test_images=3, repeats=2)
    keep = np.ones(s.n_trials, bool)
    keep[s.split_indices("test")[-1]] = False  # drop the last image's 2nd repeat
    from engine.data.subject import Subject

    s2 = Subject(betas=s.betas[keep], trials=s.trials.take(np.flatnonzero(keep)), images=s.images,
                 voxels=s.voxels, rois=s.rois, stimuli=s.stimuli)
    _, groups = s2.repeat_groups("test")
    assert groups.shape == (3, 2) and groups[-1, 1] == -1 and (groups[:-1] >= 0).all()


def test_roi_labels_later_rois_win_overlaps():
    s = make_tiny_subject(n_voxels=8)
    s.rois = {"all": np.ones(8, bool), "V1": np.arange(8) < 2}
    lab, names = s.roi_labels()
    assert names == ["all", "V1"]
    np.testing.assert_array_equal(lab, [2, 2, 1, 1, 1, 1, 1, 1])


def test_write_is_atomic_and_refuses_to_clobber(tmp_path):
    s = make_tiny_subject()
    target = tmp_path / "s.nlsubj"
    write_subject(s, target)
    with pytest.raises(FileExistsError):
        write_subject(s, target)
    # an inconsistent subject is refused before anything is written; the old folder is untouched
    bad = make_tiny_subject()
    bad.rois = {"V1": np.ones(3, bool)}
    with pytest.raises(SubjectFormatError):
        write_subject(bad, target, overwrite=True)
    assert read_native(target).roi_names() == ["V1", "LO"]
    assert [p.name for p in tmp_path.iterdir()] == ["s.nlsubj"]  # no leftover partial folder


@pytest.mark.parametrize(
    "damage, needle",
    [
        (lambda p: os.remove(p / "betas.npy"), "betas.npy"),
        (lambda p: (p / "subject.json").write_text("{not json"), "subject.json"),
        (lambda p: (p / "betas.npy").write_bytes((p / "betas.npy").read_bytes()[:200]), "betas.npy"),
        (lambda p: (p / "trials.npz").write_bytes(b"garbage"), "trials.npz"),
        (lambda p: _edit_json(p / "subject.json", format="something-else"), "key 'format'"),
        (lambda p: _edit_json(p / "subject.json", n_voxels=7), "key 'n_voxels'"),
        (lambda p: _edit_json(p / "subject.json", schema_version=99), "newer NeuroLens"),
        (lambda p: _resave(p / "trials.npz", image_index=lambda a: a + 10_000), "missing image"),
        (lambda p: _resave(p / "trials.npz", split=lambda a: a + 2), "key 'split'"),
        (lambda p: _resave(p / "rois.npz", V1=lambda a: np.zeros_like(a)), "empty ROI"),
        (lambda p: _resave(p / "voxels.npz", hemi=lambda a: a[:-1]), "key 'hemi'"),
    ],
)
def test_damaged_folders_give_errors_naming_file_and_key(tmp_path, damage, needle):
    p = write_subject(make_tiny_subject(), tmp_path / "s.nlsubj")
    damage(p)
    with pytest.raises(SubjectFormatError) as e:
        read_native(p)
    assert needle in str(e.value) and str(p) in str(e.value)


def _edit_json(path, **kw):
    d = json.loads(path.read_text())
    d.update(kw)
    path.write_text(json.dumps(d))


def _resave(path, **edits):
    with np.load(path) as z:
        d = {k: z[k] for k in z.files}
    for k, f in edits.items():
        d[k] = f(d[k])
    np.savez(path, **d)


def test_object_arrays_are_never_unpickled(tmp_path):
    p = write_subject(make_tiny_subject(), tmp_path / "s.nlsubj")
    np.savez(p / "trials.npz", image_index=np.array([object()], dtype=object), session=np.zeros(1), run=np.zeros(1),
             repeat=np.zeros(1), split=np.zeros(1))
    with pytest.raises(SubjectFormatError, match="trials.npz"):
        read_native(p)
