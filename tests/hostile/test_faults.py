"""Faults: kill -9 (import, train, finetune, reconstruct), SIGINT, a full disk and read-only folders.

A real full disk and a real read-only file system are small tmpfs mounts when the tests run as root with ``mount``;
the injected-failure tests (an ``OSError`` from the write calls) run everywhere.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.hostile.conftest import (CAN_MOUNT, copy_of, one_line_error, read_only_folder, refused, run_cli, tmpfs,
                                    tree_hash)

ROOT = Path(__file__).resolve().parents[2]
needs_mount = pytest.mark.skipif(not CAN_MOUNT, reason="needs root and mount -t tmpfs (injected failures run instead)")


def _env():
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}


def _hidden(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def _cli(argv, *, timeout=180) -> subprocess.CompletedProcess:
    """Run ``neurolens ARGV`` in a child, as ``_cli_killed_at`` does, to the end."""
    return subprocess.run([sys.executable, "-m", "engine.cli.main", *map(str, argv)], capture_output=True, text=True,
                          timeout=timeout, env=_env(), cwd=ROOT)


def _cli_killed_at(argv, when: str, *, timeout=120) -> subprocess.CompletedProcess:
    """Run ``neurolens ARGV --json-events`` and SIGKILL it when ``when(event)`` is true for a JSON event."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", *map(str, argv), "--json-events"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        for line in proc.stdout:
            if line.startswith("{") and eval(when, {}, {"e": json.loads(line)}):  # noqa: S307 - test's own text
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=timeout)
    finally:
        proc.kill()
    return proc


def _script_killed_in_write(code: str) -> subprocess.CompletedProcess:
    """Run the CLI in a child that SIGKILLs itself at a chosen point of a write (``code`` patches that point)."""
    script = textwrap.dedent("""
        import os, signal, sys
        def die(*a, **k):
            os.kill(os.getpid(), signal.SIGKILL)
    """) + textwrap.dedent(code)
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=180, env=_env(),
                          cwd=ROOT)


# --- kill -9 ---------------------------------------------------------------------------------------------------------
def test_killed_import_leaves_nothing_valid_and_the_next_import_cleans_up(base, tmp_path):
    out = tmp_path / "new.nlsubj"
    r = _script_killed_in_write(f"""
        import engine.data.native as native
        native.check_finite_rows = die  # first block of betas.npy: mid-write
        from engine.cli.main import main
        main(["import", {str(base['subject'])!r}, "--out", {str(out)!r}])
    """)
    assert r.returncode == -9, r.stderr
    assert not out.exists()
    left = _hidden(tmp_path)
    assert len(left) == 1 and left[0].endswith(".partial"), left
    res = run_cli("inspect", tmp_path / left[0])
    assert res.rc == 2  # the leftover does not open as a subject
    res = run_cli("import", base["subject"], "--out", out, "--json-events")
    assert res.rc == 0, str(res)
    assert _hidden(tmp_path) == []  # the dead writer's partial folder was removed by the next write
    assert run_cli("inspect", out).rc == 0


def test_killed_overwrite_keeps_the_old_subject(base, tmp_path):
    out = copy_of(base["subject"], tmp_path / "s.nlsubj")
    before = tree_hash(out)
    r = _script_killed_in_write(f"""
        import engine.data.native as native
        native.check_finite_rows = die
        from engine.cli.main import main
        main(["import", {str(base['subject'])!r}, "--out", {str(out)!r}, "--overwrite"])
    """)
    assert r.returncode == -9, r.stderr
    assert tree_hash(out) == before


def test_killed_between_the_two_renames_puts_the_old_folder_back(base, tmp_path):
    out = copy_of(base["subject"], tmp_path / "s.nlsubj")
    before = tree_hash(out)
    r = _script_killed_in_write(f"""
        import engine.atomic as atomic
        real = atomic.os.replace
        calls = []
        def replace(a, b):
            real(a, b)
            calls.append(b)
            if str(b).endswith(".old"):
                die()  # the old folder moved aside, the new one not yet in place
        atomic.os.replace = replace
        from engine.cli.main import main
        main(["import", {str(base['subject'])!r}, "--out", {str(out)!r}, "--overwrite"])
    """)
    assert r.returncode == -9, r.stderr
    assert not out.exists() and any(n.endswith(".old") for n in _hidden(tmp_path))
    # the next write to the same place restores the old folder first, so refusing to overwrite still protects it
    one_line_error(run_cli("import", base["subject"], "--out", out, "--json-events"), "already exists")
    assert tree_hash(out) == before and _hidden(tmp_path) == []


