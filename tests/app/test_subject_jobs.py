"""``demo_subject_job`` opens the engine's cached demo subject (``default_demo_path``) and rebuilds it, with progress,
when it is missing or was made by another version of the simulation (the rule of ``ensure_demo_subject``)."""

from __future__ import annotations

import json
import shutil

import pytest

from engine.events import CancelToken, Log, drive


@pytest.fixture
def recorded_creation(monkeypatch, demo_subject_path):
    """Replace the (12 s) simulation by a copy of the session's demo subject; record each creation."""
    from engine.data import demo

    calls = []

    def fake_create(path, *, seed, subject, overwrite, cancel):
        calls.append({"path": path, "seed": seed, "subject": subject, "overwrite": overwrite})
        if overwrite:
            shutil.rmtree(path)
        shutil.copytree(demo_subject_path, path)
        yield Log("created")
        return path

    monkeypatch.setattr(demo, "create_demo_job", fake_create)
    return calls


def run_demo_job(subject=1):
    from neurolens_app.workers.subject_jobs import demo_subject_job

    events = []
    result = drive(demo_subject_job(cancel=CancelToken(), subject=subject), events.append)
    return result, events


def test_missing_demo_is_created_at_the_engines_path(tmp_path, monkeypatch, recorded_creation):
    from engine.data.demo import default_demo_path

    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    subject, events = run_demo_job()
    assert recorded_creation == [{"path": default_demo_path(1), "seed": 0, "subject": 1, "overwrite": False}]
    assert subject.path == default_demo_path(1) and subject.is_simulation
    assert any(isinstance(e, Log) and "creating the demo subject" in e.message for e in events)


def test_current_demo_is_opened_as_is_and_a_stale_one_rebuilt(tmp_path, monkeypatch, recorded_creation,
                                                               demo_subject_path):
    from engine.data.demo import default_demo_path
    from engine.data.demo.builder import MODEL_VERSION

    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    target = default_demo_path(1)
    shutil.copytree(demo_subject_path, target)
    run_demo_job()
    assert recorded_creation == []

    meta = json.loads((target / "subject.json").read_text())
    meta["provenance"]["model_version"] = MODEL_VERSION - 1  # made by an older simulation
    (target / "subject.json").write_text(json.dumps(meta))
    subject, _ = run_demo_job()
    assert recorded_creation == [{"path": target, "seed": 0, "subject": 1, "overwrite": True}]
    assert json.loads((target / "subject.json").read_text())["provenance"]["model_version"] == MODEL_VERSION
    assert subject.path == target
