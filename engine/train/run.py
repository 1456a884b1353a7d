"""A training run is a folder; ``Run`` reads and writes its parts.

::

    RUN_DIR/
      config.yaml          the resolved TrainConfig
      provenance.json      data hash, package versions, device, seed, subject path, trial ids used
      events.jsonl         every event of the job, one JSON object per line (appended across resumes)
      status.json          running | done | cancelled | failed, step, total, final metrics, error; while running,
                           the writer's pid and host: a run whose process is gone reads as "interrupted"
      tb/                  TensorBoard scalars, tags split/name (``engine.train.tensorboard``)
      checkpoints/step-XXXXXX/   model.safetensors, optimizer.safetensors, rng.safetensors, state.json, model.json
      model/               the final model: run_model.json (``Run.model_info``) and the weights
                           (``engine.train.trained_model.TrainedModel``)
      decoder/             the fine-tuned decoder, when there is one (``engine.recon.decoder``)
      recon/SPLIT/         reconstruction folders (``engine.recon.index``)

Every file and folder name of a run folder is defined here, once; the app and the CLI ask ``Run`` (``status``,
``subject_path``, ``has_model``, ``model_info``, ``config_path``, ``decoder_dir``, ``recon_dir``) instead of naming
files.

Every file except ``events.jsonl`` is written atomically; checkpoint folders appear under their final name only once
complete (``engine.atomic.atomic_dir``).
"""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

from engine.atomic import atomic_write_json, output_errors
from engine.errors import CheckpointError, ConfigError
from engine.events import Event, event_from_dict
from engine.jsonfile import field, read_object
from engine.train.config import TrainConfig

CONFIG_FILE = "config.yaml"
PROVENANCE_FILE = "provenance.json"
EVENTS_FILE = "events.jsonl"
STATUS_FILE = "status.json"
CHECKPOINTS = "checkpoints"
MODEL_DIR = "model"
MODEL_INFO = "run_model.json"  # in MODEL_DIR: kind, subject, target shape, embedder of the final model
TB_DIR = "tb"
DECODER_DIR = "decoder"  # its content: engine.recon.decoder
RECON_DIR = "recon"  # RECON_DIR/<split>: the default reconstruction folders (engine.recon.index)
RUN_FILES = (CONFIG_FILE, STATUS_FILE, PROVENANCE_FILE, EVENTS_FILE)
STATUSES = ("running", "done", "cancelled", "failed")
INTERRUPTED = "interrupted"  # read, never written: "running" in status.json, but its process is gone