def test_killed_training_is_interrupted_and_resumes_bit_identical(base, tmp_path):
    train = ["train", "--data", base["subject"], "--preset", "tiny-mlp", "--set", "checkpoint_every=3",
             "--set", "keep_checkpoints=2", "--epochs", "12", "--out"]
    run = tmp_path / "run"
    p = _cli_killed_at([*train, run], "e['event'] == 'Checkpoint' and e['step'] >= 3")
    assert p.returncode == -9
    res = run_cli("status", run)
    assert res.rc == 0 and " interrupted " in res.out and "neurolens resume" in res.out, str(res)
    from engine.train.run import Run

    assert Run(run, None).status()["status"] == "interrupted"
    # The resume and the uninterrupted reference run as the killed one did (a child with OMP_NUM_THREADS=1): on some
    # CPUs a child's one OpenMP thread and torch.set_num_threads(1) in this process round differently (1 ulp).
    assert _cli(["resume", run]).returncode == 0
    ref = tmp_path / "ref"
    assert _cli([*train, ref]).returncode == 0
    from tests.hostile.test_runs import _same_weights

    assert _same_weights(run, ref)


def _cli_interrupted_at_progress(argv) -> tuple[int, str]:
    """Run ``neurolens ARGV --json-events``, send SIGINT (Ctrl-C) at its first Progress event; (exit code, stderr)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli.main", *map(str, argv), "--json-events"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(), cwd=ROOT)
    try:
        for line in proc.stdout:
            if '"Progress"' in line:
                proc.send_signal(signal.SIGINT)
                break
        proc.stdout.read()
        return proc.wait(timeout=120), proc.stderr.read()
    finally:
        proc.kill()


def test_sigint_during_training_saves_and_resumes(base, tmp_path):
    run = tmp_path / "run"
    rc, err = _cli_interrupted_at_progress(["train", "--data", base["subject"], "--preset", "tiny-mlp", "--epochs",
                                            "200", "--out", run])
    assert rc == 3 and "Traceback" not in err, err
    assert run_cli("status", run).out.split()[1] == "cancelled"


def test_killed_finetune_resumes(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    import shutil

    shutil.rmtree(run / "decoder")
    argv = ["finetune", run, "--generator", base["gen"], "--subject", base["subject"], "--epochs", "3",
            "--batch-size", "16", "--adapter", "train"]
    p = _cli_killed_at(argv, "e['event'] == 'Checkpoint'")
    assert p.returncode == -9
    assert (run / "decoder" / "decoder.json").is_file()  # the last complete save, never a half-written one
    res = run_cli("finetune", run, "--resume", "--subject", base["subject"], "--max-steps", "1", "--json-events")
    assert res.rc == 0, str(res)


def test_killed_reconstruct_keeps_the_old_folder(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    out = copy_of(base["recon"], tmp_path / "out")
    before = tree_hash(out)
    p = _cli_killed_at(["reconstruct", run, "--subject", base["subject"], "--out", out, "--overwrite", "--steps",
                        "30", "--samples", "2"], "e['event'] == 'Progress'")
    assert p.returncode == -9
    assert tree_hash(out) == before
    assert any(n.endswith(".partial") for n in _hidden(tmp_path))
    res = run_cli("reconstruct", run, "--subject", base["subject"], "--out", out, "--overwrite", "--steps", "1",
                  "--samples", "1", "--json-events")
    assert res.rc == 0, str(res)
    assert _hidden(tmp_path) == []


def test_sigint_during_reconstruct_leaves_no_output(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    out = tmp_path / "new"
    rc, err = _cli_interrupted_at_progress(["reconstruct", run, "--subject", base["subject"], "--out", out, "--steps",
                                            "40"])
    assert rc == 3 and "Traceback" not in err, err
    assert not out.exists() and _hidden(tmp_path) == []


# --- full disk -------------------------------------------------------------------------------------------------------
def _big_subject(path):
    from engine.data.native import write_subject
    from tests.helpers import make_tiny_subject

    return write_subject(make_tiny_subject(n_train=60, n_test_images=4, repeats=2, n_voxels=4096, size=8), path)


@needs_mount
def test_import_onto_a_full_disk_says_how_much_space_is_needed(tmp_path):
    src = _big_subject(tmp_path / "big.nlsubj")
    with tmpfs(tmp_path / "disk", "256k") as disk:
        line = refused(disk, "import", src, "--out", disk / "s.nlsubj", "--json-events",
                       names=[str(disk), "needs about", "free"])
        assert "space" in line
        assert list(disk.iterdir()) == []


@needs_mount
def test_write_failing_midway_on_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    import engine.data.native as native

    monkeypatch.setattr(native, "ensure_free_space", lambda *a, **k: None)  # the disk fills up after the check
    src = _big_subject(tmp_path / "big.nlsubj")
    with tmpfs(tmp_path / "disk", "256k") as disk:
        refused(disk, "import", src, "--out", disk / "s.nlsubj", "--json-events", names=[str(disk), "no space left"])
        assert list(disk.iterdir()) == []


@needs_mount
def test_training_onto_a_full_disk_then_resume_after_freeing_space(base, tmp_path):
    with tmpfs(tmp_path / "disk", "2m") as disk:
        filler = disk / "filler.bin"
        with open(filler, "wb") as f:
            f.write(b"\0" * (2 * 1024 * 1024 - 40 * 1024))  # leaves ~40 KB: config fits, checkpoints do not
        run = disk / "run"
        res = run_cli("train", "--data", base["subject"], "--preset", "tiny-mlp", "--set", "checkpoint_every=2",
                      "--out", run, "--json-events")
        line = one_line_error(res, "disk", "no space left")
        assert "Traceback" not in line
        filler.unlink()
        res = run_cli("resume", run, "--json-events")
        assert res.rc == 0, str(res)
        assert (run / "model" / "run_model.json").is_file()


@needs_mount
def test_reconstruct_onto_a_full_disk(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    with tmpfs(tmp_path / "disk", "64k") as disk:
        (disk / "filler").write_bytes(b"\0" * (60 * 1024))
        refused(disk, "reconstruct", run, "--subject", base["subject"], "--out", disk / "rec", "--steps", "1",
                "--samples", "2", "--json-events", names=["disk", "no space left"])


def test_injected_write_failures_are_one_line_everywhere(base, tmp_path, monkeypatch):
    """Without root: every atomic write fails at its rename, as on a disk that filled up."""
    import engine.atomic as atomic

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic.os, "replace", full)
    refused(tmp_path, "import", base["subject"], "--out", tmp_path / "s.nlsubj", "--json-events",
            names=[str(tmp_path), "no space left"])
    res = run_cli("train", "--data", base["subject"], "--preset", "tiny-mlp", "--out", tmp_path / "run",
                  "--json-events")
    one_line_error(res, "run", "no space left")


def test_injected_fallocate_failure_is_caught_before_writing_rows(base, tmp_path, monkeypatch):
    import engine.data.native as native

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(native.os, "posix_fallocate", full)
    refused(tmp_path, "import", base["subject"], "--out", tmp_path / "s.nlsubj", "--json-events",
            names=[str(tmp_path), "no space left", "needs about"])


# --- read-only folders -----------------------------------------------------------------------------------------------
def test_read_only_output_folders(base, tmp_path):
    run = copy_of(base["ridge"], tmp_path / "run")
    with read_only_folder(tmp_path / "ro") as ro:
        refused(tmp_path, "import", base["subject"], "--out", ro / "s.nlsubj", "--json-events",
                names=[str(ro), "read-only" if CAN_MOUNT else "permission denied"])
        res = run_cli("train", "--data", base["subject"], "--preset", "tiny-mlp", "--out", ro / "run", "--json-events")
        one_line_error(res, str(ro))
        refused(tmp_path, "reconstruct", run, "--subject", base["subject"], "--out", ro / "rec", "--steps", "1",
                "--json-events", names=[str(ro)])


@needs_mount
def test_resume_in_a_read_only_run_folder(base, tmp_path):
    import shutil

    with tmpfs(tmp_path / "disk", "8m") as disk:
        run = copy_of(base["mlp"], disk / "run")
        shutil.rmtree(run / "model")
        (run / "status.json").write_text(json.dumps({"status": "cancelled", "step": 4, "total": 6}))
        subprocess.run(["mount", "-o", "remount,ro", str(disk)], check=True)
        refused(disk, "resume", run, "--json-events", names=[str(run), "read-only"])
