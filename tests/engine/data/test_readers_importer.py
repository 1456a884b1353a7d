"""The import job: events, atomic output (cancel, crash, kill), overwrite keeps the old subject until the new one is whole."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from engine.cli.main import main
from engine.data import open_subject
from engine.data.native import is_native
from engine.data.preprocess import PreprocessConfig
from engine.data.readers.importer import import_subject
from engine.errors import Cancelled, NeuroLensError
from engine.events import CancelToken, Finished, Progress, drive
from tests.engine.data import fixtures as F


@pytest.fixture(scope="module")
def god(tmp_path_factory):
    return F.write_god(tmp_path_factory.mktemp("god-import"), n_train_images=40, n_voxels=20)


def _leftovers(folder):
    return [p for p in folder.iterdir() if p.name.startswith(".")]


def test_import_job_events_and_result(god, tmp_path):
    events = []
    out = drive(import_subject(god["path"], tmp_path / "g.nlsubj", preprocess=PreprocessConfig(zscore="global")),
                events.append)
    assert out == tmp_path / "g.nlsubj" and is_native(out)
    assert any(isinstance(e, Progress) and e.stage == "write" for e in events)
    fin = events[-1]
    assert isinstance(fin, Finished) and fin.summary["n_trials"] == god["n_train"] + god["n_test_trials"]
    assert open_subject(out).provenance["preprocessing"][-1]["scope"] == "global"


def test_cancel_during_write_leaves_nothing(god, tmp_path):
    cancel = CancelToken()
    job = import_subject(god["path"], tmp_path / "g.nlsubj", cancel=cancel)
    with pytest.raises(Cancelled):
        for ev in job:
            if isinstance(ev, Progress) and ev.stage == "write":
                cancel.set()  # seen after the first block of betas.npy is written
    assert not (tmp_path / "g.nlsubj").exists() and _leftovers(tmp_path) == []


def test_failed_overwrite_keeps_the_old_subject(god, tmp_path):
    out = tmp_path / "g.nlsubj"
    assert main(["import", str(god["path"]), "--out", str(out)]) == 0
    before = np.asarray(open_subject(out).betas).copy()
    rc = main(["import", str(god["path"]), "--out", str(out), "--overwrite", "--rois", "nope"])
    assert rc == 2
    np.testing.assert_array_equal(np.asarray(open_subject(out).betas), before)
    assert _leftovers(tmp_path) == []


def test_killed_import_leaves_nothing_that_opens(god, tmp_path):
    """SIGKILL in the middle of writing betas: the output name never appears; the hidden partial folder is invalid."""
    out = tmp_path / "g.nlsubj"
    script = textwrap.dedent(f"""
        import os, signal
        from engine.data import open_subject
        from engine.data.native import write_subject
        s = open_subject({str(god['path'])!r})
        def on_block(name, done, total):
            if name == "betas":  # betas.npy written, images.npy and the rest not yet
                os.kill(os.getpid(), signal.SIGKILL)
        write_subject(s, {str(out)!r}, on_block=on_block)
    """)
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert r.returncode == -9, r.stderr
    assert not out.exists()
    partial = _leftovers(tmp_path)
    assert partial and all(p.name.endswith(".partial") for p in partial)
    for p in partial:
        with pytest.raises(NeuroLensError):
            open_subject(p)
