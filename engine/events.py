"""The job protocol shared by the CLI and the GUI: plain events, a cancel token, and a driver.

A long engine job is a generator function::

    def train(config, ..., cancel: CancelToken | None = None) -> Iterator[Event]:
        yield Started(...)
        for step in ...:
            cancel.raise_if_set()        # at every step boundary
            yield Progress(step, total, eta_s=...)
        return result                    # the generator's return value is the job's result

Events are frozen dataclasses that serialise to one JSON object (``to_json``), so the same stream can be printed by
the CLI (``--json-events``), mapped to Qt signals by the GUI worker, or read back from ``events.jsonl``.
``drive(job, on_event)`` consumes a job and returns its result.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generator, Iterator

import numpy as np

from engine.errors import Cancelled


@dataclass(frozen=True)
class Event:
    """Base class: every event knows its kind and turns into a JSON-serialisable dict."""

    def to_dict(self) -> dict:
        d = {"event": type(self).__name__}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if isinstance(v, np.ndarray):
                # Arrays (image previews) are not sent as JSON; only their shape is.
                v = {"array_shape": list(v.shape)}
            d[f.name] = v
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_json_default)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    return str(o)


@dataclass(frozen=True)
class Started(Event):
    job: str
    run_dir: str | None = None
    config_hash: str | None = None
    total: int | None = None


@dataclass(frozen=True)
class Progress(Event):
    step: int
    total: int | None = None
    eta_s: float | None = None
    stage: str = ""
    message: str = ""


@dataclass(frozen=True)
class Metric(Event):
    name: str
    value: float
    step: int | None = None
    split: str = "train"


@dataclass(frozen=True)
class Checkpoint(Event):
    path: str
    step: int


@dataclass(frozen=True)
class Log(Event):
    message: str
    level: str = "info"


@dataclass(frozen=True)
class Preview(Event):
    """An intermediate image (e.g. a denoising step), as a uint8 (H, W, 3) numpy copy."""

    kind: str
    step: int
    image: Any = field(default=None, compare=False)
    trial: int | None = None


@dataclass(frozen=True)
class Finished(Event):
    status: str = "done"  # "done" or "cancelled"
    summary: dict = field(default_factory=dict)


EVENT_TYPES = {cls.__name__: cls for cls in (Started, Progress, Metric, Checkpoint, Log, Preview, Finished)}


def event_from_dict(d: dict) -> Event:
    """Inverse of ``Event.to_dict`` for the JSON-safe events (a Preview comes back without its image)."""
    d = dict(d)
    cls = EVENT_TYPES[d.pop("event")]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs = {k: v for k, v in d.items() if k in names}
    if cls is Preview:
        kwargs["image"] = None
    return cls(**kwargs)


class CancelToken:
    """A thread-safe flag a job checks at every step boundary. ``raise_if_set`` ends the job with ``Cancelled``."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    cancel = set

    def is_set(self) -> bool:
        return self._event.is_set()

    def raise_if_set(self, message: str = "cancelled by user") -> None:
        if self._event.is_set():
            raise Cancelled(message)


def ensure_token(cancel: CancelToken | None) -> CancelToken:
    return cancel if cancel is not None else CancelToken()


Job = Generator[Event, None, Any]


def drive(job: Job | Iterator[Event], on_event: Callable[[Event], None] | None = None) -> Any:
    """Consume a job, passing each event to ``on_event``; return the generator's return value.

    ``Cancelled`` propagates, so callers decide (CLI: exit 3; GUI: a "cancelled" status).
    """
    while True:
        try:
            ev = next(job)
        except StopIteration as stop:
            return stop.value
        if on_event is not None:
            on_event(ev)


class EtaClock:
    """The one estimate of a job's remaining time: the mean duration of the steps timed so far in this session.

    The first ``warmup`` steps after ``start_step`` are not timed (they carry start-up work: imports, model building,
    the first allocations and caches), and no estimate is given until ``min_timed`` further steps have been timed, so
    the first number a user sees is already a measurement of the steady rate. ``eta`` may be called at any steps
    (every step or every few seconds); it returns None while there is no honest estimate yet.
    """

    def __init__(self, total: int | None, start_step: int = 0, *, warmup: int = 1, min_timed: int = 3) -> None:
        self.total = total
        self.start_step = start_step
        self.warmup = int(warmup)
        self.min_timed = max(1, int(min_timed))
        self.t0 = time.perf_counter()
        self._mark: tuple[int, float] | None = None  # (step, time) where timing started: the warm-up's end

    def eta(self, step: int) -> float | None:
        if not self.total:
            return None
        now = time.perf_counter()
        if self._mark is None:
            if step - self.start_step >= self.warmup:
                self._mark = (step, now)
            return None
        timed = step - self._mark[0]
        if timed < self.min_timed:
            return None
        rate = (now - self._mark[1]) / timed
        return max(0.0, rate * (self.total - step))


def format_eta(s: float | None) -> str:
    """Seconds as ``MM:SS`` (``H:MM:SS`` from an hour on); ``--:--`` for no estimate. The CLI and the app print
    ``EtaClock``'s estimates with it."""
    if s is None:
        return "--:--"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"
