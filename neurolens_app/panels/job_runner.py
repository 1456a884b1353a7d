"""Starting a device job from a panel: one job at a time on the compute device, with the panel's own slots connected
before the job's first event.

``JobManager.start`` starts the worker thread at once; a panel that connects to the worker's signals afterwards could
miss the first events. ``start_panel_job`` holds the job back (a ``threading.Event``) until ``connect(worker)`` has run.
"""

from __future__ import annotations

import threading
from typing import Callable

from engine.events import CancelToken

DEVICE_SLOT = "device"  # training, fine-tuning and reconstruction share one device: one such job at a time
_READY_TIMEOUT_S = 10.0


def start_panel_job(context, make_job: Callable[[CancelToken], object], title: str, connect: Callable, *,
                    on_result: Callable | None = None, slot: str = DEVICE_SLOT):
    """Run ``make_job(cancel)`` through ``context.jobs`` in ``slot``; ``connect(worker)`` runs before the job starts.

    Returns the ``EngineWorker``, or None when another job holds the slot (a status message says so).
    """
    ready = threading.Event()

    def held_back(cancel: CancelToken):
        ready.wait(_READY_TIMEOUT_S)
        return make_job(cancel)

    try:
        worker = context.jobs.start(held_back, title, on_result=on_result, slot=slot)
    except RuntimeError:
        context.show_status("Another training or reconstruction job is running: cancel it or wait for it", 8000)
        return None
    try:
        connect(worker)
    finally:
        ready.set()
    return worker


def slot_busy(context, slot: str = DEVICE_SLOT) -> bool:
    """True while a job holds ``slot``."""
    return context.jobs.slot_busy(slot)
