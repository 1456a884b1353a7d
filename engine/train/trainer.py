"""The training job: one engine for ridge, MLP, masked-brain-model and Mixture-of-Experts encoders.

``train_job(config, subject, run_dir, cancel=...)`` is a generator of events (``Started``, ``Progress``, ``Metric``,
``Checkpoint``, ``Log``, ``Finished``) whose return value is a ``TrainResult``; ``resume_job(run_dir)`` continues a run
from its latest checkpoint. Drive either with ``engine.events.drive`` or the CLI's ``run_job``.

What one run does
-----------------
1. Opens the subject, z-scores the betas per voxel with training statistics, computes the targets (image embeddings
   of every stimulus, cached on disk) and writes ``provenance.json``.
2. ``ridge``: one closed-form RidgeCV fit (per-target alpha by cross-validation) from voxels to the flattened target
   (``rescale: true`` then matches each decoded dimension's spread on the training trials to the target's).
   Torch kinds: a new model's embedding head starts with the mean training target as its bias
   (``init_output_bias``); stages of epochs over single training trials in a seeded order (one generator per epoch,
   so a resumed run sees exactly the batches the uninterrupted run would have), AdamW with per-iteration
   learning-rate schedule (times a parameter group's ``lr_scale``: MoE routers), gradient clipping, autocast on
   CUDA. ``mbm`` first pre-trains on the unpaired betas with the masked-patch MSE (``pretrain`` stage), then
   fine-tunes as an encoder. ``moe`` adds its load-balancing loss; with ``init_from`` and
   ``train_mode: router_only`` only the new subject's input layer and the routers train.
3. After every ``eval_every`` epochs: test-set metrics in embedding space on repeat-averaged outputs (``two_way``,
   ``top1_retrieval``, ``cosine``, ``mse``; see ``engine.train.evaluation``).
4. Checkpoints every ``checkpoint_every`` steps (or epoch); on cancel, a checkpoint at the current step, then
   ``Cancelled``. At the end, the final model goes to ``RUN_DIR/model`` and ``status.json`` says ``done``.

On CPU with a fixed seed, stop-and-resume gives bit-identical weights to an uninterrupted run: the model, optimizer,
step, python/numpy/torch RNG states and the trainer's own generator (mixup, masking) are all restored, and the
learning rate is a pure function of the step.
"""

from __future__ import annotations

import contextlib
import platform
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine._version import __version__
from engine.atomic import atomic_dir, atomic_write_json
from engine.errors import Cancelled, CheckpointError, ConfigError, DataError, NeuroLensError
from engine.events import CancelToken, Checkpoint, EtaClock, Finished, Log, Metric, Progress, Started, ensure_token
from engine.train.checkpoint import restore_rng, save_checkpoint
from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData, prepare_data
from engine.train.device import device_name, oom_guard, to_device
from engine.train.distributed import Distributed
from engine.train.evaluation import embedding_metrics
from engine.train.predict import CAPTION_RIDGE, MODEL_INFO, NORMALIZATION
from engine.train.run import Run
from engine.train.schedule import learning_rate
from engine.train.targets import array_digest

ROUTING_FILE = "routing.json"
EVAL_BATCH = 256


@dataclass(frozen=True)
class TrainResult:
    """What a finished training job returns.

    Attributes
    ----------
    run_dir : str
    status : str
        ``"done"``.
    step : int
        Optimisation steps done (1 for ridge).
    metrics : dict[str, float]
        Final test metrics (``two_way``, ``top1_retrieval``, ``cosine``, ``mse``).
    model_dir : str
        The final model folder (``RUN_DIR/model``).
    elapsed_s : float
        Wall time of this job (not counting earlier sessions of a resumed run).
    """

    run_dir: str
    status: str
    step: int
    metrics: dict = field(default_factory=dict)
    model_dir: str | None = None
    elapsed_s: float = 0.0


@dataclass(frozen=True)
class Stage:
    """A phase of training with its own optimizer: ``pretrain`` (MBM, unpaired) or ``train`` (supervised)."""

    name: str
    epochs: int
    batch_size: int
    n_rows: int
    optim: object

    @property
    def n_batches(self) -> int:
        return self.n_rows // self.batch_size

    @property
    def steps(self) -> int:
        return self.epochs * self.n_batches


def epoch_order(seed: int, stage: int, epoch: int, n: int) -> np.ndarray:
    """The data order of one epoch: a permutation from a generator seeded by (seed, stage, epoch) only."""
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(stage) * 10_007 + int(epoch))
    return torch.randperm(n, generator=g).numpy()


