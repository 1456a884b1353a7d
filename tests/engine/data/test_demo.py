"""The built-in demo subject: sizes, determinism, ground truth, cortical layout, signal, job and CLI.

The full-size subject comes from the session fixture ``demo_subject``; other checks use small configs. Two further
full-size creations (``ensure_demo_subject`` for determinism, the CLI with another seed) are the costly tests.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from engine.data import open_subject
from engine.data.demo import (CATEGORIES, ROI_NAMES, DemoConfig, create_demo_job, create_demo_subject,
                              default_demo_path, ensure_demo_subject, render_stimuli)
from engine.data.demo import cortex, simulate
from engine.data.demo.builder import DemoExistsError
from engine.errors import Cancelled, NeuroLensError
from engine.events import CancelToken, Finished, Progress, Started, drive

SMALL = DemoConfig(n_train_images=60, n_test_images=10, n_sessions=4, runs_per_session=2, n_voxels=400)


def _files_equal(a: Path, b: Path) -> list[str]:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())
    return [n for n in names if (a / n).read_bytes() != (b / n).read_bytes()]


# ----------------------------------------------------------------------------------------------------------------------
# Stimuli


def test_render_stimuli_shapes_and_metadata():
    s = render_stimuli(48, seed=3)
    assert s.images.shape == (48, 64, 64, 3) and s.images.dtype == np.uint8
    assert len(s.categories) >= 10 and s.categories == list(CATEGORIES)
    assert s.labels.shape == (48,) and s.labels.min() >= 0 and s.labels.max() < len(s.categories)
    assert len(s.captions) == 48
    for i in range(48):
        cap = s.captions[i]
        assert s.colour_names[s.attributes["colour"][i]] in cap
        assert s.categories[s.labels[i]].split()[0] in cap or "face" in cap
    a = s.attributes
    assert set(a) >= {"x", "y", "scale", "hue", "colour", "background"}
    assert ((a["x"] > 0) & (a["x"] < 1) & (a["y"] > 0) & (a["y"] < 1)).all()
    assert len(np.unique(a["background"])) == 4
    # Objects stand out: the image is not one flat colour.
    assert (s.images.reshape(48, -1, 3).std(1).max(1) > 10).all()


def test_render_stimuli_deterministic_and_chunkable():
    a = render_stimuli(30, seed=5, size=32)
    b = render_stimuli(30, seed=5, size=32)
    assert a.images.shape == (30, 32, 32, 3)
    assert np.array_equal(a.images, b.images) and a.captions == b.captions
    tail = render_stimuli(10, seed=5, size=32, start=20)
    assert np.array_equal(tail.images, a.images[20:]) and np.array_equal(tail.labels, a.labels[20:])
    assert not np.array_equal(render_stimuli(30, seed=6, size=32).images, a.images)


def test_object_is_drawn_where_attributes_say():
    s = render_stimuli(40, seed=1)
    energy = simulate.image_energy(s.images, 16)[1]  # colour contrast against the background
    for i in range(40):
        r, c = np.unravel_index(np.argmax(energy[i]), energy[i].shape)
        dist = np.hypot((c + 0.5) / 16 - s.attributes["x"][i], (r + 0.5) / 16 - s.attributes["y"][i])
        assert dist < 1.3 * s.attributes["scale"][i] + 0.07


# ----------------------------------------------------------------------------------------------------------------------
# The full-size demo subject (session fixture)


def test_demo_summary_counts(demo_subject):
    s = demo_subject.summary()
    assert s["format"] == "native" and s["simulation"] is True
    assert s["name"] == "demo-sub01"
    assert s["n_trials"] == 2300 and s["n_images"] == 2100
    assert 3000 <= s["n_voxels"] <= 4000
    assert s["image_shape"] == [64, 64, 3]
    assert s["splits"] == {"train": 2000, "test": 300}
    assert s["n_train_images"] == 2000 and s["n_test_images"] == 100 and s["repeats"] == 3
    assert s["n_sessions"] == 8 and s["n_categories"] >= 10 and s["has_captions"]
    assert list(s["rois"]) == list(ROI_NAMES) and all(n > 0 for n in s["rois"].values())
    assert sum(s["rois"].values()) == s["n_voxels"]
    assert s["surface"] and s["preprocessing"] == []
    assert demo_subject.betas.dtype == np.float32


def test_inspect_json_subprocess(demo_subject_path, demo_subject):
    out = subprocess.run([sys.executable, "-m", "engine.cli.main", "inspect", "--json", str(demo_subject_path)],
                         capture_output=True, text=True, timeout=120, check=True)
    got = json.loads(out.stdout)
    want = demo_subject.summary()
    for key in ("format", "n_trials", "n_voxels", "n_images", "image_shape", "rois", "splits", "n_test_images",
                "repeats", "simulation"):
        assert got[key] == want[key], key
    assert got["n_test_images"] == 100 and got["repeats"] == 3


def test_trial_design(demo_subject):
    t = demo_subject.trials
    train = demo_subject.split_indices("train")
    assert np.array_equal(np.sort(t.image_index[train]), np.arange(2000))  # every training image once
    images, groups = demo_subject.repeat_groups("test")
    assert np.array_equal(images, np.arange(2000, 2100)) and groups.shape == (100, 3) and (groups >= 0).all()
    # Repeats of one test image fall in different sessions, numbered in presentation order.
    assert all(len(set(t.session[g])) == 3 for g in groups)
    assert (t.repeat[groups] == np.arange(3)).all()
    assert set(np.unique(t.session)) == set(range(1, 9)) and set(np.unique(t.run)) == set(range(1, 11))
    assert demo_subject.stimuli.labels.shape == (2100,) and len(demo_subject.stimuli.captions) == 2100


def test_ground_truth_files_and_consistency(demo_subject_path, demo_subject):
    assert (demo_subject_path / "ground_truth.npz").is_file()
    gt = demo_subject.ground_truth
    n = demo_subject.n_voxels
    for key in ("prf_x", "prf_y", "prf_size", "category_tuning", "noise_ceiling_true", "roi_id", "ncsnr_true"):
        assert key in gt and gt[key].shape[0] == n, key
    assert gt["category_tuning"].shape == (n, len(demo_subject.stimuli.categories))
    assert np.isfinite(gt["prf_x"]).all() and (gt["prf_size"] > 0).all()
    labels, names = demo_subject.roi_labels()
    assert names == list(ROI_NAMES) and np.array_equal(gt["roi_id"], labels - 1)
    nc_true = gt["noise_ceiling_true"]
    assert ((nc_true >= 0) & (nc_true <= 1)).all()
    # pRFs grow along the hierarchy.
    med = [np.median(gt["prf_size"][demo_subject.rois[r]]) for r in ROI_NAMES]
    assert med[0] < med[1] < med[2] < med[3] < med[4]
    meta = json.loads((demo_subject_path / "subject.json").read_text())
    prov = meta["provenance"]
    assert prov["simulation"] is True and prov["generator"] == "neurolens demo"
    assert prov["seed"] == 0 and prov["subject"] == 1 and prov["preprocessing"] == [] and prov["sources"]


def test_noise_ceiling_spread(demo_subject):
    nc = np.asarray(demo_subject.voxels.noise_ceiling, np.float64)
    gt = demo_subject.ground_truth
    nc_true = np.asarray(gt["noise_ceiling_true"], np.float64)
    scale = demo_subject.provenance["design"]["snr_scale"]
    assert scale == simulate.DEMO_SNR_SCALE
    # The same voxels at NSD's single-trial SNR: NSD-like ceilings (most between 0.1 and 0.7)
    nsd_like = simulate.noise_ceiling_from_ncsnr(np.asarray(gt["ncsnr_true"]) / scale, 3)
    assert np.mean((nsd_like >= 0.1) & (nsd_like <= 0.7)) > 0.6 and 0.45 < np.median(nsd_like) < 0.75
    assert ((nc >= 0) & (nc <= 1)).all() and np.percentile(nc, 75) - np.percentile(nc, 25) > 0.05
    assert np.corrcoef(nc, nc_true)[0, 1] > 0.5  # the NSD-style estimate tracks the generating ceiling
    v1, vot = demo_subject.rois["V1"], demo_subject.rois["VOT"]
    assert np.median(nc_true[v1]) > np.median(nc_true[vot])


def test_nsd_single_trial_level_gives_nsd_like_estimated_ceilings(tmp_path):
    import dataclasses

    config = dataclasses.replace(SMALL, n_train_images=200, n_test_images=60, n_voxels=600, snr_scale=1.0)
    s = open_subject(create_demo_subject(tmp_path / "nsd.nlsubj", seed=0, subject=1, config=config))
    nc = np.asarray(s.voxels.noise_ceiling, np.float64)
    assert 0.25 < np.median(nc) < 0.7 and np.percentile(nc, 75) - np.percentile(nc, 25) > 0.15


def test_voxels_on_both_hemispheres_of_fsaverage5(demo_subject):
    v = demo_subject.voxels
    assert set(np.unique(v.hemi)) == {0, 1}
    hems = cortex.flat_hemispheres()
    for h in (0, 1):
        used = np.unique(hems[h].faces)
        assert np.isin(v.vertex[v.hemi == h], used).all()  # every vertex exists in the flat mesh
        for name in ROI_NAMES:
            assert np.count_nonzero(demo_subject.rois[name] & (v.hemi == h)) > 20, (name, h)
    assert len(np.unique(v.vertex.astype(np.int64) + 20000 * v.hemi.astype(np.int64))) > 1000


def test_retinotopy_follows_layout(demo_subject):
    gt, v, rois = demo_subject.ground_truth, demo_subject.voxels, demo_subject.rois
    early = rois["V1"] | rois["V2"] | rois["V3"]
    # Left hemisphere sees the right visual field; dorsal areas the lower field.
    assert np.mean(gt["prf_x"][early & (v.hemi == 0)] > 0.5) > 0.9
    assert np.mean(gt["prf_x"][early & (v.hemi == 1)] < 0.5) > 0.9
    dorsal = early & (gt["cortex_t"] > 5)
    assert np.mean(gt["prf_y"][dorsal] > 0.5) > 0.85
    # Eccentricity grows away from the pole.
    m = rois["V1"]
    assert np.corrcoef(np.abs(gt["cortex_t"][m]), gt["prf_eccentricity"][m])[0, 1] > 0.6
    # Area boundaries are vertical meridians on the V1 side: the polar angle grows towards the V1/V2 border.
    assert np.corrcoef(gt["cortex_d"][m], np.abs(gt["prf_angle"][m]))[0, 1] > 0.5


def test_data_carry_signal(demo_subject):
    """Early-visual responses follow their pRF-predicted drive; VOT responses follow their category tuning."""
    s, gt = demo_subject, demo_subject.ground_truth
    train = s.split_indices("train")
    img = np.asarray(s.trials.image_index)[train]
    z = simulate.session_zscore(np.asarray(s.betas), s.trials.session)[train]
    v1 = np.flatnonzero(s.rois["V1"] & (gt["noise_ceiling_true"] > 0.5))[:300]
    contrast, colour = simulate.image_energy(s.images[:2000], 32)
    w = simulate.prf_weights(gt["prf_x"][v1].astype(float), gt["prf_y"][v1].astype(float),
                             gt["prf_size"][v1].astype(float), 32)
    pred = (0.5 * contrast + 0.5 * colour).reshape(2000, -1) @ w
    r = [np.corrcoef(pred[img, k], z[:, j])[0, 1] for k, j in enumerate(v1)]
    assert np.median(r) > 0.3
    vot = np.flatnonzero(s.rois["VOT"] & (gt["noise_ceiling_true"] > 0.4))[:200]
    labels = s.stimuli.labels[img]
    means = np.stack([z[labels == c][:, vot].mean(0) for c in range(len(s.stimuli.categories))], 1)
    rt = [np.corrcoef(means[k], gt["category_tuning"][j])[0, 1] for k, j in enumerate(vot)]
    assert np.median(rt) > 0.5


def test_hv4_voxels_follow_their_preferred_colour(demo_subject):
    """hV4 responses carry the colours in their field (hue / light / dark channel), not only colour edges: what the
    decoders need to tell a red object from a blue one."""
    s, gt = demo_subject, demo_subject.ground_truth
    train = s.split_indices("train")
    img = np.asarray(s.trials.image_index)[train]
    z = simulate.session_zscore(np.asarray(s.betas), s.trials.session)[train]
    chan = gt["colour_channel"]
    assert chan.dtype == np.int16 and set(np.unique(chan)) <= set(range(simulate.COLOUR_CHANNELS))
    assert len(np.unique(chan)) == simulate.COLOUR_CHANNELS  # every hue, light and dark has voxels
    hv4 = np.flatnonzero(s.rois["hV4"] & (gt["noise_ceiling_true"] > 0.4))[:200]
    maps = simulate.colour_channels(s.images[:2000], 16)  # (images, channels, 16, 16)
    w = simulate.prf_weights(gt["prf_x"][hv4].astype(float), gt["prf_y"][hv4].astype(float),
                             gt["prf_size"][hv4].astype(float), 16)
    own = np.einsum("icp,pv->icv", maps.reshape(2000, simulate.COLOUR_CHANNELS, -1), w)  # drive of every channel
    r_own = [np.corrcoef(own[img, chan[j], k], z[:, j])[0, 1] for k, j in enumerate(hv4)]
    r_other = [np.corrcoef(own[img, (chan[j] + 4) % simulate.N_HUES, k], z[:, j])[0, 1]
               for k, j in enumerate(hv4) if chan[j] < simulate.N_HUES]  # the opposite hue
    # Single trials, and the hue channel is half of the chromatic drive: r ≈ 0.14 for the own hue, 0.04 the opposite.
    assert np.median(r_own) > 0.1 and np.median(r_own) > np.median(r_other) + 0.07


# ----------------------------------------------------------------------------------------------------------------------
# Small subjects: other subjects, seeds, the job, errors


def test_other_subject_shares_images_not_voxels(tmp_path):
    a = open_subject(create_demo_subject(tmp_path / "s1.nlsubj", seed=4, subject=1, config=SMALL))
    b = open_subject(create_demo_subject(tmp_path / "s2.nlsubj", seed=4, subject=2, config=SMALL))
    assert np.array_equal(a.images, b.images) and np.array_equal(a.stimuli.labels, b.stimuli.labels)
    assert a.stimuli.captions == b.stimuli.captions
    assert b.name == "demo-sub02" and b.provenance["subject"] == 2
    assert not np.array_equal(a.voxels.vertex, b.voxels.vertex)
    assert not np.allclose(a.ground_truth["prf_x"], b.ground_truth["prf_x"])
    assert list(b.rois) == list(ROI_NAMES) and all(m.any() for m in b.rois.values())
    assert b.summary()["n_test_images"] == 10 and b.summary()["repeats"] == 3


def test_small_creation_deterministic(tmp_path):
    a = create_demo_subject(tmp_path / "a.nlsubj", seed=2, subject=1, config=SMALL)
    b = create_demo_subject(tmp_path / "b.nlsubj", seed=2, subject=1, config=SMALL)
    c = create_demo_subject(tmp_path / "c.nlsubj", seed=3, subject=1, config=SMALL)
    assert _files_equal(a, b) == []
    assert {"betas.npy", "images.npy", "voxels.npz"} <= set(_files_equal(a, c))


def test_snr_scale_weakens_signal_not_voxels(tmp_path):
    import dataclasses

    a = open_subject(create_demo_subject(tmp_path / "a.nlsubj", seed=2, subject=1, config=SMALL))
    weak = dataclasses.replace(SMALL, snr_scale=0.25)
    b = open_subject(create_demo_subject(tmp_path / "b.nlsubj", seed=2, subject=1, config=weak))
    # same voxels, receptive fields and noise; only the signal is scaled
    np.testing.assert_array_equal(a.ground_truth["prf_x"], b.ground_truth["prf_x"])
    np.testing.assert_array_equal(a.ground_truth["noise_sd"], b.ground_truth["noise_sd"])
    np.testing.assert_allclose(b.ground_truth["ncsnr_true"], 0.25 / SMALL.snr_scale * a.ground_truth["ncsnr_true"],
                               rtol=1e-5)
    assert b.provenance["design"]["snr_scale"] == 0.25
    assert np.median(b.voxels.noise_ceiling) < np.median(a.voxels.noise_ceiling) - 0.1
    with pytest.raises(ValueError, match="snr_scale"):
        DemoConfig(snr_scale=0)
    with pytest.raises(ValueError, match="snr_scale"):
        DemoConfig(snr_scale=simulate.MAX_SNR_SCALE * 1.01)
    assert DemoConfig(snr_scale=1000).snr_scale == 1000  # the documented nearly noise-free subject


def test_cli_help_states_the_default_snr_scale(capsys):
    from engine.cli.main import main

    with pytest.raises(SystemExit):
        main(["demo", "create", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert f"default {simulate.DEMO_SNR_SCALE:g}:" in text  # the help's number is the simulation's


def test_cli_refuses_bad_snr_scale(tmp_path, capsys):
    from engine.cli.main import main

    assert main(["demo", "create", str(tmp_path / "x.nlsubj"), "--snr-scale", "-1"]) == 2
    err = capsys.readouterr().err
    assert "--snr-scale" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.nlsubj").exists()


def test_job_events_and_cancel(tmp_path):
    events = []
    path = drive(create_demo_job(tmp_path / "j.nlsubj", seed=0, subject=1, config=SMALL), events.append)
    assert path == tmp_path / "j.nlsubj" and open_subject(path).is_simulation
    assert isinstance(events[0], Started) and isinstance(events[-1], Finished)
    steps = [e.step for e in events if isinstance(e, Progress)]
    assert steps == sorted(steps) and steps[-1] == events[0].total
    token = CancelToken()
    job = create_demo_job(tmp_path / "c.nlsubj", seed=0, subject=1, config=SMALL, cancel=token)

    def cancel_after_first_progress(ev):
        if isinstance(ev, Progress):
            token.set()

    with pytest.raises(Cancelled):
        drive(job, cancel_after_first_progress)
    assert not (tmp_path / "c.nlsubj").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["j.nlsubj"]  # no partial folder left behind


def test_existing_path_and_bad_subject_are_typed_errors(tmp_path):
    (tmp_path / "x.nlsubj").mkdir()
    with pytest.raises(DemoExistsError) as e:
        create_demo_subject(tmp_path / "x.nlsubj", config=SMALL)
    assert isinstance(e.value, NeuroLensError) and isinstance(e.value, FileExistsError)
    assert "x.nlsubj" in str(e.value)
    with pytest.raises(NeuroLensError, match="subject"):
        create_demo_subject(tmp_path / "y.nlsubj", subject=0, config=SMALL)


def test_estimate_noise_ceiling_recovers_known_snr():
    rng = np.random.default_rng(0)
    n_img, n_vox = 400, 50
    snr = np.linspace(0.1, 1.5, n_vox)
    signal = rng.standard_normal((n_img, n_vox)) * snr
    groups = np.arange(n_img * 3).reshape(n_img, 3)
    betas = signal[np.repeat(np.arange(n_img), 3)] + rng.standard_normal((n_img * 3, n_vox))
    session = np.tile(np.arange(3), n_img)
    nc, ncsnr = simulate.estimate_noise_ceiling(betas, session, groups)
    assert np.corrcoef(ncsnr, snr)[0, 1] > 0.95
    assert np.abs(nc - simulate.noise_ceiling_from_ncsnr(snr, 3)).mean() < 0.06


# ----------------------------------------------------------------------------------------------------------------------
# Full-size creation through the CLI (determinism) and the cached demo subject


def test_cli_demo_create_is_byte_identical(tmp_path, capsys, demo_subject_path):
    from engine.cli.main import main

    out = tmp_path / "again.nlsubj"
    assert main(["demo", "create", str(out), "--seed", "0", "--subject", "1", "--json-events"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines() if x.startswith("{")]
    assert lines[0]["event"] == "Started" and lines[-1]["event"] == "Finished"
    assert any(e["event"] == "Progress" for e in lines)
    assert _files_equal(out, demo_subject_path) == []  # same seed: byte-identical files
    assert main(["demo", "create", str(out)]) == 2  # exists: one-line error, status 2
    assert "already exists" in capsys.readouterr().err


def test_default_path_and_ensure(tmp_path, monkeypatch, demo_subject_path):
    import shutil

    from engine.data.demo import builder

    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path / "cache"))
    assert default_demo_path(3) == tmp_path / "cache" / "demo" / "demo-sub03.nlsubj"
    monkeypatch.delenv("NEUROLENS_CACHE_DIR")
    assert default_demo_path(1) == Path.home() / ".cache" / "neurolens" / "demo" / "demo-sub01.nlsubj"
    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path / "cache"))
    # Missing: created with seed 0 at the default path (the full-size creation itself is tested above).
    calls = []
    monkeypatch.setattr(builder, "create_demo_subject", lambda path, **kw: calls.append((Path(path), kw)))
    assert ensure_demo_subject(2) == default_demo_path(2)
    assert calls == [(default_demo_path(2), {"seed": 0, "subject": 2, "overwrite": False})]
    # Present: returned as is, not recreated.
    shutil.copytree(demo_subject_path, default_demo_path(1))
    assert ensure_demo_subject(1) == default_demo_path(1) and len(calls) == 1
    # Made by an older simulation: rebuilt in place.
    meta_path = default_demo_path(1) / "subject.json"
    meta = json.loads(meta_path.read_text())
    assert meta["provenance"]["model_version"] == builder.MODEL_VERSION
    meta["provenance"]["model_version"] = builder.MODEL_VERSION - 1
    meta_path.write_text(json.dumps(meta))
    assert ensure_demo_subject(1) == default_demo_path(1)
    assert calls[-1] == (default_demo_path(1), {"seed": 0, "subject": 1, "overwrite": True})
