"""How the CLI shows a running job: a one-line progress display, or one JSON event per line (``--json-events``).

``run_job(job, json_events=...)`` drives an engine job, turning SIGINT into a cancel request (the job then saves its
checkpoint and raises ``Cancelled``, which ``main`` maps to exit status 3).
"""

from __future__ import annotations

import signal
import sys
import threading

from engine.events import CancelToken, Checkpoint, Event, Finished, Log, Metric, Progress, Started, drive


def format_eta(s: float | None) -> str:
    if s is None:
        return "--:--"
    s = int(round(s))
    h, rem = divmod(s, 3600)
    m, sec = divmod(rem, 60)
    return f"{h}:{m:02d}:{sec:02d}" if h else f"{m:02d}:{sec:02d}"


class TerminalPrinter:
    """Prints events for a person: progress overwrites one line on a TTY, other events get their own line."""

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_metrics: dict[str, float] = {}

    def __call__(self, ev: Event) -> None:
        w = self.stream.write
        if isinstance(ev, Progress):
            total = f"/{ev.total}" if ev.total else ""
            extra = " ".join(f"{k}={v:.4g}" for k, v in list(self._last_metrics.items())[-3:])
            line = f"[{ev.stage or 'run'}] {ev.step}{total}  eta {format_eta(ev.eta_s)}  {extra} {ev.message}".rstrip()
            if self.tty:
                w("\r\x1b[2K" + line)
            elif ev.total and (ev.step == ev.total or ev.step % max(1, ev.total // 20) == 0):
                w(line + "\n")
        elif isinstance(ev, Metric):
            self._last_metrics[ev.name] = ev.value
            if ev.split != "train":
                w(("\n" if self.tty else "") + f"{ev.split} {ev.name} = {ev.value:.4f}\n")
        elif isinstance(ev, (Log,)):
            w(("\n" if self.tty else "") + f"{ev.level}: {ev.message}\n")
        elif isinstance(ev, Checkpoint):
            w(("\n" if self.tty else "") + f"checkpoint: {ev.path}\n")
        elif isinstance(ev, Started):
            w(f"started {ev.job}" + (f" in {ev.run_dir}" if ev.run_dir else "") + "\n")
        elif isinstance(ev, Finished):
            w(("\n" if self.tty else "") + f"{ev.status}\n")
        self.stream.flush()


def json_printer(ev: Event) -> None:
    sys.stdout.write(ev.to_json() + "\n")
    sys.stdout.flush()


def run_job(make_job, *, json_events: bool = False, cancel: CancelToken | None = None):
    """Drive ``make_job(cancel)`` with SIGINT mapped to ``cancel``; return the job's result."""
    cancel = cancel or CancelToken()
    on_event = json_printer if json_events else TerminalPrinter()
    previous = None
    if threading.current_thread() is threading.main_thread():
        def _on_sigint(signum, frame):
            if cancel.is_set():  # second Ctrl-C: stop now
                raise KeyboardInterrupt
            sys.stderr.write("\ncancelling after the current step (Ctrl-C again to abort)...\n")
            cancel.set()

        previous = signal.signal(signal.SIGINT, _on_sigint)
    try:
        return drive(make_job(cancel), on_event)
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
