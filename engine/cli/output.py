"""How the CLI shows a running job: a one-line progress display, or one JSON event per line (``--json-events``).

``run_job(job, json_events=...)`` drives an engine job, turning SIGINT into a cancel request (the job then saves its
checkpoint and raises ``Cancelled``, which ``main`` maps to exit status 3).
"""

from __future__ import annotations

import signal
import sys
import threading

from engine.events import (CancelToken, Checkpoint, Event, Finished, Log, Metric, Progress, Started, drive,
                           format_eta)


class TerminalPrinter:
    """Prints events for a person, one line per event that matters.

    Progress overwrites one line on a TTY (on a pipe: about 20 lines per job). The metrics of one evaluation (the
    non-training ``Metric`` events of one step) share one line. Checkpoints are not listed as they are written (older
    ones are pruned): ``close()`` names the ones kept on disk. ``Finished`` prints nothing when the job is done (each
    command prints its own one-line summary) and the status otherwise.
    """

    def __init__(self, stream=None) -> None:
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self._last_metrics: dict[str, float] = {}
        self._eval: tuple[str, int | None, list[str]] | None = None  # (split, step, "name value" cells)
        self._checkpoints: list[str] = []
        self._on_progress_line = False

    def _line(self, text: str) -> None:
        self.stream.write(("\n" if self._on_progress_line else "") + text + "\n")
        self._on_progress_line = False

    def _flush_eval(self) -> None:
        if self._eval is not None:
            split, step, cells = self._eval
            self._eval = None
            self._line(f"{split}{f' @ step {step}' if step is not None else ''}: " + "  ".join(cells))

    def __call__(self, ev: Event) -> None:
        if not (isinstance(ev, Metric) and ev.split != "train"):
            self._flush_eval()
        if isinstance(ev, Progress):
            total = f"/{ev.total}" if ev.total else ""
            extra = " ".join(f"{k}={v:.4g}" for k, v in list(self._last_metrics.items())[-3:])
            eta = format_eta(ev.eta_s) if ev.eta_s is not None else "estimating"
            line = f"[{ev.stage or 'run'}] {ev.step}{total}  eta {eta}  {extra} {ev.message}".rstrip()
            if self.tty:
                self.stream.write("\r\x1b[2K" + line)
                self._on_progress_line = True
            elif ev.total and (ev.step == ev.total or ev.step % max(1, ev.total // 20) == 0):
                self._line(line)
        elif isinstance(ev, Metric):
            if ev.split == "train":
                self._last_metrics[ev.name] = ev.value
            else:
                if self._eval is not None and (self._eval[0], self._eval[1]) != (ev.split, ev.step):
                    self._flush_eval()
                if self._eval is None:
                    self._eval = (ev.split, ev.step, [])
                self._eval[2].append(f"{ev.name} {ev.value:.4f}")
        elif isinstance(ev, Log):
            self._line(f"{ev.level}: {ev.message}")
        elif isinstance(ev, Checkpoint):
            self._checkpoints.append(ev.path)
        elif isinstance(ev, Started):
            self._line(f"started {ev.job}" + (f" in {ev.run_dir}" if ev.run_dir else ""))
        elif isinstance(ev, Finished) and ev.status != "done":
            self._line(ev.status)
        self.stream.flush()

    def close(self) -> None:
        """End of the job (done, cancelled or failed): the pending evaluation line, then the checkpoints kept."""
        from pathlib import Path

        self._flush_eval()
        written = list(dict.fromkeys(self._checkpoints))  # a decoder folder is rewritten in place each epoch
        kept = [Path(p) for p in written if Path(p).exists()]
        if len(kept) == 1:
            self._line(f"checkpoint kept: {kept[0]}" + (f" ({len(written)} written, older ones pruned)"
                                                          if len(written) > 1 else ""))
        elif kept:
            self._line(f"checkpoints kept in {kept[-1].parent}: {', '.join(p.name for p in kept)}"
                       + (f" ({len(written)} written, older ones pruned)" if len(written) > len(kept) else ""))
        elif self._on_progress_line:
            self.stream.write("\n")
            self._on_progress_line = False
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
        if isinstance(on_event, TerminalPrinter):
            on_event.close()
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
