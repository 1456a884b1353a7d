"""Background work: ``EngineWorker`` runs engine jobs in a QThread; ``ShortJob`` runs small functions in the pool."""

from neurolens_app.workers.engine_worker import EngineWorker, running_threads, wait_for_threads
from neurolens_app.workers.short_job import ShortJob, submit

__all__ = ["EngineWorker", "running_threads", "wait_for_threads", "ShortJob", "submit"]
