"""Hostile run folders, configs and reconstruction folders: train, resume, status, finetune, reconstruct, evaluate.

Refusals: exit 2, one line naming the file and key, nothing changed. A damaged newest checkpoint is skipped (named)
and the run resumes from the previous one to the same weights as the run that was never interrupted.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.hostile.conftest import copy_of, one_line_error, refused, run_cli, tree_hash
from tests.hostile.test_import_inspect import BOMB, _png_header_bomb

JOB = ("--json-events",)


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _weights(run):
    from safetensors.numpy import load_file

    return load_file(str(run / "model" / "encoder" / "model.safetensors"))


def _same_weights(a, b) -> bool:
    wa, wb = _weights(a), _weights(b)
    return wa.keys() == wb.keys() and all(np.array_equal(wa[k], wb[k]) for k in wa)


# --- train -----------------------------------------------------------------------------------------------------------
CONFIG_TEXTS = {
    "alias-bomb": BOMB,
    "deep-nesting": "[" * 50_000 + "]" * 50_000,
    "unknown-key": "epochs: 2\nbatch_sise: 4\n",
    "top-level-list": "- 1\n- 2\n",
    "python-tag": "epochs: !!python/object/apply:os.getpid []\n",
    "wrong-type": "epochs: many\n",
    "binary": "\udcff",
}


@pytest.mark.parametrize("case", CONFIG_TEXTS)
def test_train_refuses_hostile_configs(case, base, tmp_path):
    cfg = tmp_path / "config.yaml"
    cfg.write_bytes(CONFIG_TEXTS[case].encode("utf-8", "surrogateescape"))
    t0 = time.perf_counter()
    line = refused(tmp_path, "train", "--data", base["subject"], "--config", cfg, "--out", tmp_path / "run", *JOB,
                   names=["config.yaml"])
    assert time.perf_counter() - t0 < 10 and len(line) < 400


@pytest.mark.parametrize("value", ["[" * 5000 + "]" * 5000, "{a: [1, 2", "*x"])
def test_train_refuses_hostile_set_values(value, base, tmp_path):
    refused(tmp_path, "train", "--data", base["subject"], "--preset", "tiny-mlp", "--set", f"epochs={value}",
            "--out", tmp_path / "run", *JOB, names=["epochs"])


def test_train_refuses_a_tampered_subject(base, tmp_path):
    subj = copy_of(base["subject"], tmp_path / "s.nlsubj")
    (subj / "subject.json").write_text('{"format": "neurolens-subject", "rois": {"V1": 1}}')
    refused(tmp_path, "train", "--data", subj, "--preset", "tiny-mlp", "--out", tmp_path / "run", *JOB,
            names=["subject.json", "rois"])


@pytest.mark.parametrize("what", ["existing-run", "a-file", "non-empty-folder", "symlink-loop"])
def test_train_never_writes_over_something(what, base, tmp_path):
    out = tmp_path / "out"
    if what == "existing-run":
        copy_of(base["mlp"], out)
    elif what == "a-file":
        out.write_text("mine")
    elif what == "non-empty-folder":
        out.mkdir()
        (out / "data.csv").write_text("1,2,3")
    else:
        out.symlink_to(out)
    refused(tmp_path, "train", "--data", base["subject"], "--preset", "tiny-mlp", "--out", out, *JOB, names=["out"])


# --- run files: resume and status ------------------------------------------------------------------------------------
def _status(run, **d):
    (run / "status.json").write_text(json.dumps(d))


RUN_FILE_CASES = {
    "status-list": ("status.json", None, lambda r: (r / "status.json").write_text("[1, 2]")),
    "status-unknown": ("status.json", "status", lambda r: _status(r, status="exploded")),
    "status-step-string": ("status.json", "step", lambda r: _status(r, status="cancelled", step="x")),
    "status-metrics-list": ("status.json", "metrics", lambda r: _status(r, status="cancelled", metrics=[1])),
    "status-deep": ("status.json", None, lambda r: (r / "status.json").write_text("[" * 100_000)),
    "config-bomb": ("config.yaml", None, lambda r: (r / "config.yaml").write_text(BOMB)),
    "config-garbage": ("config.yaml", None, lambda r: (r / "config.yaml").write_bytes(b"\x00\xff" * 50)),
    "provenance-list": ("provenance.json", None, lambda r: ((r / "status.json").unlink(),
                                                             (r / "provenance.json").write_text("[]"))),
}


@pytest.mark.parametrize("command", ["resume", "status"])
@pytest.mark.parametrize("case", RUN_FILE_CASES)
def test_tampered_run_files_are_refused(case, command, base, tmp_path):
    name, key, edit = RUN_FILE_CASES[case]
    run = copy_of(base["mlp"], tmp_path / "run")
    shutil.rmtree(run / "model")
    edit(run)
    if command == "status" and name in ("provenance.json", "config.yaml"):
        pytest.skip("status reads status.json only")
    extra = JOB if command == "resume" else ()
    line = refused(tmp_path, command, run, *extra, names=[name])
    if key:
        assert key in line, line


def test_not_a_run_folder(tmp_path):
    (tmp_path / "x").mkdir()
    for command in ("resume", "status", "finetune", "reconstruct"):
        refused(tmp_path, command, tmp_path / "x", names=["x"])


def _killed_copy(base, tmp_path):
    """The base run as a killed process leaves it: no final model, status 'running' by a process that is gone."""
    run = copy_of(base["mlp"], tmp_path / "run")
    shutil.rmtree(run / "model")
    st = json.loads((run / "status.json").read_text())
    _status(run, **{**st, "status": "running", "pid": _dead_pid(), "host": socket.gethostname()})
    return run


def test_killed_run_is_interrupted_and_resumes_to_the_same_weights(base, tmp_path):
    run = _killed_copy(base, tmp_path)
    res = run_cli("status", run)
    assert res.rc == 0 and "interrupted" in res.out and f"neurolens resume {run}" in res.out, str(res)
    res = run_cli("resume", run, *JOB)
    assert res.rc == 0, str(res)
    assert _same_weights(run, base["mlp"])
    assert json.loads((run / "status.json").read_text())["status"] == "done"


def test_live_run_is_not_resumed_twice(base, tmp_path):
    run = copy_of(base["mlp"], tmp_path / "run")
    _status(run, status="running", step=2, total=6, pid=os.getpid(), host=socket.gethostname())
    refused(tmp_path, "resume", run, *JOB, names=[str(run), "still being trained"])


def _truncate(p):
    p.write_bytes(p.read_bytes()[:100])


def _state(fn):
    def edit(cp):
        d = json.loads((cp / "state.json").read_text())
        fn(d)
        (cp / "state.json").write_text(json.dumps(d))
    return edit


DAMAGED_CHECKPOINTS = {
    "model-truncated": lambda cp: _truncate(cp / "model.safetensors"),
    "optimizer-truncated": lambda cp: _truncate(cp / "optimizer.safetensors"),
    "rng-truncated": lambda cp: _truncate(cp / "rng.safetensors"),
    "state-not-json": lambda cp: (cp / "state.json").write_text("{"),
    "state-step-missing": _state(lambda d: d.pop("step")),
    "state-step-string": _state(lambda d: d.update(step="6")),
    "state-step-tampered": _state(lambda d: d.update(step=999)),
    "state-epoch-negative": _state(lambda d: d.update(epoch=-3)),
    "state-rng-garbage": _state(lambda d: d.update(rng={"python": [1]})),
    "state-optimizer-garbage": _state(lambda d: d.update(optimizer={"param_groups": 5})),
    "spec-list": lambda cp: (cp / "model.json").write_text("[]"),
}


@pytest.mark.parametrize("case", DAMAGED_CHECKPOINTS)
def test_resume_skips_a_damaged_newest_checkpoint(case, base, tmp_path):
    run = _killed_copy(base, tmp_path)
    cps = sorted((run / "checkpoints").iterdir())
    DAMAGED_CHECKPOINTS[case](cps[-1])
    res = run_cli("resume", run, *JOB)
    assert res.rc == 0, str(res)
    events = [json.loads(x) for x in res.out.splitlines() if x.startswith("{")]
    skipped = [e["message"] for e in events if e.get("event") == "Log" and "skipped checkpoint" in e["message"]]
    assert skipped and cps[-1].name in skipped[0], res.out[-2000:]
    assert any(e.get("event") == "Log" and f"resuming from {cps[-2].name}" in e["message"] for e in events)
    assert _same_weights(run, base["mlp"])
    info = json.loads((run / "model" / "run_model.json").read_text())
    assert info["step"] == json.loads((base["mlp"] / "model" / "run_model.json").read_text())["step"]


# --- finetune and reconstruct on tampered runs -----------------------------------------------------------------------
def _json_file(rel, fn):
    def edit(run):
        p = run / rel
        d = json.loads(p.read_text())
        fn(d)
        p.write_text(json.dumps(d))
    return edit


MODEL_CASES = {
    "run-model-list": ("run_model.json", None, lambda r: (r / "model/run_model.json").write_text("[]")),
    "run-model-kind-int": ("run_model.json", "kind", _json_file("model/run_model.json", lambda d: d.update(kind=3))),
    "run-model-shape-string": ("run_model.json", "target_shape",
                               _json_file("model/run_model.json", lambda d: d.update(target_shape="64"))),
    "run-model-shape-negative": ("run_model.json", "target_shape",
                                 _json_file("model/run_model.json", lambda d: d.update(target_shape=[-1]))),
    "run-model-garbage": ("run_model.json", None, lambda r: (r / "model/run_model.json").write_bytes(b"\x89PNG")),
    "normalization-truncated": ("normalization.safetensors", None,
                                lambda r: _truncate(r / "model/normalization.safetensors")),
    "no-final-model": ("run_model.json", None, lambda r: shutil.rmtree(r / "model")),
}


@pytest.mark.parametrize("command", ["finetune", "reconstruct"])
@pytest.mark.parametrize("case", MODEL_CASES)
def test_tampered_models_are_refused(case, command, base, tmp_path):
    name, key, edit = MODEL_CASES[case]
    run = copy_of(base["ridge"], tmp_path / "run")
    edit(run)
    extra = (("--generator", base["gen"], "--max-steps", "1", "--overwrite") if command == "finetune"
             else ("--steps", "1", "--samples", "1"))
    line = refused(tmp_path, command, run, "--subject", base["subject"], *extra, *JOB, names=[name])
    if key:
        assert key in line, line


@pytest.mark.parametrize("what", ["missing", "a-file", "bin-weights-only", "empty-folder"])
def test_finetune_refuses_unusable_generators(what, base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    gen = tmp_path / "sd"
    if what == "a-file":
        gen.write_text("not a model")
    elif what == "bin-weights-only":
        (gen / "unet").mkdir(parents=True)
        (gen / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline"}))
        (gen / "unet" / "config.json").write_text("{}")
        (gen / "unet" / "diffusion_pytorch_model.bin").write_bytes(b"\x80\x02pickle")
    elif what == "empty-folder":
        gen.mkdir()
    refused(tmp_path, "finetune", run, "--generator", gen, "--subject", base["subject"], "--max-steps", "1",
            "--overwrite", *JOB, names=["sd"])


@pytest.mark.parametrize("what", ["not-a-recon-folder", "the-run", "the-subject", "recon-without-overwrite",
                                  "a-file", "symlink-loop"])
def test_reconstruct_never_replaces_what_it_should_not(what, base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    subj = copy_of(base["subject"], tmp_path / "s.nlsubj")
    out = {"the-run": run, "the-subject": subj}.get(what, tmp_path / "out")
    flags = ("--overwrite",)
    if what == "not-a-recon-folder":
        out.mkdir()
        (out / "figure.png").write_bytes(b"mine")
    elif what == "recon-without-overwrite":
        copy_of(base["recon"], out)
        flags = ()
    elif what == "a-file":
        out.write_text("mine")
    elif what == "symlink-loop":
        out.symlink_to(out)
    refused(tmp_path, "reconstruct", run, "--subject", subj, "--out", out, *flags, "--steps", "1", "--samples", "1",
            *JOB, names=[out.name])


def test_reconstruct_overwrite_replaces_a_reconstruction(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    out = copy_of(base["recon"], tmp_path / "out")
    before = tree_hash(out)
    res = run_cli("reconstruct", run, "--subject", base["subject"], "--out", out, "--overwrite", "--steps", "1",
                  "--samples", "1", "--seed", "7", *JOB)
    assert res.rc == 0, str(res)
    assert tree_hash(out) != before and (out / "index.json").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "run"]


@pytest.mark.parametrize("argv,name", [(("--trials", "99999"), "trials"), (("--steps", "0"), "steps"),
                                       (("--samples", "0"), "samples"), (("--trials", "x"), "trials")])
def test_reconstruct_bad_options(argv, name, base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    refused(tmp_path, "reconstruct", run, "--subject", base["subject"], "--out", tmp_path / "o", *argv, *JOB,
            names=[name])


# --- evaluate --------------------------------------------------------------------------------------------------------
def _index(fn):
    def edit(f):
        d = json.loads((f / "index.json").read_text())
        fn(d)
        (f / "index.json").write_text(json.dumps(d))
    return edit


def _first_sample(f):
    return f / json.loads((f / "index.json").read_text())["items"][0]["samples"][0]


EVALUATE_CASES = {
    "index-list": ("index.json", None, lambda f: (f / "index.json").write_text("[]")),
    "index-deep": ("index.json", None, lambda f: (f / "index.json").write_text("{\"a\":" * 100_000)),
    "settings-list": ("index.json", "settings", _index(lambda d: d.update(settings=[1, 2]))),
    "items-dict": ("index.json", "items", _index(lambda d: d.update(items={"a": 1}))),
    "item-string": ("index.json", "items[0]", _index(lambda d: d["items"].__setitem__(0, "x"))),
    "item-no-samples": ("index.json", "items[1]", _index(lambda d: d["items"][1].pop("samples"))),
    "item-index-string": ("index.json", "items[0]", _index(lambda d: d["items"][0].update(image_index="a"))),
    "schema": ("index.json", "schema", _index(lambda d: d.update(schema="other/9"))),
    "subject-int": ("index.json", "subject", _index(lambda d: d.update(subject=5))),
    "sample-bomb": ("s0.png", None, lambda f: _png_header_bomb(_first_sample(f))),
    "sample-not-png": ("s0.png", None, lambda f: _first_sample(f).write_text("text")),
    "sample-missing": ("s0.png", None, lambda f: _first_sample(f).unlink()),
    "embeddings-truncated": ("embeddings.npz", None, lambda f: _truncate(f / "embeddings.npz")),
    "embeddings-strings": ("embeddings.npz", None, lambda f: np.savez(f / "embeddings.npz", image_index=np.array(["a"]),
                                                                       brain=np.array(["b"]), target=np.array(["c"]))),
}


@pytest.mark.parametrize("case", EVALUATE_CASES)
def test_evaluate_refuses_tampered_reconstructions(case, base, tmp_path):
    name, key, edit = EVALUATE_CASES[case]
    folder = copy_of(base["recon"], tmp_path / "recon")
    edit(folder)
    line = refused(tmp_path, "evaluate", folder, "--subject", base["subject"], "--features", "demo",
                   "--n-way-trials", "10", "--retrieval-repeats", "2", names=[name])
    if key:
        assert key in line, line


def test_finetune_does_not_replace_a_decoder_without_overwrite(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    refused(tmp_path, "finetune", run, "--generator", base["gen"], "--subject", base["subject"], "--max-steps", "1",
            *JOB, names=["decoder", "--overwrite"])
    shutil.rmtree(run / "decoder")
    (run / "decoder").mkdir()
    (run / "decoder" / "notes.txt").write_text("mine")
    refused(tmp_path, "finetune", run, "--generator", base["gen"], "--subject", base["subject"], "--max-steps", "1",
            "--overwrite", *JOB, names=["decoder", "decoder.json"])


def test_encode_does_not_replace_maps_without_overwrite(base, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "encoding.npz").write_bytes(b"earlier maps")
    refused(tmp_path, "encode", "--data", base["subject"], "--out", run, *JOB, names=["encoding.npz", "--overwrite"])


MODEL_FOLDER_CASES = {
    "decoder-json-list": ("ridge", "decoder/decoder.json", "[]"),
    "decoder-json-deep": ("ridge", "decoder/decoder.json", "[" * 100_000),
    "adapter-config-list": ("ridge", "decoder/adapter/config.json", "[]"),
    "adapter-config-garbage": ("ridge", "decoder/adapter/config.json", '{"class": 5, "config": []}'),
    "ridge-config-list": ("ridge", "model/ridge/config.json", "[]"),
    "ridge-config-garbage": ("ridge", "model/ridge/config.json", '{"alphas": "x"}'),
    "encoder-config-list": ("mlp", "model/encoder/config.json", "[]"),
    "encoder-config-garbage": ("mlp", "model/encoder/config.json", '{"class": "MLPBackbone", "config": 7}'),
}


@pytest.mark.parametrize("case", MODEL_FOLDER_CASES)
def test_tampered_model_folders_are_refused_by_reconstruct(case, base, tmp_path):
    which, rel, text = MODEL_FOLDER_CASES[case]
    run = copy_of(base[which], tmp_path / "run")
    if which == "mlp":
        copy_of(base["ridge"] / "decoder", run / "decoder")
    (run / rel).write_text(text)
    refused(tmp_path, "reconstruct", run, "--subject", base["subject"], "--steps", "1", "--samples", "1",
            "--out", tmp_path / "o", *JOB, names=[rel.rsplit("/", 1)[-1]])


RESUME_STATE_CASES = {
    "state-list": ("state.json", None, lambda d: "[]"),
    "step-string": ("state.json", "step", lambda d: json.dumps({**d, "step": "3"})),
    "epoch-negative": ("state.json", "epoch", lambda d: json.dumps({**d, "epoch": -1})),
    "rng-missing": ("state.json", "rng", lambda d: json.dumps({k: v for k, v in d.items() if k != "rng"})),
    "order-dict": ("state.json", "order", lambda d: json.dumps({**d, "order": {"a": 1}})),
}


@pytest.mark.parametrize("case", RESUME_STATE_CASES)
def test_finetune_resume_refuses_a_tampered_state(case, base, tmp_path):
    name, key, make = RESUME_STATE_CASES[case]
    run = copy_of(base["ridge"], tmp_path / "run")
    p = run / "decoder" / "resume" / "state.json"
    p.write_text(make(json.loads(p.read_text())))
    line = refused(tmp_path, "finetune", run, "--resume", "--subject", base["subject"], *JOB, names=[name])
    if key:
        assert key in line, line
