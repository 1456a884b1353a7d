"""The runs list shows a run whose process was killed as 'interrupted' and offers to resume it."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

from neurolens_app.widgets.runs_list import RunsList, summarize_run


def _run_folder(tmp_path, **status):
    run = tmp_path / "run"
    run.mkdir()
    from engine.train.presets import get_preset

    get_preset("tiny-mlp").save(run / "config.yaml")
    (run / "status.json").write_text(json.dumps({"step": 4, "total": 10, **status}))
    return run


def test_killed_run_is_interrupted_and_resumable(qtbot, tmp_path):
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    run = _run_folder(tmp_path, status="running", pid=p.pid, host=socket.gethostname())
    s = summarize_run(run)
    assert s.status == "interrupted" and s.resumable and (s.step, s.total) == (4, 10)
    w = RunsList()
    qtbot.addWidget(w)
    w.set_runs([s])
    item = w.topLevelItem(0)
    assert item.text(1) == "interrupted" and "Resume" in item.toolTip(1)


def test_live_run_stays_running(tmp_path):
    run = _run_folder(tmp_path, status="running", pid=os.getpid(), host=socket.gethostname())
    assert summarize_run(run).status == "running"


def test_tampered_status_is_listed_as_unreadable(tmp_path):
    run = _run_folder(tmp_path, status="done")
    (run / "status.json").write_text("[1, 2]")
    s = summarize_run(run)
    assert s.status == "unreadable" and "status.json" in s.error


def test_the_model_column_names_a_pixel_decoders_basis(tmp_path):
    from engine.train.presets import get_preset
    from tests.helpers import make_tiny_subject

    names = {}
    for basis in ("pixels", "pca", "multiscale"):
        run = tmp_path / basis
        run.mkdir()
        cfg = get_preset("pixel-ridge", make_tiny_subject())
        cfg.with_overrides({"data.pixel_basis": basis, "data.pca_components": 16}).save(run / "config.yaml")
        (run / "status.json").write_text(json.dumps({"status": "done", "step": 1, "total": 1}))
        names[basis] = summarize_run(run).kind
    assert names == {"pixels": "ridge", "pca": "ridge (PCA K=16)", "multiscale": "ridge (multi-scale)"}