class Run:
    """One run folder. Build with ``Run.create`` (new run) or ``Run.open`` (existing run, its config checked).

    ``Run(path)`` alone is a cheap view for reading a folder's small files (status, provenance, model info): the
    config is parsed only when ``config`` is first read.
    """

    def __init__(self, path: str | Path, config: TrainConfig | None = None) -> None:
        self.path = Path(path)
        self._config = config

    @property
    def config(self) -> TrainConfig:
        if self._config is None:
            self._config = TrainConfig.load(self.config_path)
        return self._config

    @staticmethod
    def is_run_folder(path: str | Path) -> bool:
        """Whether ``path`` holds a run (its ``config.yaml``; written first, before anything else of the run)."""
        return (Path(path) / CONFIG_FILE).is_file()

    @staticmethod
    def has_run_files(path: str | Path) -> bool:
        """Whether ``path`` holds any file of a run (also a damaged one whose config is missing)."""
        return any((Path(path) / name).exists() for name in RUN_FILES)

    # --- creation / opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path: str | Path, config: TrainConfig) -> "Run":
        """Start a new run folder with ``config.yaml``; refuses a folder that already holds a run."""
        path = Path(path)
        try:
            path.resolve(strict=False)
        except (OSError, RuntimeError):
            raise ConfigError(f"{path}: run folder: a symbolic link loop") from None
        if path.is_symlink() and not path.exists():
            raise ConfigError(f"{path}: run folder: a symbolic link to nothing")
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{path}: run folder: expected a folder, found a file")
        if (path / CONFIG_FILE).exists():
            raise ConfigError(f"{path}: already holds a run (config.yaml exists); use 'neurolens resume {path}' or "
                              f"choose another --out")
        if path.is_dir() and any(p for p in path.iterdir() if not p.name.startswith(".")):
            raise ConfigError(f"{path}: run folder: expected a new or empty folder, found other files")
        with output_errors(path.parent):
            path.mkdir(parents=True, exist_ok=True)
        config.save(path / CONFIG_FILE)
        return cls(path, config)

    @classmethod
    def open(cls, path: str | Path) -> "Run":
        """Open an existing run folder (reads its ``config.yaml``)."""
        path = Path(path)
        if not (path / CONFIG_FILE).is_file():
            raise CheckpointError(f"{path}: not a NeuroLens run folder (no {CONFIG_FILE})")
        return cls(path, TrainConfig.load(path / CONFIG_FILE))

    # --- parts ----------------------------------------------------------------------------------------------------
    @property
    def config_path(self) -> Path:
        """The resolved ``TrainConfig`` as YAML (the text a user reads, and its modification time)."""
        return self.path / CONFIG_FILE

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def decoder_dir(self) -> Path:
        return self.path / DECODER_DIR

    @property
    def recon_dir(self) -> Path:
        return self.path / RECON_DIR

    def recon_folder(self, split: str) -> Path:
        """The default reconstruction folder of ``split`` (``neurolens reconstruct`` without ``--out``)."""
        return self.recon_dir / split

    def has_model(self) -> bool:
        """Whether the final model is written (the trainer writes ``model/`` in one atomic step)."""
        return (self.model_dir / MODEL_INFO).is_file()

    def model_info(self) -> dict:
        """``model/run_model.json`` of a finished run, its fields type-checked; ``CheckpointError`` before."""
        p = self.model_dir / MODEL_INFO
        if not p.is_file():
            raise CheckpointError(f"{self.path}: no final model yet (missing {MODEL_DIR}/{MODEL_INFO}); status: "
                                  f"{self.status().get('status')}")
        info = read_object(p, CheckpointError)
        for key in ("kind", "subject", "embedder", "target"):
            field(info, key, str, p, error=CheckpointError)
        shape = field(info, "target_shape", list, p, error=CheckpointError)
        if not shape or not all(isinstance(n, int) and not isinstance(n, bool) and n > 0 for n in shape):
            raise CheckpointError(f"{p}: key 'target_shape': expected a list of positive integers, found "
                                  f"{shape!r:.60}")
        field(info, "step", int, p, default=0, error=CheckpointError)
        field(info, "metrics", dict, p, default={}, error=CheckpointError)
        for key in ("caption_embedder", "repeat_mode"):
            field(info, key, (str, type(None)), p, default=None, error=CheckpointError)
        return info

    @property
    def checkpoint_dir(self) -> Path:
        return self.path / CHECKPOINTS

    def checkpoints(self) -> list[Path]:
        """Complete checkpoint folders, oldest first (half-written ones carry a hidden temporary name)."""
        if not self.checkpoint_dir.is_dir():
            return []
        found = [p for p in self.checkpoint_dir.iterdir() if p.is_dir() and p.name.startswith("step-")
                 and p.name[5:].isdigit() and (p / "state.json").is_file()]
        return sorted(found, key=lambda p: int(p.name[5:]))

    def latest_checkpoint(self) -> Path | None:
        cps = self.checkpoints()
        return cps[-1] if cps else None

    # --- provenance and status ------------------------------------------------------------------------------------
    def write_provenance(self, provenance: dict) -> None:
        atomic_write_json(self.path / PROVENANCE_FILE, provenance)

    def provenance(self) -> dict:
        return _read_json(self.path / PROVENANCE_FILE)

    def subject_path(self) -> str | None:
        """The path of the subject the run was trained on, as its provenance records it (None if it records none)."""
        try:
            path = self.provenance()["subject"]["path"]
        except (OSError, KeyError, TypeError, ValueError, CheckpointError):
            return None
        return path if isinstance(path, str) and path else None

    def write_status(self, status: str, **fields) -> None:
        if status not in STATUSES:
            raise ValueError(f"status must be one of {STATUSES}, got {status!r}")
        if status == "running":  # who is running it: a reader can tell a live run from a killed one
            fields = {**fields, "pid": os.getpid(), "host": socket.gethostname()}
        atomic_write_json(self.path / STATUS_FILE, {"status": status, "updated": time.time(), **fields})

    def status(self) -> dict:
        """``status.json`` as a dict, its fields type-checked; ``{"status": "unknown"}`` before the job wrote one.

        A run left ``running`` by a process that is gone (killed, crashed, machine restarted) reads as
        ``"interrupted"``: ``neurolens resume`` continues it from its newest complete checkpoint.
        """
        p = self.path / STATUS_FILE
        if not p.is_file():
            return {"status": "unknown"}
        d = read_object(p, CheckpointError)
        status = field(d, "status", str, p, error=CheckpointError)
        if status not in STATUSES:
            raise CheckpointError(f"{p}: key 'status': expected one of {list(STATUSES)}, found {status[:40]!r}")
        for key in ("step", "total", "pid"):
            field(d, key, int, p, default=0, error=CheckpointError)
        field(d, "metrics", dict, p, default={}, error=CheckpointError)
        field(d, "updated", float, p, default=0.0, error=CheckpointError)
        for key in ("host", "error", "checkpoint"):
            field(d, key, (str, type(None)), p, default=None, error=CheckpointError)
        if status == "running" and process_gone(d.get("pid"), d.get("host")):
            d = {**d, "status": INTERRUPTED}
        return d

    def load_latest_checkpoint(self):
        """The newest checkpoint that loads, and the newer ones skipped as ``[(path, reason)]``.

        A checkpoint folder can be complete by name yet damaged later (a truncated file, a tampered ``state.json``);
        resuming then falls back to the previous one instead of stopping. ``(None, skipped)`` when none loads.
        """
        from engine.train.checkpoint import load_checkpoint

        skipped = []
        for path in reversed(self.checkpoints()):
            try:
                return load_checkpoint(path), skipped
            except CheckpointError as e:
                skipped.append((path, str(e)))
        return None, skipped

    # --- events ---------------------------------------------------------------------------------------------------
    def append_event(self, event: Event) -> None:
        """Append one event as a JSON line (flushed, so a crash loses at most the line being written)."""
        with output_errors(self.path), open(self.path / EVENTS_FILE, "a", encoding="utf-8") as f:
            f.write(event.to_json() + "\n")
            f.flush()

    def events(self) -> list[Event]:
        """Every event recorded so far; a torn last line (crash mid-write) is skipped."""
        p = self.path / EVENTS_FILE
        if not p.is_file():
            return []
        out = []
        for line in p.read_text(encoding="utf-8").splitlines():
            try:
                out.append(event_from_dict(json.loads(line)))
            except (ValueError, KeyError, TypeError, AttributeError, RecursionError):  # torn or tampered line
                continue
        return out

    def metrics(self, split: str | None = None) -> list[dict]:
        """Metric events as dicts ``{name, value, step, split}``, optionally of one split."""
        return [e.to_dict() for e in self.events()
                if type(e).__name__ == "Metric" and (split is None or e.split == split)]

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r}, kind={self.config.model.kind!r})"


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise CheckpointError(f"{path}: missing")
    return read_object(path, CheckpointError)


def process_gone(pid, host) -> bool:
    """Whether process ``pid`` of this machine no longer exists (False when it may: other host, unknown pid)."""
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or host != socket.gethostname():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except (PermissionError, OverflowError):
        return False
    return False
