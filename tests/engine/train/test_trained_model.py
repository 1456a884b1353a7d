"""The read side of a run folder: ``Run`` (status, provenance, model info, layout) and ``TrainedModel.open``."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from engine.data import open_subject
from engine.errors import CheckpointError, DataError
from engine.events import drive
from engine.train.dataset import average_groups
from engine.train.predict import load_encoder, model_info, predict_embeddings
from engine.train.run import Run
from engine.train.trained_model import TrainedModel
from engine.train.trainer import train_job
from tests.engine.train.conftest import tiny_config


@pytest.fixture(scope="module")
def runs(tiny_subject_path, tmp_path_factory):
    root = tmp_path_factory.mktemp("trained")
    configs = {"ridge": tiny_config("ridge"),
               "mlp": tiny_config("mlp", epochs=1).with_overrides({"model.params.blurry": True})}
    return {kind: drive(train_job(cfg, tiny_subject_path, root / kind)).run_dir for kind, cfg in configs.items()}


def test_run_reads_its_folder_without_the_caller_naming_a_file(runs, tiny_subject_path, tmp_path):
    run = Run(runs["ridge"])
    assert Run.is_run_folder(run.path) and Run.has_run_files(run.path)
    assert not Run.is_run_folder(tmp_path) and not Run.has_run_files(tmp_path)
    assert run.status()["status"] == "done"
    assert run.subject_path() == str(tiny_subject_path)
    assert run.has_model() and run.model_info() == model_info(run.path)
    assert run.model_info()["kind"] == "ridge" and run.model_info()["target_shape"] == [64]
    assert run.config_path.is_file() and run.config.name == Run.open(run.path).config.name
    assert run.decoder_dir.parent == run.path and run.recon_folder("test") == run.recon_dir / "test"
    assert run.recon_dir.parent == run.path and not run.decoder_dir.exists()


def test_a_run_without_model_or_provenance_says_so(tmp_path):
    run = Run.create(tmp_path / "new", tiny_config("ridge"))
    assert Run.is_run_folder(run.path) and not run.has_model()
    assert run.subject_path() is None  # no provenance yet: None, not an error
    with pytest.raises(CheckpointError, match="no final model yet"):
        run.model_info()
    with pytest.raises(CheckpointError, match="no final model yet"):
        TrainedModel.open(run.path)


def test_trained_model_predicts_what_predict_embeddings_predicts(runs, tiny_subject_path):
    subject = open_subject(tiny_subject_path)
    for kind, run_dir in runs.items():
        model = TrainedModel.open(run_dir)  # the subject recorded in the run's provenance
        assert str(model.subject.path) == str(tiny_subject_path)
        assert model.info == model_info(run_dir) and model.target_shape == (64,)
        got = model.predict("test")
        ref = predict_embeddings(run_dir, subject, "test")
        assert np.array_equal(got.image_index, ref.image_index)
        assert np.array_equal(got.embeddings, ref.embeddings) and np.array_equal(got.targets, ref.targets)
        voxels = model.predict("test", "average_voxels")
        assert np.array_equal(voxels.embeddings, predict_embeddings(run_dir, subject, "test",
                                                                    "average_voxels").embeddings)


def test_outputs_of_the_split_average_to_the_prediction(runs):
    # The path reconstruction takes for a jointly trained encoder or per-level outputs (betas -> outputs -> averaged
    # per image) gives what predict() gives.
    for kind, run_dir in runs.items():
        model = TrainedModel.open(run_dir)
        image_index, groups, rows = model.split("test")
        out = model.outputs(model.betas(rows))
        assert out.embeddings.shape == (len(rows), 64) and out.levels is None
        pred = model.predict("test")
        assert np.array_equal(image_index, pred.image_index)
        np.testing.assert_allclose(average_groups(out.embeddings, groups), pred.embeddings, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(model.targets()[image_index], pred.targets)
        assert (out.blurry is not None) == (kind == "mlp") == model.has_blurry_head()
        assert (pred.blurry is not None) == (kind == "mlp")
    assert type(TrainedModel.open(runs["ridge"]).encoder) is type(load_encoder(runs["ridge"]))


def test_an_explicit_subject_is_used_and_an_unrecorded_one_is_refused(runs, tiny_subject_path, tmp_path):
    subject = open_subject(tiny_subject_path)
    assert TrainedModel.open(runs["ridge"], subject).subject is subject
    run = Run(runs["ridge"])
    prov = run.provenance()
    prov["subject"].pop("path")
    run.write_provenance(prov)
    try:
        model = TrainedModel.open(run.path)
        assert model.info["kind"] == "ridge"  # the model opens; only reading the data needs the subject
        with pytest.raises(CheckpointError, match="does not name the subject's path"):
            model.subject
    finally:
        prov["subject"]["path"] = str(tiny_subject_path)
        run.write_provenance(prov)
    assert run.subject_path() == str(tiny_subject_path)


def test_a_split_without_trials_is_refused_by_name(runs, tiny_subject_path):
    from tests.helpers import make_tiny_subject

    s = open_subject(tiny_subject_path)
    model = TrainedModel.open(runs["ridge"])
    assert len(model.split("train")[2]) == int(np.sum(np.asarray(s.trials.split) == 0))
    no_test = TrainedModel.open(runs["ridge"], make_tiny_subject(n_train=20, n_test_images=0, n_voxels=48))
    with pytest.raises(DataError, match="no trials in split 'test'"):
        no_test.split("test")


def test_has_blurry_head_reads_the_encoder_config_only(runs, tmp_path):
    model = TrainedModel.open(runs["mlp"])
    cfg = json.loads((model.run.model_dir / "encoder" / "config.json").read_text())
    assert model.has_blurry_head() == bool(cfg.get("blurry") or cfg.get("config", {}).get("blurry")) is True
    assert not TrainedModel.open(runs["ridge"]).has_blurry_head()


def test_a_simulated_subject_rebuilt_with_other_data_is_refused_in_one_line(tmp_path):
    """A newer simulation (or an edited folder) under the path a run recorded must not be read as its data."""
    import dataclasses

    from engine.data.demo import DemoConfig, create_demo_subject

    small = DemoConfig(n_train_images=60, n_test_images=10, n_sessions=4, runs_per_session=2, n_voxels=300)
    path = create_demo_subject(tmp_path / "sim.nlsubj", seed=0, subject=1, config=small)
    run_dir = drive(train_job(tiny_config("ridge"), path, tmp_path / "run")).run_dir
    assert TrainedModel.open(run_dir).subject.n_trials == 90  # the same data: opens
    create_demo_subject(path, seed=0, subject=1, config=dataclasses.replace(small, snr_scale=1.0), overwrite=True)
    with pytest.raises(DataError) as err:
        TrainedModel.open(run_dir).subject
    message = str(err.value)
    assert "sim.nlsubj" in message and "'betas'" in message and "retrain" in message and "\n" not in message
    with pytest.raises(DataError, match="changed since"):  # given explicitly, the same folder is still that subject
        TrainedModel.open(run_dir, open_subject(path)).subject
    shutil.copytree(path, tmp_path / "other.nlsubj")  # another subject on purpose (cross-subject use): not checked
    other = open_subject(tmp_path / "other.nlsubj")
    assert TrainedModel.open(run_dir, other).subject is other