def train_job(config: TrainConfig, subject, run_dir, *, cancel: CancelToken | None = None, resume: bool = False):
    """Train an encoder on ``subject`` into the run folder ``run_dir`` (a generator of events; returns TrainResult).

    Parameters
    ----------
    config : TrainConfig
    subject : str, Path or Subject
        The subject folder/file (any readable format) or an opened ``Subject``.
    run_dir : str or Path
        A new or empty folder; with ``resume=True`` an existing run folder of the same config.
    cancel : CancelToken, optional
        Checked before every step: the job saves a checkpoint and raises ``Cancelled``.
    resume : bool
        Continue from the run's latest checkpoint (a run without one starts over in the same folder).
    """
    trainer = _Trainer(config, subject, run_dir, ensure_token(cancel), resume)
    return (yield from trainer.job())


def resume_job(run_dir, cancel: CancelToken | None = None, *, subject=None):
    """Continue the run in ``run_dir`` from its latest checkpoint, with its own ``config.yaml``.

    The subject is reopened from the path in ``provenance.json`` unless ``subject`` is given.
    """
    run = Run.open(run_dir)
    st = run.status()
    if st.get("status") == "running" and st.get("pid"):
        raise ConfigError(f"{run_dir}: still being trained by process {st['pid']} on {st.get('host')}; "
                          f"stop it first (resume continues a cancelled, failed or interrupted run)")
    if subject is None:
        try:
            subject = run.provenance()["subject"]["path"]
        except (CheckpointError, KeyError, TypeError):
            subject = None
        if not subject:
            raise CheckpointError(f"{run_dir}: provenance.json does not name the subject's path; pass the subject")
    return (yield from train_job(run.config, subject, run_dir, cancel=cancel, resume=True))


# ----------------------------------------------------------------------------------------------------------------------


