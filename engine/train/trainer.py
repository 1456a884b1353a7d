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
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from engine.errors import Cancelled, CheckpointError, ConfigError, NeuroLensError
from engine.events import CancelToken, Checkpoint, EtaClock, Finished, Log, Metric, Progress, Started, ensure_token
from engine.train.checkpoint import restore_rng, save_checkpoint
from engine.train.config import TrainConfig
from engine.train.dataset import PreparedData, prepare_data
from engine.train.device import oom_guard
from engine.train.distributed import Distributed
from engine.train.encoder_setup import build_model, param_groups
from engine.train.evaluation import embedding_metrics
from engine.train.final_model import save_final_model, write_routing_summary
from engine.train.provenance import write_provenance
from engine.train.ridge_fit import fit_pixel_basis, new_ridge
from engine.train.run import Run
from engine.train.schedule import learning_rate
from engine.train.stages import Stage, epoch_order, plan_stages
from engine.train.steps import backward, blurry_shape, pretrain_step, train_step



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
            self.dist.close()
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
        stages = plan_stages(cfg, data, self.dist.world_size)
        self.total = sum(s.steps for s in stages) if stages else 1
        if self.dist.is_main:
            write_provenance(self.run, cfg, subject, data, self.device, self.dist.world_size,
                             resumed=ckpt is not None)
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
            model_dir = save_final_model(self.run, cfg, model, data, subject_key=self.key, step=self.step,
                                         metrics=self.metrics, caption_ridge=getattr(self, "caption_ridge", None))
            if cfg.model.kind == "moe":
                summary = write_routing_summary(self.run, model, data, self.subject)
                if summary is not None:
                    yield self.emit(Log(message=summary))
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
        p = self.config.model.params
        backend = p.get("backend", "torch" if self.device.type == "cuda" else "numpy")
        device = str(self.device) if backend == "torch" else None
        ridge = new_ridge(p, backend, device)
        yield self.emit(Progress(step=0, total=1, stage="ridge", message="cross-validating alphas"))
        yield from self._cancel_without_checkpoint()
        n = data.train_betas.shape[0]
        if self.config.data.pixel_basis != "pixels":
            from engine.models.pixel_basis import describe_basis

            ridge = fit_pixel_basis(self.config, data, self.subject, self.device, backend=backend, ridge_device=device)
            yield self.emit(Log(message=describe_basis(ridge.info)))
        else:
            with oom_guard(self.device, what="fitting ridge"):
                ridge.fit(data.train_betas, data.targets[data.train_image].reshape(n, -1))
        if p.get("rescale", False):
            ridge.rescale_outputs(data.train_betas, data.targets[data.train_image].reshape(n, -1))
        self.caption_ridge = None
        if data.caption_targets is not None:
            # The caption target is a second, independent ridge fit (its own per-target alphas).
            self.caption_ridge = new_ridge(p, backend, device)
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

    # --- torch encoders -------------------------------------------------------------------------------------------------
    def _train_torch(self, data: PreparedData, stages: list[Stage], ckpt):
        cfg = self.config
        loss_cfg = cfg.loss_config()
        model = build_model(cfg, data, ckpt, self.subject, self.dist)
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
        blurry = blurry_shape(model, loss_cfg)
        offset = 0
        for si, stage in enumerate(stages):
            if si < pos["stage"]:
                offset += stage.steps
                continue
            groups = param_groups(model, stage, cfg.train_mode, self.key)
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
                            loss, parts = pretrain_step(model, rows_all, rows, gen, self.dist, self.key, cfg.precision)
                        else:
                            progress = (self.step - offset) / max(1, stage.steps)
                            loss, parts = train_step(model, data, rows, gen, loss_cfg, progress, blurry, self.dist,
                                                     self.subject, cfg.precision)
                        if not torch.isfinite(loss):
                            raise ConfigError(f"training diverged: loss is {float(loss)} at step {self.step}; lower "
                                              f"optim.lr or use precision fp32/bf16")
                        backward(loss, opt, params, scaler, stage.optim.grad_clip, self.dist)
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


def predict_prepared(model, data: PreparedData, subject_key: str, repeat_mode: str, device="cpu",
                     *, per_repeat: bool = False):
    """Test predictions (n_test_images, *target_shape) from prepared data; see ``engine.train.predict``."""
    from engine.train.predict import predict_groups

    return predict_groups(model, data.test_betas, data.test_groups, subject_key, data.target_shape,
                          repeat_mode=repeat_mode, device=device, per_repeat=per_repeat)
