"""An interrupted ``finetune`` resumes to exactly the weights of an uninterrupted one (training's protocol)."""

import shutil

import pytest
import torch
from safetensors.torch import load_file

from engine.errors import Cancelled, CheckpointError
from engine.events import CancelToken, Checkpoint, Log, Progress, drive
from engine.recon.finetune import finetune_job
from engine.recon.finetune_config import FinetuneConfig


def _weights(run):
    d = run / "decoder"
    return {**load_file(str(d / "adapter" / "model.safetensors")), **load_file(str(d / "unet_lora.safetensors"))}


def test_cancelled_finetune_resumes_to_the_uninterrupted_result(ridge_run, tiny_demo_gen, tiny_subject_s, tmp_path):
    # 200 training trials / 64 = 3 steps per epoch; 2 epochs; cancelled after step 4 (inside the second epoch).
    cfg = FinetuneConfig(generator=str(tiny_demo_gen), epochs=2, batch_size=64, unet="lora", lora_rank=2,
                         drop_prob=0.3, adapter="train")
    full, cut = tmp_path / "full", tmp_path / "cut"
    for d in (full, cut):
        shutil.copytree(ridge_run, d, ignore=shutil.ignore_patterns("decoder"))
    ref = drive(finetune_job(full, config=cfg, subject=tiny_subject_s))
    assert ref.steps == 6

    token, events = CancelToken(), []
    with pytest.raises(Cancelled) as info:
        for ev in finetune_job(cut, config=cfg, subject=tiny_subject_s, cancel=token):
            events.append(ev)
            if isinstance(ev, Progress) and ev.stage.startswith("finetune") and ev.step == 4:
                token.set()
    assert info.value.checkpoint == str(cut / "decoder")
    assert [e.step for e in events if isinstance(e, Checkpoint)] == [3]  # end of epoch 1; then the cancel save

    # Settings come from the saved state: a different config passed here is ignored.
    events = []
    res = drive(finetune_job(cut, config=FinetuneConfig(epochs=9), subject=tiny_subject_s, resume=True),
                events.append)
    assert res.steps == 6
    assert [e.step for e in events if isinstance(e, Progress) and e.stage.startswith("finetune")] == [5, 6]
    # the embedding prior is the saved one, not fitted again
    assert any(isinstance(e, Log) and "fitted before the interruption" in e.message for e in events)
    assert not any(isinstance(e, Progress) and e.stage == "embedding prior" for e in events)
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-6), k
    assert not torch.equal(a["null.tokens"], load_file(str(tiny_demo_gen / "adapter" / "model.safetensors"))
                           ["null.tokens"])  # the learned null condition trained too


def test_resume_without_a_saved_state_names_what_is_missing(ridge_run, tmp_path):
    run = tmp_path / "fresh"
    shutil.copytree(ridge_run, run, ignore=shutil.ignore_patterns("decoder"))
    with pytest.raises(CheckpointError, match="missing decoder.json"):
        drive(finetune_job(run, resume=True))


def test_resume_with_an_optimizer_state_of_other_parameters_is_one_clear_line(ridge_run, tiny_demo_gen,
                                                                             tiny_subject_s, tmp_path):
    """A state saved when another set of parameters trained (as before the spatial head was frozen) is refused by
    name, with what to do, instead of torch's error about parameter groups."""
    import json

    run = tmp_path / "run"
    shutil.copytree(ridge_run, run, ignore=shutil.ignore_patterns("decoder"))
    cfg = FinetuneConfig(generator=str(tiny_demo_gen), epochs=2, batch_size=64, prior_epochs=0)
    token = CancelToken()
    with pytest.raises(Cancelled):
        for ev in finetune_job(run, config=cfg, subject=tiny_subject_s, cancel=token):
            if isinstance(ev, Progress) and ev.stage.startswith("finetune") and ev.step == 2:
                token.set()
    state_file = run / "decoder" / "resume" / "state.json"
    state = json.loads(state_file.read_text())
    state["optimizer"]["param_groups"][0]["params"].append(999)  # one parameter more than this fine-tuning has
    state_file.write_text(json.dumps(state))
    with pytest.raises(CheckpointError) as e:
        drive(finetune_job(run, subject=tiny_subject_s, resume=True))
    assert "does not fit the parameters" in str(e.value) and "without --resume" in str(e.value)
    assert "\n" not in str(e.value)