class _Trainer:
    def __init__(self, config: TrainConfig, subject, run_dir, cancel: CancelToken, resume: bool) -> None:
        self.config = config
        self.subject_arg = subject
        self.run_dir = Path(run_dir)
        self.cancel = cancel
        self.resume = resume
        self.metrics: dict[str, float] = {}
        self.step = 0
        self.total = 1
        self.tb = None
        self._last_progress = 0.0

    # --- events -------------------------------------------------------------------------------------------------------
    def emit(self, event):
        if self.dist.is_main:
            self.run.append_event(event)
            if self.tb is not None and isinstance(event, Metric) and event.step is not None:
                self.tb.add_scalar(f"{event.split}/{event.name}", event.value, event.step)
        return event

    def progress(self, stage: str, *, force: bool = False):
        now = time.perf_counter()
        if not force and self.step % self.config.log_every and now - self._last_progress < 1.0:
            return None
        self._last_progress = now
        return self.emit(Progress(step=self.step, total=self.total, eta_s=self.clock.eta(self.step), stage=stage))

    # --- the job ------------------------------------------------------------------------------------------------------
    def job(self):
        t0 = time.perf_counter()
        cfg = self.config.validate()
        threads_before = torch.get_num_threads()
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        self.dist = Distributed(cfg.device)
        self.device = self.dist.device
        self.run = self._open_run()
        try:
            result = yield from self._run(t0)
        except Cancelled:
            raise
        except GeneratorExit:
            # The consumer closed the job (a GUI's hard stop): the last complete checkpoint stays the resume point.
            if self.dist.is_main:
                with contextlib.suppress(Exception):
                    latest = self.run.latest_checkpoint()
                    self.run.write_status("cancelled", step=self.step, total=self.total, metrics=self.metrics,
                                          checkpoint=None if latest is None else str(latest))
            raise
        except BaseException as e:
            if self.dist.is_main:
                msg = str(e) if isinstance(e, NeuroLensError) else f"{type(e).__name__}: {e}"
                with contextlib.suppress(Exception):
                    self.run.append_event(Log(message=msg, level="error"))
                    self.run.write_status("failed", step=self.step, total=self.total, error=msg)
            raise
        finally:
            if self.tb is not None:
                self.tb.close()
            torch.set_num_threads(threads_before)  # the process (a GUI, a notebook) keeps its own setting
        return result

    def _open_run(self) -> Run:
        cfg = self.config
        if self.resume:
            run = Run.open(self.run_dir)
            if run.config.config_hash() != cfg.config_hash():
                raise ConfigError(f"{self.run_dir}: config.yaml differs from the config given to resume; resume "
                                  f"with the run's own config (neurolens resume {self.run_dir})")
            return run
        if self.dist.is_main:
            run = Run.create(self.run_dir, cfg)
        self.dist.barrier()
        return run if self.dist.is_main else Run(self.run_dir, cfg)

    def _run(self, t0: float):
        cfg = self.config
        subject = self._open_subject()
        ckpt = None
        if self.resume:
            status = self.run.status()
            if status.get("status") == "done" and self.run.model_dir.is_dir():
                yield self.emit(Log(message=f"{self.run_dir}: run already finished; nothing to resume"))
                return TrainResult(str(self.run_dir), "done", int(status.get("step", 0)), status.get("metrics", {}),
                                   str(self.run.model_dir), 0.0)
            ckpt, skipped = self.run.load_latest_checkpoint()  # a damaged newest one falls back to the previous
            for path, why in skipped:
                yield self.emit(Log(message=f"skipped checkpoint {path.name}, it cannot be read: {why}",
                                    level="warning"))

        data = prepare_data(subject, cfg.data)
        self.data = data
        self.subject = subject
        self.key = subject.name
        stages = self._stages(data)
        self.total = sum(s.steps for s in stages) if stages else 1
        if self.dist.is_main:
            self._write_provenance(subject, data, resumed=ckpt is not None)
        self._open_tensorboard()
        start = int(ckpt.state["step"]) if ckpt is not None else 0
        self.step = start
        self.clock = EtaClock(self.total, start_step=start)
        yield self.emit(Started(job="train", run_dir=str(self.run_dir), config_hash=cfg.config_hash(),
                                total=self.total))
        if getattr(self, "tb_missing", False):
            yield self.emit(Log(message="no TensorBoard scalars: the tensorboard package is not installed "
                                        "(pip install tensorboard); events.jsonl has every value", level="warning"))
        if ckpt is not None:
            yield self.emit(Log(message=f"resuming from {ckpt.path.name} (step {start} of {self.total})"))
        if cfg.device == "cpu" and cfg.precision != "fp32":
            yield self.emit(Log(message=f"precision {cfg.precision} applies on CUDA; the CPU trains in fp32",
                                level="warning"))
        if self.dist.is_main:
            self.run.write_status("running", step=start, total=self.total)

        if cfg.model.kind == "ridge":
            model = yield from self._fit_ridge(data)
        else:
            model = yield from self._train_torch(data, stages, ckpt)

        metrics = self.metrics
        model_dir = None
        if self.dist.is_main:
            model_dir = self._save_final(model, data)
            if cfg.model.kind == "moe":
                yield from self._routing_summary(model, data)
            self.run.write_status("done", step=self.step, total=self.total, metrics=metrics,
                                  elapsed_s=time.perf_counter() - t0)
        self.dist.barrier()
        yield self.emit(Finished(status="done", summary={"step": self.step, **metrics}))
        return TrainResult(str(self.run_dir), "done", self.step, dict(metrics),
                           None if model_dir is None else str(model_dir), time.perf_counter() - t0)

    # --- setup ---------------------------------------------------------------------------------------------------------
    def _open_subject(self):
        from engine.data import open_subject
        from engine.data.subject import Subject

        if isinstance(self.subject_arg, Subject):
            return self.subject_arg
        return open_subject(self.subject_arg)

    def _stages(self, data: PreparedData) -> list[Stage]:
        cfg = self.config
        if cfg.model.kind == "ridge":
            return []
        stages = []
        n_train = data.train_betas.shape[0]
        if cfg.model.kind == "mbm" and cfg.pretrain.epochs > 0:
            n_pre = n_train + (data.test_betas.shape[0] if cfg.data.pretrain_on_test else 0)
            stages.append(Stage("pretrain", cfg.pretrain.epochs, cfg.pretrain.batch_size, n_pre, cfg.pretrain.optim))
        stages.append(Stage("train", cfg.epochs, cfg.batch_size, n_train, cfg.optim))
        for s in stages:
            if s.n_batches < 1:
                key = "pretrain.batch_size" if s.name == "pretrain" else "batch_size"
                raise ConfigError(f"TrainConfig.{key}: expected at most the number of training trials ({s.n_rows}), "
                                  f"found {s.batch_size}")
            if s.batch_size < 2 * self.dist.world_size and s.name == "train":
                raise ConfigError(f"TrainConfig.batch_size: expected >= 2 per process ({self.dist.world_size} "
                                  f"processes), found {s.batch_size}")
        return stages

    def _write_provenance(self, subject, data: PreparedData, *, resumed: bool) -> None:
        import safetensors

        prov_path = self.run.path / "provenance.json"
        sessions = []
        if prov_path.exists():
            with contextlib.suppress(Exception):
                sessions = self.run.provenance().get("sessions", [])
        data_hash = array_digest(subject.betas, np.asarray(subject.trials.image_index),
                                 np.asarray(subject.trials.split))
        if resumed and prov_path.exists():
            old = self.run.provenance()
            if old.get("data_hash") not in (None, data_hash):
                raise DataError(subject.path or subject.name, "the subject's data changed since the run started",
                                key="betas", expected=old.get("data_hash"), found=data_hash)
        sessions.append({"started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "resumed": resumed,
                         "device": str(self.device), "device_name": device_name(self.device),
                         "world_size": self.dist.world_size})
        packages = {"neurolens": __version__, "python": platform.python_version(), "torch": torch.__version__,
                    "numpy": np.__version__, "safetensors": getattr(safetensors, "__version__", "?")}
        with contextlib.suppress(ImportError):
            import accelerate

            packages["accelerate"] = accelerate.__version__
        self.run.write_provenance({
            "config_hash": self.config.config_hash(),
            "seed": self.config.seed,
            "device": {"id": str(self.device), "name": device_name(self.device), "world_size": self.dist.world_size},
            "packages": packages,
            "platform": platform.platform(),
            "subject": {"path": None if subject.path is None else str(Path(subject.path).resolve()),
                        "name": subject.name, "format": subject.format, "n_trials": subject.n_trials,
                        "n_voxels": subject.n_voxels, "simulation": subject.is_simulation},
            "data_hash": data_hash,
            "targets": {"embedder": self.config.data.embedder, "kind": self.config.data.target,
                        "shape": list(data.target_shape), "hash": array_digest(data.targets)},
            **({"caption_targets": {"embedder": self.config.data.caption_embedder,
                                    "shape": list(data.caption_targets.shape[1:]),
                                    "hash": array_digest(data.caption_targets)}}
               if data.caption_targets is not None else {}),
            "voxels_used": int(data.n_voxels),
            "trials": {"train": data.train_rows.tolist(), "test": data.test_rows.tolist()},
            # whether the test trials' betas (not their images) entered MBM pre-training: a reviewer's question
            "pretrain_on_test": bool(self.config.model.kind == "mbm" and self.config.data.pretrain_on_test),
            "sessions": sessions,
        })

    def _open_tensorboard(self) -> None:
        if not self.dist.is_main:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # an install dependency; a broken environment still trains (events.jsonl has it all)
            self.tb_missing = True
            return
        self.tb = SummaryWriter(log_dir=str(self.run.path / "tb"))

    # --- ridge ---------------------------------------------------------------------------------------------------------
    def _fit_ridge(self, data: PreparedData):
        from engine.models.ridge import DEFAULT_ALPHAS, RidgeCV

        p = self.config.model.params
        backend = p.get("backend", "torch" if self.device.type == "cuda" else "numpy")
        device = str(self.device) if backend == "torch" else None
        ridge = RidgeCV(alphas=tuple(p.get("alphas", DEFAULT_ALPHAS)), cv=int(p.get("cv", 5)), backend=backend,
                        device=device)
        yield self.emit(Progress(step=0, total=1, stage="ridge", message="cross-validating alphas"))
        yield from self._cancel_without_checkpoint()
        n = data.train_betas.shape[0]
        if self.config.data.pixel_basis != "pixels":
            ridge = yield from self._fit_pixel_basis(data, p, backend, device)
        else:
            with oom_guard(self.device, what="fitting ridge"):
                ridge.fit(data.train_betas, data.targets[data.train_image].reshape(n, -1))
        if p.get("rescale", False):
            ridge.rescale_outputs(data.train_betas, data.targets[data.train_image].reshape(n, -1))
        self.caption_ridge = None
        if data.caption_targets is not None:
            # The caption target is a second, independent ridge fit (its own per-target alphas).
            self.caption_ridge = RidgeCV(alphas=tuple(p.get("alphas", DEFAULT_ALPHAS)), cv=int(p.get("cv", 5)),
                                         backend=backend, device=device)
            with oom_guard(self.device, what="fitting the caption ridge"):
                self.caption_ridge.fit(data.train_betas, data.caption_targets[data.train_image])
            if p.get("rescale", False):
                self.caption_ridge.rescale_outputs(data.train_betas, data.caption_targets[data.train_image])
        self.step = 1
        yield from self._cancel_without_checkpoint()
        yield self.emit(Progress(step=1, total=1, stage="ridge"))
        alphas = np.asarray(ridge.alphas_)
        yield self.emit(Log(message=f"ridge: median alpha {float(np.median(alphas)):.3g} over {alphas.size} targets"))
        yield from self._evaluate(ridge)
        return ridge

    def _fit_pixel_basis(self, data: PreparedData, p: dict, backend: str, device):
        """``data.pixel_basis`` pca / multiscale: a ridge onto the basis, decoded to pixels
        (``engine.models.pixel_basis``). The PCA basis sees the training stimuli and prior images, never a test one."""
        from engine.models.pixel_basis import describe_basis, fit_pixel_decoder, pca_basis_images
        from engine.models.ridge import DEFAULT_ALPHAS, RidgeCV

        d = self.config.data
        y = data.targets[data.train_image].reshape(len(data.train_image), -1)
        basis_images, source = None, ""
        if d.pixel_basis == "pca":
            basis_images, source = pca_basis_images(self.subject, data.targets, data.train_image)
        h, w = self.subject.image_shape[:2]
        with oom_guard(self.device, what=f"fitting the {d.pixel_basis} pixel decoder"):
            model = fit_pixel_decoder(
                d.pixel_basis, lambda: RidgeCV(alphas=tuple(p.get("alphas", DEFAULT_ALPHAS)), cv=int(p.get("cv", 5)),
                                               backend=backend, device=device),
                data.train_betas, y, basis_images=basis_images, n_components=d.pca_components,
                image_shape=(h, w, y.shape[1] // (h * w)), cv=int(p.get("cv", 5)), basis_source=source)
        yield self.emit(Log(message=describe_basis(model.info)))
        return model

    # --- torch encoders -------------------------------------------------------------------------------------------------
    def _build_model(self, data: PreparedData, ckpt):
        from engine.models.base import BrainEncoder
        from engine.models.registry import build_encoder, encoder_from_spec

        cfg = self.config
        torch.manual_seed(cfg.seed)
        np.random.seed(cfg.seed % 2**32)
        random.seed(cfg.seed)
        if ckpt is not None:
            model = encoder_from_spec(ckpt.model_spec, source=str(ckpt.path))
            model.load_state_dict_checked(ckpt.model_state, source=str(ckpt.path))
        elif cfg.init_from:
            from engine.train.predict import load_encoder

            model = load_encoder(cfg.init_from)
            if not isinstance(model, BrainEncoder):
                raise ConfigError(f"TrainConfig.init_from: {cfg.init_from} holds a ridge model; expected a torch "
                                  f"encoder run (kind mlp, mbm or moe)")
            if model.kind != cfg.model.kind:
                raise ConfigError(f"TrainConfig.init_from: {cfg.init_from} holds a '{model.kind}' encoder, but "
                                  f"model.kind is '{cfg.model.kind}'")
            if tuple(model.target_shape) != data.target_shape:
                raise ConfigError(f"TrainConfig.init_from: {cfg.init_from} predicts targets of shape "
                                  f"{tuple(model.target_shape)}, this run's targets are {data.target_shape}")
            if self.key not in model.subjects:
                model.add_subject(self.key, data.n_voxels)
            elif model.subjects[self.key] != data.n_voxels:
                raise ConfigError(f"TrainConfig.init_from: subject '{self.key}' has {model.subjects[self.key]} voxels "
                                  f"in {cfg.init_from}, {data.n_voxels} here")
        else:
            model = build_encoder(cfg.model.kind, cfg.model_config(), n_voxels={self.key: data.n_voxels},
                                  target_shape=data.target_shape)
            model.init_output_bias(data.targets[data.train_image].mean(axis=0))
        self._ensure_caption_head(model, data)
        if hasattr(model, "set_voxel_groups"):
            # ROI-aware MoE input layers read each voxel's ROI group from the subject (a no-op without roi_groups).
            idx = data.normalizer.voxel_index
            model.set_voxel_groups(self.key, {k: np.asarray(m, bool)[idx] for k, m in self.subject.rois.items()})
        model = model.to(self.device)
        self.dist.broadcast_model(model)
        return model

    def _ensure_caption_head(self, model, data: PreparedData) -> None:
        """Give the encoder a caption head when the run has caption targets (new model or ``init_from``)."""
        if data.caption_targets is None:
            return
        dim = int(data.caption_targets.shape[1])
        if model.caption_head is None:
            if self.config.train_mode != "all":
                raise ConfigError(f"TrainConfig.train_mode: '{self.config.train_mode}' would leave a new caption "
                                  f"head untrained; fine-tune with train_mode 'all' or set data.caption_embedder: null")
            model.add_caption_head(dim)
        elif model.caption_dim != dim:
            raise ConfigError(f"TrainConfig.data.caption_embedder: the encoder's caption head predicts "
                              f"{model.caption_dim} values, the caption embedder gives {dim}")

    def _param_groups(self, model, stage: Stage) -> list[dict]:
        wd = stage.optim.weight_decay
        if stage.name == "pretrain":
            chosen = model.pretrain_parameters()
            ids = {id(p) for p in chosen.values()}
            for p in model.parameters():
                p.requires_grad_(id(p) in ids)
            decay = [p for n, p in chosen.items() if p.ndim >= 2 and not n.endswith("_token")]
            no_decay = [p for n, p in chosen.items() if not (p.ndim >= 2 and not n.endswith("_token"))]
            groups = [{"name": "decay", "params": decay, "weight_decay": wd},
                      {"name": "no_decay", "params": no_decay, "weight_decay": 0.0}]
            return [g for g in groups if g["params"]]
        return model.param_groups(self.config.train_mode, subject=self.key, weight_decay=wd,
                                  router_lr_scale=stage.optim.router_lr_scale)

    def _autocast(self):
        if self.device.type == "cuda" and self.config.precision != "fp32":
            dtype = torch.bfloat16 if self.config.precision == "bf16" else torch.float16
            return torch.autocast(device_type="cuda", dtype=dtype)
        return contextlib.nullcontext()

    def _train_torch(self, data: PreparedData, stages: list[Stage], ckpt):
        cfg = self.config
        loss_cfg = cfg.loss_config()
        model = self._build_model(data, ckpt)
        gen = torch.Generator().manual_seed(cfg.seed + 1)  # mixup partners/weights and MAE masks
        if ckpt is not None:
            restore_rng(ckpt.rng_json, ckpt.rng_tensors, gen)
        pos = dict(stage=0, epoch=0, batch=0) if ckpt is None else {k: int(ckpt.state[k])
                                                                    for k in ("stage", "epoch", "batch")}
        scaler = None
        if self.device.type == "cuda" and cfg.precision == "fp16":
            scaler = torch.amp.GradScaler("cuda")
            if ckpt is not None and ckpt.state.get("scaler"):
                scaler.load_state_dict(ckpt.state["scaler"])
        blurry = self._blurry_shape(model, loss_cfg)
        offset = 0
        for si, stage in enumerate(stages):
            if si < pos["stage"]:
                offset += stage.steps
                continue
            groups = self._param_groups(model, stage)
            # One fused kernel per step on CUDA: the step is bound by the optimizer's memory traffic there.
            opt = torch.optim.AdamW(groups, lr=stage.optim.lr, betas=stage.optim.betas,
                                    fused=True if self.device.type == "cuda" else None)
            if ckpt is not None and si == pos["stage"] and ckpt.optimizer_state is not None:
                try:
                    opt.load_state_dict(ckpt.optimizer_state)
                except (ValueError, KeyError) as e:
                    raise CheckpointError(f"{ckpt.path}: optimizer state does not match the model ({e})") from None
            params = [p for g in groups for p in g["params"]]
            if stage.name == "pretrain":
                rows_all = (np.concatenate([data.train_betas, data.test_betas]) if cfg.data.pretrain_on_test
                            else data.train_betas)
            else:
                rows_all = data.train_betas
            e0 = pos["epoch"] if si == pos["stage"] else 0
            for epoch in range(e0, stage.epochs):
                order = epoch_order(cfg.seed, si, epoch, stage.n_rows)
                b0 = pos["batch"] if (si == pos["stage"] and epoch == e0) else 0
                model.train()
                for b in range(b0, stage.n_batches):
                    if self.dist.any(self.cancel.is_set()):
                        yield from self._cancel(model, opt, gen, scaler, si, epoch, b, stage)
                    rows = order[b * stage.batch_size:(b + 1) * stage.batch_size]  # the global batch
                    self.dist.seed_step(cfg.seed, self.step)  # dropout: independent per process, same on resume
                    lr = learning_rate(stage.optim, self.step - offset, stage.steps)
                    for g in opt.param_groups:
                        g["lr"] = lr * g.get("lr_scale", 1.0)
                    with oom_guard(self.device, batch_size=stage.batch_size, precision=cfg.precision):
                        if stage.name == "pretrain":
                            loss, parts = self._pretrain_step(model, rows_all, rows, gen)
                        else:
                            progress = (self.step - offset) / max(1, stage.steps)
                            loss, parts = self._train_step(model, data, rows, gen, loss_cfg, progress, blurry)
                        if not torch.isfinite(loss):
                            raise ConfigError(f"training diverged: loss is {float(loss)} at step {self.step}; lower "
                                              f"optim.lr or use precision fp32/bf16")
                        self._backward(loss, opt, params, scaler, stage.optim.grad_clip)
                    self.step += 1
                    if self.step % cfg.log_every == 0 or self.step == self.total:
                        yield self.emit(Metric(name="loss", value=self.dist.mean(float(loss.detach())), step=self.step,
                                               split=stage.name))
                        for k, v in parts.items():
                            yield self.emit(Metric(name=f"loss_{k}", value=self.dist.mean(v), step=self.step,
                                                   split=stage.name))
                        yield self.emit(Metric(name="lr", value=lr, step=self.step, split=stage.name))
                    ev = self.progress(stage.name, force=self.step == self.total)
                    if ev is not None:
                        yield ev
                    if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0:
                        yield from self._checkpoint(model, opt, gen, scaler, si, epoch, b + 1, stage)
                last = epoch == stage.epochs - 1
                if stage.name == "train" and ((epoch + 1) % cfg.eval_every == 0 or last):
                    yield from self._evaluate(model, epoch=epoch + 1)
                if not cfg.checkpoint_every:
                    yield from self._checkpoint(model, opt, gen, scaler, si, epoch + 1, 0, stage)
            offset += stage.steps
        model.eval()
        return model

    def _pretrain_step(self, model, betas: np.ndarray, rows: np.ndarray, gen):
        x = to_device(betas[self.dist.shard(rows)], self.device)
        if self.dist.active:
            # Masks from a per-step generator of this process: the trainer's generator advances alike on every
            # process (BiMixCo later draws from it for the global batch) whatever the block sizes.
            seed = int(torch.randint(2**62, (1,), generator=gen)) + self.dist.rank
            gen = torch.Generator().manual_seed(seed)
        with self._autocast():
            loss = model.pretrain_loss(x, subject=self.key, generator=gen) * self.dist.local_weight(len(rows))
        return loss, {"mae": float(loss.detach())}

    def _train_step(self, model, data: PreparedData, rows: np.ndarray, gen, loss_cfg, progress: float, blurry):
        from engine.models.losses import encoder_loss, global_batch, mixco_batch

        # ``rows`` is the global batch: this process runs its block, and every process computes the loss of the
        # global batch from the gathered outputs (engine.train.distributed).
        local = self.dist.local_slice(len(rows))
        mix = None
        if loss_cfg.uses_mixco(progress):
            # Partners and weights for the global batch, drawn alike on every process (same generator state).
            x = to_device(data.train_betas[rows], self.device)
            mix = mixco_batch(x, beta=loss_cfg.mixco_beta, prob=loss_cfg.mixco_prob, generator=gen)
            x = mix.betas[local]
        else:
            x = to_device(data.train_betas[rows[local]], self.device)
        images = data.train_image[rows]  # every process holds the targets: no need to gather them
        y = to_device(data.targets[images], self.device)
        blurry_target = (self.dist.gather_rows(self._blurry_target(images[local], blurry), len(rows))
                         if blurry is not None else None)
        caption_target = (to_device(data.caption_targets[images], self.device)
                          if data.caption_targets is not None else None)
        in_batch = global_batch(self.dist.sum_over_processes) if self.dist.active else contextlib.nullcontext()
        with self._autocast(), in_batch:
            out = self.dist.gather_output(model(x, subject=self.key), len(rows))
        return encoder_loss(out, y, loss_cfg, progress=progress, mix=mix, blurry_target=blurry_target,
                            caption_target=caption_target)

    def _blurry_shape(self, model, loss_cfg):
        shape = getattr(model.config, "blurry_shape", None)
        if not getattr(model.config, "blurry", False) or loss_cfg.blurry <= 0:
            return None
        if shape[0] != 3:
            raise ConfigError(f"model.params.blurry_shape: the trainer's low-level target is the image itself, "
                              f"expected 3 channels, found {list(shape)}")
        return shape

    def _blurry_target(self, images: np.ndarray, shape) -> torch.Tensor:
        """The seen images, area-downsampled to ``shape`` (3, H, W), in [0, 1]."""
        order = np.argsort(images, kind="stable")
        imgs = np.empty((len(images),) + self.subject.image_shape, np.uint8)
        imgs[order] = np.asarray(self.subject.images[images[order]])
        x = to_device(imgs, self.device).permute(0, 3, 1, 2).float() / 255.0
        return torch.nn.functional.interpolate(x, size=tuple(shape[1:]), mode="area")

    def _backward(self, loss, opt, params, scaler, clip: float) -> None:
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            self.dist.average_gradients(params)
            scaler.unscale_(opt)
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(params, clip)
            scaler.step(opt)
            scaler.update()
            return
        loss.backward()
        self.dist.average_gradients(params)
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()

    # --- checkpoints and cancel ----------------------------------------------------------------------------------------
    def _position(self, si: int, epoch: int, batch: int, stage: Stage) -> dict:
        if batch >= stage.n_batches:
            epoch, batch = epoch + 1, 0
        if epoch >= stage.epochs:
            si, epoch, batch = si + 1, 0, 0
        return {"stage": si, "epoch": epoch, "batch": batch}

    def _checkpoint(self, model, opt, gen, scaler, si, epoch, batch, stage):
        path = None
        if self.dist.is_main:
            state = {**self._position(si, epoch, batch, stage), "stage_name": stage.name, "total": self.total,
                     "scheduler": {"kind": stage.optim.schedule, "stage": stage.name, "global_step": self.step,
                                   "note": "the learning rate is a pure function of the step (engine.train.schedule)"},
                     "scaler": scaler.state_dict() if scaler is not None else None,
                     "metrics": self.metrics}
            path = save_checkpoint(self.run.checkpoint_dir, self.step, model=model, optimizer=opt, state=state,
                                   generator=gen, keep=self.config.keep_checkpoints)
            self.run.write_status("running", step=self.step, total=self.total, metrics=self.metrics,
                                  checkpoint=str(path))
        self.dist.barrier()
        if path is not None:
            yield self.emit(Checkpoint(path=str(path), step=self.step))

    def _cancel_without_checkpoint(self):
        """Ridge has no partial state worth keeping: a cancel request just ends the job (status: cancelled)."""
        if not self.cancel.is_set():
            return
        if self.dist.is_main:
            self.run.write_status("cancelled", step=self.step, total=self.total, metrics=self.metrics)
        yield self.emit(Finished(status="cancelled", summary={"step": self.step}))
        raise Cancelled("cancelled before the ridge fit finished; start it again with 'neurolens train'")

    def _cancel(self, model, opt, gen, scaler, si, epoch, batch, stage):
        yield from self._checkpoint(model, opt, gen, scaler, si, epoch, batch, stage)
        latest = self.run.latest_checkpoint() if self.dist.is_main else None
        if self.dist.is_main:
            self.run.write_status("cancelled", step=self.step, total=self.total, metrics=self.metrics,
                                  checkpoint=None if latest is None else str(latest))
        yield self.emit(Finished(status="cancelled", summary={"step": self.step, **self.metrics}))
        raise Cancelled(f"cancelled at step {self.step} of {self.total}; resume with 'neurolens resume "
                        f"{self.run_dir}'", checkpoint=latest)

    # --- evaluation ----------------------------------------------------------------------------------------------------
    def _evaluate(self, model, epoch: int | None = None):
        data = self.data
        if not self.dist.is_main or len(data.test_image_index) < 2:
            return
        pred = predict_prepared(model, data, self.key, self.config.data.repeat_mode, self.device).embeddings
        if not hasattr(self, "_target_mean"):
            self._target_mean = data.targets[data.train_image].mean(axis=0)
        metrics = embedding_metrics(pred, data.targets[data.test_image_index], center=self._target_mean)
        metrics.update(self._caption_metrics(model))
        self.metrics = metrics
        for k, v in metrics.items():
            yield self.emit(Metric(name=k, value=v, step=self.step, split="test"))

    def _caption_metrics(self, model) -> dict[str, float]:
        """``caption_two_way``, ``caption_top1_retrieval``, ``caption_cosine``… of the caption head (test set)."""
        from engine.train.predict import predict_caption_groups

        data = self.data
        if data.caption_targets is None:
            return {}
        caption_model = self.caption_ridge if self.config.model.kind == "ridge" else model
        pred, _ = predict_caption_groups(caption_model, data.test_betas, data.test_groups, self.key,
                                         repeat_mode=self.config.data.repeat_mode, device=self.device)
        center = data.caption_targets[data.train_image].mean(axis=0)
        m = embedding_metrics(pred, data.caption_targets[data.test_image_index], center=center)
        return {f"caption_{k}": v for k, v in m.items()}

    def _routing_summary(self, model, data: PreparedData):
        """Expert × ROI tables of the trained MoE on the test trials, written to ``RUN_DIR/routing.json``."""
        from engine.models.routing import expert_roi_table, voxel_routing

        rois = {}
        idx = data.normalizer.voxel_index
        for name, mask in self.subject.rois.items():
            m = np.asarray(mask, bool)[idx]
            if m.any():
                rois[name] = m
        if not rois or data.test_betas.shape[0] == 0:
            return
        model.cpu()
        levels = voxel_routing(model, self.key, data.test_betas)
        tables = [expert_roi_table(v, rois) for v in levels]
        atomic_write_json(self.run.path / ROUTING_FILE, {
            "rois": list(rois), "levels": [{"n_experts": int(t.shape[0]),
                                            "table": np.where(np.isfinite(t), t, -1).tolist()} for t in tables],
            "note": "table[e][r]: share of ROI r's voxels' routing that goes to expert e (columns sum to 1)",
        })
        first = tables[0]
        top = {name: int(np.nanargmax(first[:, j])) for j, name in enumerate(rois)}
        yield self.emit(Log(message="MoE level 0, dominant expert per ROI: "
                            + ", ".join(f"{k}→{v}" for k, v in top.items())))

    # --- final model ---------------------------------------------------------------------------------------------------
    def _save_final(self, model, data: PreparedData) -> Path:
        target = self.run.model_dir
        info = {"kind": self.config.model.kind, "subject": self.key, "n_voxels": int(data.n_voxels),
                "target_shape": list(data.target_shape), "embedder": self.config.data.embedder,
                "target": self.config.data.target, "repeat_mode": self.config.data.repeat_mode,
                "config_hash": self.config.config_hash(), "step": self.step, "metrics": self.metrics}
        if data.caption_targets is not None:
            info.update(caption_embedder=self.config.data.caption_embedder,
                        caption_dim=int(data.caption_targets.shape[1]))
        with atomic_dir(target, overwrite=True) as tmp:
            if self.config.model.kind == "ridge":
                if hasattr(model, "save_into"):  # a pixel decoder through a basis: ridge/ + pixel_basis/
                    model.save_into(tmp)
                    info["pixel_basis"] = model.info
                else:
                    model.save(tmp / "ridge")
                if getattr(self, "caption_ridge", None) is not None:
                    self.caption_ridge.save(tmp / CAPTION_RIDGE)
            else:
                model.cpu().save(tmp / "encoder")
            data.normalizer.save(tmp / NORMALIZATION)
            atomic_write_json(tmp / MODEL_INFO, info)
        return target


def predict_prepared(model, data: PreparedData, subject_key: str, repeat_mode: str, device="cpu",
                     *, per_repeat: bool = False):
    """Test predictions (n_test_images, *target_shape) from prepared data; see ``engine.train.predict``."""
    from engine.train.predict import predict_groups

    return predict_groups(model, data.test_betas, data.test_groups, subject_key, data.target_shape,
                          repeat_mode=repeat_mode, device=device, per_repeat=per_repeat)
