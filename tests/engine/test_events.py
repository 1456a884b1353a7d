"""The job protocol: events serialise to JSON and back, drive returns the result, cancel stops at a step."""

from __future__ import annotations

import json

import numpy as np
import pytest

from engine.errors import Cancelled
from engine.events import (CancelToken, Checkpoint, EtaClock, Finished, Log, Metric, Preview, Progress, Started,
                           drive, event_from_dict)


@pytest.mark.parametrize("ev", [
    Started("train", run_dir="/r", config_hash="abc", total=10),
    Progress(3, 10, eta_s=1.5, stage="fit", message="x"),
    Metric("loss", 0.25, step=3, split="train"),
    Checkpoint("/r/checkpoints/step-3", 3),
    Log("hello", level="warning"),
    Finished("done", {"acc": 0.9}),
])
def test_events_round_trip_through_json(ev):
    d = json.loads(ev.to_json())
    assert d["event"] == type(ev).__name__
    assert event_from_dict(d) == ev


def test_preview_sends_only_the_image_shape():
    ev = Preview("denoise", 4, image=np.zeros((8, 8, 3), np.uint8), trial=2)
    d = json.loads(ev.to_json())
    assert d["image"] == {"array_shape": [8, 8, 3]}
    assert event_from_dict(d).image is None


def _job(n, cancel, done):
    yield Started("toy", total=n)
    for i in range(n):
        cancel.raise_if_set()
        done.append(i)
        yield Progress(i + 1, n)
    return sum(done)


def test_drive_returns_the_job_result_and_passes_every_event():
    seen = []
    assert drive(_job(4, CancelToken(), []), seen.append) == 6
    assert [type(e).__name__ for e in seen] == ["Started"] + ["Progress"] * 4


def test_cancel_stops_within_one_step():
    tok, done = CancelToken(), []

    def on_event(ev):
        if isinstance(ev, Progress) and ev.step == 2:
            tok.set()

    with pytest.raises(Cancelled):
        drive(_job(10, tok, done), on_event)
    assert done == [0, 1]


def test_eta_clock_estimates_remaining_time():
    c = EtaClock(total=10)
    assert c.eta(0) is None
    for step in range(1, 5):
        c.eta(step)
    assert c.eta(5) >= 0.0


def test_eta_clock_excludes_start_up_work_and_waits_for_timed_steps(monkeypatch):
    """A first step that carries 10 s of start-up work, then steps of 1 s: no estimate until three steps after the
    warm-up have been timed, and then the steady rate (6 steps left = 6 s), not the start-up-inflated 19.5 s."""
    import engine.events as events

    now = [0.0]
    monkeypatch.setattr(events.time, "perf_counter", lambda: now[0])
    c = EtaClock(total=10)
    seen = []
    for step, t in [(1, 10.0), (2, 11.0), (3, 12.0), (4, 13.0), (5, 14.0)]:
        now[0] = t
        seen.append(c.eta(step))
    assert seen[:3] == [None, None, None]
    assert seen[3] == pytest.approx(6.0) and seen[4] == pytest.approx(5.0)


def test_eta_clock_counts_from_the_resumed_step(monkeypatch):
    import engine.events as events

    now = [0.0]
    monkeypatch.setattr(events.time, "perf_counter", lambda: now[0])
    c = EtaClock(total=100, start_step=50)
    for step in (51, 52, 53):
        now[0] = float(step)
        assert c.eta(step) is None
    now[0] = 60.0
    assert c.eta(60) == pytest.approx(40.0)


def test_the_cli_says_estimating_until_the_clock_has_an_estimate():
    import io

    from engine.cli.output import TerminalPrinter

    out = io.StringIO()
    p = TerminalPrinter(out)
    p(Progress(1, 20, eta_s=None, stage="train"))
    p(Progress(20, 20, eta_s=0.0, stage="train"))
    assert out.getvalue().splitlines() == ["[train] 1/20  eta estimating", "[train] 20/20  eta 00:00"]


def test_format_eta_prints_minutes_and_hours():
    from engine.events import format_eta

    assert format_eta(None) == "--:--"
    assert format_eta(65.4) == "01:05" and format_eta(0) == "00:00"
    assert format_eta(3725) == "1:02:05"
