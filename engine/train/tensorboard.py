"""TensorBoard for a run folder: where its scalars are (``RUN_DIR/tb``) and how to open them.

The trainer writes every ``Metric`` to ``RUN_DIR/tb`` (``split/name`` tags, e.g. ``train/loss``, ``test/two_way``)
with ``torch.utils.tensorboard``; ``events.jsonl`` holds the same values for NeuroLens itself. The CLI prints
``open_hint`` after training; the Training panel starts ``tensorboard_command`` as a subprocess and opens its URL.
"""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

from engine.train.run import TB_DIR

DEFAULT_PORT = 6006


def tensorboard_available() -> bool:
    """Whether the ``tensorboard`` package is installed in this environment (it is an install dependency)."""
    return importlib.util.find_spec("tensorboard") is not None


def tensorboard_logdir(run_dir) -> Path:
    return Path(run_dir) / TB_DIR


def tensorboard_command(run_dir, port: int = DEFAULT_PORT) -> list[str]:
    """The command that serves the run's scalars on ``http://localhost:PORT/`` (this Python's ``tensorboard``)."""
    exe = shutil.which("tensorboard", path=str(Path(sys.executable).parent))
    head = [exe] if exe else [sys.executable, "-m", "tensorboard.main"]
    return [*head, "--logdir", str(tensorboard_logdir(run_dir)), "--port", str(int(port)), "--host", "localhost"]


def tensorboard_url(port: int = DEFAULT_PORT) -> str:
    return f"http://localhost:{int(port)}/"


def open_hint(run_dir) -> str | None:
    """One line telling a user where the run's TensorBoard scalars are and how to open them, or None if it has none."""
    logdir = tensorboard_logdir(run_dir)
    if not logdir.is_dir():
        return None
    return f"TensorBoard scalars: {logdir}  (open with: tensorboard --logdir {logdir}, then {tensorboard_url()})"
