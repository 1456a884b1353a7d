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
    assert c.eta(5) >= 0.0
