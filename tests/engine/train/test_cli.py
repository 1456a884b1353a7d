"""``neurolens train`` / ``neurolens resume``: exit codes 0 (done), 2 (bad input), 3 (cancelled by SIGINT)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from engine.cli.main import main
from engine.train.checkpoint import load_checkpoint
from engine.train.run import Run


def test_train_and_resume_exit_0(tiny_subject_path, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_subject_path), "--preset", "tiny-ridge", "--out", str(out),
                 "--json-events"]) == 0
    events = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert events[0]["event"] == "Started" and events[-1]["event"] == "Finished"
    assert main(["resume", str(out)]) == 0  # already finished: nothing to do


def test_bad_input_exit_2(tiny_subject_path, tmp_path):
    base = ["train", "--data", str(tiny_subject_path), "--out", str(tmp_path / "r")]
    assert main(base + ["--preset", "no-such-preset"]) == 2
    assert main(base + ["--preset", "tiny-mlp", "--set", "model.params.hiden=3"]) == 2
    assert main(base + ["--preset", "tiny-mlp", "--epochs", "0"]) == 2
    bad = tmp_path / "bad.yaml"
    bad.write_text("epochs: 2\nbatch_sise: 4\n")
    assert main(["train", "--data", str(tiny_subject_path), "--config", str(bad), "--out", str(tmp_path / "s")]) == 2
    assert main(["train", "--data", str(tmp_path / "missing"), "--preset", "tiny-mlp", "--out",
                 str(tmp_path / "t")]) == 2
    assert main(["resume", str(tmp_path / "not-a-run")]) == 2


def test_sigint_saves_a_checkpoint_and_exits_3(tiny_subject_path, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", "train", "--data", str(tiny_subject_path),
                             "--preset", "tiny-mlp", "--epochs", "1000", "--set", "checkpoint_every=2", "--out",
                             str(out), "--json-events"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        for line in proc.stdout:
            if json.loads(line)["event"] == "Checkpoint":
                proc.send_signal(signal.SIGINT)
                break
        rest = proc.stdout.read()
        rc = proc.wait(timeout=60)
    finally:
        proc.kill()
    assert rc == 3, proc.stderr.read()[-2000:]
    last = json.loads(rest.splitlines()[-1])
    assert last["event"] == "Finished" and last["status"] == "cancelled"
    run = Run.open(out)
    assert run.status()["status"] == "cancelled"
    cp = load_checkpoint(run.latest_checkpoint())
    assert cp.state["step"] == run.status()["step"]


def test_train_prints_one_line_per_event_that_matters(tiny_subject_path, tmp_path, capsys):
    """Checkpoints kept (not each one written), one line per evaluation, one 'done', where TensorBoard is."""
    out = tmp_path / "run"
    assert main(["train", "--data", str(tiny_subject_path), "--preset", "tiny-mlp", "--epochs", "4",
                 "--set", "checkpoint_every=2", "--set", "eval_every=2", "--out", str(out)]) == 0
    lines = capsys.readouterr().err.splitlines()
    written = sum(1 for e in Run.open(out).events() if type(e).__name__ == "Checkpoint")
    kept = sorted(p.name for p in (out / "checkpoints").iterdir())
    assert written > len(kept)
    ckpt_lines = [ln for ln in lines if "checkpoint" in ln]
    assert len(ckpt_lines) == 1 and all(k in ckpt_lines[0] for k in kept), lines
    assert sum(1 for ln in lines if ln.startswith("done")) == 1 and "done" not in lines, lines
    evals = [ln for ln in lines if ln.startswith("test @ step")]
    assert len(evals) == 2 and all("two_way" in ln and "cosine" in ln for ln in evals), lines
    assert any(f"tensorboard --logdir {out / 'tb'}" in ln for ln in lines), lines
