"""The adversarial corpus: every entry point fed hostile input, killed, starved of disk or given read-only folders.

Each case asserts the exit status, a one-line message naming the file (and key), and that every file that existed
before is unchanged (``tree_hash`` before and after; a failed command may also not leave anything new behind). The CLI
runs in-process (``engine.cli.main.main``); only the kill tests start processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    def __str__(self) -> str:
        return f"rc={self.rc}\nstdout: {self.out[-1500:]}\nstderr: {self.err[-3000:]}"


def run_cli(*argv) -> CliResult:
    """``neurolens ARGV`` in this process; stdout and stderr captured."""
    from engine.cli.main import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:  # argparse
            rc = e.code if isinstance(e.code, int) else 2
    return CliResult(rc, out.getvalue(), err.getvalue())


def tree_hash(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (symlinks not followed) -> content hash ("dir"/"link" for the others)."""
    out = {}
    root = Path(root)
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = "link:" + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                try:
                    out[rel] = hashlib.sha1(p.read_bytes()).hexdigest()
                except OSError as e:
                    out[rel] = f"unreadable:{e.errno}"
    return out


def one_line_error(res: CliResult, *names, rc: int = 2) -> str:
    """The command failed with ``rc`` and exactly one line on stderr, naming each of ``names``; returns the line."""
    assert res.rc == rc, str(res)
    assert "Traceback" not in res.err and "Traceback" not in res.out, str(res)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, str(res)
    line = lines[0]
    assert line.startswith("neurolens"), line
    for n in names:
        assert str(n) in line, f"{n!r} not in {line!r}"
    return line


def refused(root: Path, *argv, names=(), rc: int = 2) -> str:
    """Run the command, assert a one-line refusal naming ``names`` and that ``root`` is byte-for-byte unchanged."""
    before = tree_hash(root)
    res = run_cli(*argv)
    line = one_line_error(res, *names, rc=rc)
    after = tree_hash(root)
    assert after == before, f"files changed: {sorted(set(after.items()) ^ set(before.items()))[:10]}\n{line}"
    return line


@pytest.fixture(autouse=True, scope="session")
def _quiet_environment(tmp_path_factory):
    import torch

    logs = tmp_path_factory.mktemp("logs")
    old = os.environ.get("NEUROLENS_LOG_DIR")
    os.environ["NEUROLENS_LOG_DIR"] = str(logs)
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield logs
    torch.set_num_threads(n)
    if old is None:
        os.environ.pop("NEUROLENS_LOG_DIR", None)
    else:
        os.environ["NEUROLENS_LOG_DIR"] = old


@pytest.fixture(scope="session")
def base(tmp_path_factory):
    """Read-only material shared by the cases (copy before tampering): a tiny subject, a trained MLP run with two
    checkpoints, a fine-tuned ridge run and one of its reconstruction folders."""
    from engine.data.native import write_subject
    from engine.events import drive
    from engine.recon.finetune import finetune_job
    from engine.recon.finetune_config import FinetuneConfig
    from engine.recon.reconstruct import reconstruct_job
    from engine.recon.reconstruct_config import ReconstructConfig
    from engine.train.presets import get_preset
    from engine.train.trainer import train_job
    from tests.engine.recon.tiny_models import build_tiny_demo_generator
    from tests.helpers import make_tiny_subject

    root = tmp_path_factory.mktemp("hostile-base")
    subject = make_tiny_subject(n_train=48, n_test_images=6, repeats=2, n_voxels=32, size=8)
    subj = write_subject(subject, root / "tiny.nlsubj")
    mlp = root / "mlp-run"
    cfg = get_preset("tiny-mlp", subject).with_overrides({"checkpoint_every": 2, "keep_checkpoints": 2})
    drive(train_job(cfg, str(subj), mlp))
    ridge = root / "ridge-run"
    drive(train_job(get_preset("tiny-ridge", subject), str(subj), ridge))
    gen = build_tiny_demo_generator(root / "gen")
    drive(finetune_job(ridge, config=FinetuneConfig(generator=str(gen), epochs=1, max_steps=2, adapter="train"),
                       subject=str(subj)))
    recon = root / "recon"
    drive(reconstruct_job(ridge, ReconstructConfig(samples=2, steps=2), subject=str(subj), out_dir=recon))
    return {"root": root, "subject": subj, "mlp": mlp, "ridge": ridge, "gen": gen, "recon": recon}


def copy_of(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


# --- file systems that refuse writes ---------------------------------------------------------------------------------
def _can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    probe = Path(f"/tmp/neurolens-mount-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], capture_output=True)
        return ok
    finally:
        with contextlib.suppress(OSError):
            probe.rmdir()


CAN_MOUNT = _can_mount()


@contextlib.contextmanager
def tmpfs(path: Path, size: str, *, read_only: bool = False):
    """A small tmpfs at ``path`` (root only): a real full disk / read-only file system."""
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if read_only else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True, capture_output=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


@contextlib.contextmanager
def read_only_folder(path: Path):
    """A folder nobody can write into: a read-only tmpfs as root (root ignores permissions), else mode 0555."""
    if CAN_MOUNT:
        with tmpfs(path, "1m", read_only=True):
            yield path
        return
    if os.geteuid() == 0:
        pytest.skip("running as root without mount: permissions cannot make a folder read-only")
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o555)
    try:
        yield path
    finally:
        path.chmod(0o755)


PY = sys.executable
