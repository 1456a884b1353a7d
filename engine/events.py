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
    """Estimates the remaining time of a job from the mean duration of the steps done so far in this session."""

    def __init__(self, total: int | None, start_step: int = 0) -> None:
        self.total = total
        self.start_step = start_step
        self.t0 = time.perf_counter()

    def eta(self, step: int) -> float | None:
        done = step - self.start_step
        if not self.total or done <= 0:
            return None
        rate = (time.perf_counter() - self.t0) / done
        return max(0.0, rate * (self.total - step))
