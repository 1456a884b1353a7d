"""Starting a device job from a panel: one job at a time on the compute device, with the panel's own slots connected
before the job starts (the worker is created unstarted: ``JobManager.create``, connect, ``worker.start()``)."""

from __future__ import annotations

from typing import Callable

from engine.events import CancelToken

DEVICE_SLOT = "device"  # training, fine-tuning and reconstruction share one device: one such job at a time


def start_panel_job(context, make_job: Callable[[CancelToken], object], title: str, connect: Callable, *,
                    on_result: Callable | None = None, slot: str = DEVICE_SLOT):
    """Run ``make_job(cancel)`` through ``context.jobs`` in ``slot``; ``connect(worker)`` runs before the job starts.

    Returns the started ``EngineWorker``, or None when another job holds the slot (a status message says so).
    """
    try:
        worker = context.jobs.create(make_job, title, on_result=on_result, slot=slot)
    except RuntimeError:
        context.show_status("Another training or reconstruction job is running: cancel it or wait for it", 8000)
        return None
    try:
        connect(worker)
    except BaseException:
        context.jobs.discard(worker)
        raise
    worker.start()
    return worker


def slot_busy(context, slot: str = DEVICE_SLOT) -> bool:
    """True while a job holds ``slot``."""
    return context.jobs.slot_busy(slot)
