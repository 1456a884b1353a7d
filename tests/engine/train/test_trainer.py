"""The training job: resume equivalence, cancel, atomic checkpoints, run-folder contents, every model kind."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import Cancelled, ConfigError
from engine.events import CancelToken, Checkpoint, Finished, Metric, Progress, Started, drive, event_from_dict
from engine.train.checkpoint import load_checkpoint
from engine.train.run import Run
from engine.train.trainer import resume_job, train_job
from tests.engine.train.conftest import tiny_config


def _weights(run_dir) -> dict[str, torch.Tensor]:
    return load_file(str(run_dir / "model" / "encoder" / "model.safetensors"))


def _cancel_after(n_steps: int, token: CancelToken):
    def on_event(ev):
        if isinstance(ev, Progress) and ev.step >= n_steps:
            token.set()
    return on_event


def test_resume_gives_bit_identical_weights(tiny_subject_path, tmp_path):
    # Dropout, BiMixCo (steps 1-9, across the cut) then SoftCLIP: every RNG the trainer uses is exercised.
    cfg = tiny_config("mlp", epochs=2, log_every=1, loss={"mixco_fraction": 0.75})
    full = drive(train_job(cfg, tiny_subject_path, tmp_path / "full"))

    token = CancelToken()
    with pytest.raises(Cancelled) as info:
        drive(train_job(cfg, tiny_subject_path, tmp_path / "split", cancel=token), _cancel_after(7, token))
    assert info.value.checkpoint is not None and info.value.checkpoint.endswith("step-000007")  # mid-epoch 2 of 2
    assert Run.open(tmp_path / "split").status()["status"] == "cancelled"
    resumed = drive(resume_job(tmp_path / "split"))

    assert resumed.step == full.step == 12
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert resumed.metrics == full.metrics


def test_cancel_stops_within_one_step_and_keeps_a_loadable_checkpoint(tiny_subject_path, tmp_path):
    cfg = tiny_config("moe", epochs=4)
    token = CancelToken()
    seen = []

    trigger = []

    def on_event(ev):
        seen.append(ev)
        if isinstance(ev, Progress) and ev.step >= 3 and not token.is_set():
            trigger.append(ev.step)
            token.set()

    with pytest.raises(Cancelled):
        drive(train_job(cfg, tiny_subject_path, tmp_path / "run", cancel=token), on_event)
    run = Run.open(tmp_path / "run")
    latest = run.latest_checkpoint()
    # No further step ran after the cancel request: the checkpoint is at the step that reported progress.
    assert latest.name == f"step-{trigger[0]:06d}"
    cp = load_checkpoint(latest)
    assert cp.state["step"] == trigger[0] and cp.optimizer_state is not None
    assert not any(isinstance(e, Progress) and e.step > trigger[0] for e in seen)
    from engine.models.registry import encoder_from_spec

    model = encoder_from_spec(cp.model_spec)
    model.load_state_dict_checked(cp.model_state)
    assert isinstance(seen[-1], Finished) and seen[-1].status == "cancelled"
    assert run.status()["status"] == "cancelled"


def test_run_folder_contents_and_events(tiny_subject_path, tmp_path):
    cfg = tiny_config("mlp", keep_checkpoints=1)
    seen = []
    result = drive(train_job(cfg, tiny_subject_path, tmp_path / "run"), seen.append)
    run = Run.open(tmp_path / "run")
    assert run.config == cfg
    assert [p.name for p in run.checkpoints()] == ["step-000012"]  # keep_checkpoints=1 pruned the first epoch's
    assert run.status()["status"] == "done" and set(run.status()["metrics"]) >= {"two_way", "top1_retrieval"}
    prov = run.provenance()
    assert prov["seed"] == 3 and prov["data_hash"] and prov["packages"]["torch"] == torch.__version__
    assert prov["subject"]["path"].endswith("tiny.nlsubj") and len(prov["trials"]["train"]) == 96
    lines = (tmp_path / "run" / "events.jsonl").read_text().splitlines()
    parsed = [event_from_dict(json.loads(line)) for line in lines]
    assert [type(e) for e in parsed] == [type(e) for e in seen]
    assert isinstance(parsed[0], Started) and isinstance(parsed[-1], Finished)
    assert any(isinstance(e, Checkpoint) for e in parsed)
    assert {e.name for e in parsed if isinstance(e, Metric) and e.split == "test"} >= {"two_way", "top1_retrieval"}
    assert result.metrics == run.status()["metrics"]
    state = json.loads((run.latest_checkpoint() / "state.json").read_text())
    assert {"python", "numpy"} <= set(state["rng"]) and state["stage"] == 1  # past the last stage: done


def test_crash_while_writing_a_checkpoint_keeps_the_previous_one(tiny_subject_path, tmp_path, monkeypatch):
    import engine.train.checkpoint as ckpt_mod

    cfg = tiny_config("mlp", checkpoint_every=3, keep_checkpoints=1)
    real = ckpt_mod.atomic_save_safetensors
    calls = {"n": 0}

    def flaky(path, tensors, metadata=None):
        if path.name == "optimizer.safetensors":
            calls["n"] += 1
            if calls["n"] == 2:  # the second checkpoint dies half-written
                raise OSError("disk full")
        return real(path, tensors, metadata)

    monkeypatch.setattr(ckpt_mod, "atomic_save_safetensors", flaky)
    with pytest.raises(OSError):
        drive(train_job(cfg, tiny_subject_path, tmp_path / "run"))
    run = Run.open(tmp_path / "run")
    names = sorted(p.name for p in run.checkpoint_dir.iterdir())
    assert names == ["step-000003"]  # no partial folder, and the previous checkpoint was not pruned
    assert load_checkpoint(run.latest_checkpoint()).state["step"] == 3
    assert run.status()["status"] == "failed"


@pytest.mark.parametrize("kind", ["ridge", "mbm"])
def test_other_kinds_train_through_the_same_job(kind, tiny_subject_path, tmp_path):
    result = drive(train_job(tiny_config(kind), tiny_subject_path, tmp_path / kind))
    assert result.status == "done" and 0.0 <= result.metrics["two_way"] <= 1.0
    stages = {e.split for e in Run.open(tmp_path / kind).events() if isinstance(e, Metric)}
    if kind == "mbm":
        assert "pretrain" in stages and "train" in stages


def test_router_only_finetune_on_another_subject(tiny_subject_path, tmp_path):
    from engine.data.native import write_subject
    from engine.train.predict import load_encoder
    from tests.helpers import make_tiny_subject

    other = make_tiny_subject(n_train=64, n_test_images=4, repeats=2, n_voxels=40, seed=1)
    other.name = "other"
    other_path = write_subject(other, tmp_path / "other.nlsubj")
    drive(train_job(tiny_config("moe", epochs=1), tiny_subject_path, tmp_path / "base"))
    cfg = tiny_config("moe", epochs=1, init_from=str(tmp_path / "base"), train_mode="router_only")
    drive(train_job(cfg, other_path, tmp_path / "ft"))
    base, ft = load_encoder(tmp_path / "base"), load_encoder(tmp_path / "ft")
    assert ft.subjects == {"tiny": 48, "other": 40}
    a, b = base.state_dict(), ft.state_dict()
    routers = [k for k in a if ".router." in k]
    frozen = [k for k in a if ".router." not in k]
    assert routers and frozen
    assert all(torch.equal(a[k], b[k]) for k in frozen)  # experts, heads, projector and the old input layer
    assert any(not torch.equal(a[k], b[k]) for k in routers)


def test_bad_config_and_existing_run_are_refused(tiny_subject_path, tmp_path):
    with pytest.raises(ConfigError, match="hiden"):
        drive(train_job(tiny_config("mlp", model={"kind": "mlp", "params": {"hiden": 3}}), tiny_subject_path,
                        tmp_path / "a"))
    drive(train_job(tiny_config("ridge"), tiny_subject_path, tmp_path / "b"))
    with pytest.raises(ConfigError, match="already holds a run"):
        drive(train_job(tiny_config("ridge"), tiny_subject_path, tmp_path / "b"))


def test_moe_roi_groups_and_router_learning_rate_through_the_trainer(tiny_subject_path, tmp_path):
    import numpy as np

    from engine.models.routing import expert_roi_table, voxel_routing
    from engine.train.predict import load_encoder

    cfg = tiny_config("moe", epochs=1, checkpoint_every=3).with_overrides({
        "model.params.roi_groups": [["V1"], ["LO"]], "model.params.roi_group_prior": 3.0,
        "optim.router_lr_scale": 10.0})
    drive(train_job(cfg, tiny_subject_path, tmp_path / "run"))
    run = Run.open(tmp_path / "run")
    groups = {g["name"]: g for g in load_checkpoint(run.latest_checkpoint()).optimizer_state["param_groups"]}
    assert groups["router"]["lr"] == pytest.approx(10.0 * groups["decay"]["lr"])  # same step, 10× the rate
    enc = load_encoder(tmp_path / "run")
    voxel_group = enc.subject_layer("tiny").voxel_group.numpy()
    assert voxel_group.tolist() == [0] * 24 + [1] * 24  # the tiny subject: V1 = first half, LO = second half
    rois = {"V1": voxel_group == 0, "LO": voxel_group == 1}
    table = expert_roi_table(voxel_routing(enc, "tiny", np.random.default_rng(0).standard_normal((8, 48)))[0], rois)
    assert table[0, 0] > 0.7 and table[1, 1] > 0.7


def test_moe_resume_keeps_the_router_learning_rate(tiny_subject_path, tmp_path):
    cfg = tiny_config("moe").with_overrides({"optim.router_lr_scale": 10.0, "model.params.roi_groups": [["V1"], ["LO"]]})
    drive(train_job(cfg, tiny_subject_path, tmp_path / "full"))
    token = CancelToken()
    with pytest.raises(Cancelled):
        drive(train_job(cfg, tiny_subject_path, tmp_path / "split", cancel=token), _cancel_after(7, token))
    drive(resume_job(tmp_path / "split"))
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "split")
    assert a.keys() == b.keys() and any(".router." in k for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_mbm_presets_leave_the_test_fmri_out_of_pretraining_unless_asked(tiny_subject_path, tmp_path):
    """The reference and demo MBM presets pre-train on the training trials only; opting in is recorded."""
    from engine.data import open_subject
    from engine.train.presets import get_preset

    subject = open_subject(tiny_subject_path)
    for name in ("mindvis-mbm", "demo-mbm"):
        assert get_preset(name, subject).data.pretrain_on_test is False
    for opt_in in (False, True):
        cfg = tiny_config("mbm").with_overrides({"data.pretrain_on_test": opt_in})
        run_dir = tmp_path / f"mbm-{opt_in}"
        drive(train_job(cfg, tiny_subject_path, run_dir))
        assert Run.open(run_dir).provenance()["pretrain_on_test"] is opt_in


def test_every_run_writes_tensorboard_scalars_and_the_cli_says_how_to_open_them(tiny_subject_path, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from engine.train.tensorboard import open_hint, tensorboard_command

    run_dir = tmp_path / "run"
    drive(train_job(tiny_config("mlp"), tiny_subject_path, run_dir))
    acc = EventAccumulator(str(run_dir / "tb"))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"train/loss", "test/two_way"} <= tags, tags
    assert len(acc.Scalars("train/loss")) > 1
    hint = open_hint(run_dir)
    assert f"tensorboard --logdir {run_dir / 'tb'}" in hint and "http://localhost:6006/" in hint
    cmd = tensorboard_command(run_dir, port=6123)
    assert cmd[-6:] == ["--logdir", str(run_dir / "tb"), "--port", "6123", "--host", "localhost"]
