"""``TrainConfigForm``: edits the fields of an ``engine.train.config.TrainConfig`` a user changes most.

The form starts from a config (usually a preset) and gives back that config with the edited fields replaced, so the
fields it does not show (schedules, checkpoints, pre-training...) keep the preset's values. Model parameters are edited
as a one-line YAML mapping (e.g. ``{hidden: 256, n_experts: [2, 4]}``), checked against the model class when the job
starts. Only the cheap checks of ``TrainConfig`` run here: the form never imports torch.
"""

from __future__ import annotations

import yaml
from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QComboBox, QDoubleSpinBox, QFormLayout, QGridLayout, QHBoxLayout, QLabel, QLineEdit,
                               QSpinBox, QWidget)

from engine.errors import ConfigError
from engine.safe_yaml import safe_load
from engine.train.config import MODEL_KINDS, PRECISIONS, TrainConfig

PIXEL_BASES = ("pixels", "pca", "multiscale")  # engine.models.pixel_basis.PIXEL_BASES (this form never imports numpy)

EMBEDDERS = ("demo", "pixels", "stimulus-pixels")
LOSS_WEIGHTS = (("contrastive", "Contrastive"), ("mse", "MSE"), ("cosine", "Cosine"), ("load_balance", "Balance"))
CONTRASTIVE_KINDS = ("mindeye", "infonce", "softclip", "bimixco")
ERROR_COLOR = "#d9534f"  # border of the field a ConfigError names


class TrainConfigForm(QWidget):
    """Signals: ``changed()`` whenever a field is edited."""

    changed = Signal()
    _marked: tuple | None = None  # (widget, its own tooltip) while a ConfigError marks it

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._base = TrainConfig()
        form = QFormLayout(self)
        form.setContentsMargins(0, 0, 0, 0)
        self._add_model_rows(form)
        self._add_loss_rows(form)
        self._add_optimisation_rows(form)
        self._connect_changes()

    def _add_model_rows(self, form: QFormLayout) -> None:
        """Name, model kind and parameters, targets, pixel basis."""
        self.name = QLineEdit()
        self.name.setToolTip("Name of the run (the run folder is named after it and the start time)")
        form.addRow("Name", self.name)
        self.kind = QComboBox()
        self.kind.addItems(MODEL_KINDS)
        self.kind.setToolTip("Encoder: ridge (closed form), MLP (MindEye-style), masked brain model (MinD-Vis) or "
                             "Mixture-of-Experts (MoRE-Brain)")
        self.params = QLineEdit()
        self.params.setToolTip("Model parameters as a YAML mapping, e.g. {hidden: 256, n_experts: [2, 4]}; "
                               "empty = the model's defaults")
        form.addRow("Model", self.kind)
        form.addRow("Parameters", self.params)
        self.embedder = QComboBox()
        self.embedder.setEditable(True)
        self.embedder.addItems(EMBEDDERS)
        self.embedder.setToolTip("Targets: image embeddings of 'demo' (the demo embedder), 'pixels' (random "
                                 "projection of thumbnails), 'stimulus-pixels' (every pixel of the stimulus, "
                                 "the pixel-ridge target) or a local CLIP folder")
        self.target = QComboBox()
        self.target.addItems(["pooled", "tokens"])
        self.target.setToolTip("Predict the pooled embedding vector or the token grid")
        target_row = QHBoxLayout()
        target_row.addWidget(self.embedder, 1)
        target_row.addWidget(self.target)
        form.addRow("Targets", target_row)
        self.pixel_basis = QComboBox()
        self.pixel_basis.addItems(PIXEL_BASES)
        self.pixel_basis.setToolTip("Pixel decoder ('stimulus-pixels' ridge only): every pixel; the first K principal "
                                    "components of the training stimuli and prior images (never a test image); or "
                                    "multi-scale local patches (1×1, 1×2, 2×1, 2×2) combined per pixel, as in "
                                    "Miyawaki et al. 2008")
        self.pca_components = QSpinBox()
        self.pca_components.setRange(1, 100000)
        self.pca_components.setPrefix("K = ")
        self.pca_components.setToolTip("Principal components decoded (clipped to the rank of the basis images)")
        basis_row = QHBoxLayout()
        basis_row.addWidget(self.pixel_basis, 1)
        basis_row.addWidget(self.pca_components)
        form.addRow("Pixel basis", basis_row)

    def _add_loss_rows(self, form: QFormLayout) -> None:
        self.contrastive_kind = QComboBox()
        self.contrastive_kind.addItems(CONTRASTIVE_KINDS)
        self.contrastive_kind.setToolTip("Contrastive loss: 'mindeye' = BiMixCo for the first third, then SoftCLIP")
        form.addRow("Contrastive", self.contrastive_kind)
        self.loss_weights: dict[str, QDoubleSpinBox] = {}
        grid = QGridLayout()
        grid.setContentsMargins(0, 0, 0, 0)
        for i, (key, label) in enumerate(LOSS_WEIGHTS):
            sb = QDoubleSpinBox()
            sb.setRange(0.0, 100.0)
            sb.setDecimals(3)
            sb.setSingleStep(0.1)
            sb.setToolTip(f"Weight of the {label.lower()} loss term (0 = off)")
            self.loss_weights[key] = sb
            grid.addWidget(QLabel(label), i // 2, 2 * (i % 2))
            grid.addWidget(sb, i // 2, 2 * (i % 2) + 1)
        form.addRow("Loss weights", grid)

    def _add_optimisation_rows(self, form: QFormLayout) -> None:
        self.epochs = QSpinBox()
        self.epochs.setRange(1, 100000)
        self.epochs.setToolTip("Epochs of the supervised stage (ridge ignores it)")
        self.batch = QSpinBox()
        self.batch.setRange(2, 65536)
        self.batch.setToolTip("Trials per optimisation step")
        self.lr = QDoubleSpinBox()
        self.lr.setDecimals(6)
        self.lr.setRange(1e-6, 1.0)
        self.lr.setSingleStep(1e-4)
        self.lr.setToolTip("Peak learning rate of AdamW")
        self.precision = QComboBox()
        self.precision.addItems(PRECISIONS)
        self.precision.setToolTip("Autocast precision on CUDA (the CPU always trains in fp32)")
        self.seed = QSpinBox()
        self.seed.setRange(0, 2**31 - 1)
        self.seed.setToolTip("Seeds the initialisation and the data order")
        for label, w in (("Epochs", self.epochs), ("Batch size", self.batch), ("Learning rate", self.lr),
                         ("Precision", self.precision), ("Seed", self.seed)):
            form.addRow(label, w)

    def _connect_changes(self) -> None:
        for w in (self.name, self.params):
            w.textEdited.connect(lambda _=None: self.changed.emit())
        for w in (self.kind, self.target, self.precision, self.contrastive_kind, self.pixel_basis):
            w.currentIndexChanged.connect(lambda _=None: self.changed.emit())
        self.embedder.currentTextChanged.connect(lambda _=None: self.changed.emit())
        self.embedder.currentTextChanged.connect(lambda _=None: self._update_pixel_basis())
        self.pixel_basis.currentTextChanged.connect(lambda _=None: self._update_pixel_basis())
        for w in (self.epochs, self.batch, self.seed, self.lr, self.pca_components, *self.loss_weights.values()):
            w.valueChanged.connect(lambda _=None: self.changed.emit())
        self.kind.currentTextChanged.connect(self._on_kind_changed)

    def set_config(self, cfg: TrainConfig) -> None:
        """Show ``cfg``; fields the form does not show are kept from it by ``config()``."""
        self._base = cfg
        widgets = [self.name, self.kind, self.params, self.embedder, self.target, self.contrastive_kind, self.epochs,
                   self.batch, self.lr, self.precision, self.seed, self.pixel_basis, self.pca_components,
                   *self.loss_weights.values()]
        for w in widgets:
            w.blockSignals(True)
        self.name.setText(cfg.name)
        self.kind.setCurrentText(cfg.model.kind)
        self.params.setText(_flow_yaml(cfg.model.params))
        self.params.setCursorPosition(0)
        self.embedder.setCurrentText(cfg.data.embedder)
        self.target.setCurrentText(cfg.data.target)
        self.pixel_basis.setCurrentText(cfg.data.pixel_basis)
        self.pca_components.setValue(cfg.data.pca_components)
        self.contrastive_kind.setCurrentText(str(cfg.loss.get("contrastive_kind", "mindeye")))
        defaults = {"contrastive": 1.0, "mse": 1.0, "cosine": 0.0, "load_balance": 1.0}  # LossConfig defaults
        for key, sb in self.loss_weights.items():
            sb.setValue(float(cfg.loss.get(key, defaults[key])))
        self.epochs.setValue(cfg.epochs)
        self.batch.setValue(cfg.batch_size)
        self.lr.setValue(cfg.optim.lr)
        self.precision.setCurrentText(cfg.precision)
        self.seed.setValue(cfg.seed)
        for w in widgets:
            w.blockSignals(False)
        self._on_kind_changed(cfg.model.kind)
        self.changed.emit()

    def config(self, device: str | None = None) -> TrainConfig:
        """The edited config (``ConfigError`` naming the field when a value does not fit; the field is marked)."""
        try:
            cfg = self._edited_config(device)
        except ConfigError as e:
            self.mark_error(e)
            raise
        self.mark_error(None)
        return cfg

    def _edited_config(self, device: str | None) -> TrainConfig:
        text = self.params.text().strip()
        try:
            params = safe_load(text) if text else {}
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML ({e})", key="model.params", owner="model parameters") from None
        if not isinstance(params, dict):
            raise ConfigError(key="model.params", expected="a mapping like {hidden: 256}", found=text,
                              owner="model parameters")
        loss = dict(self._base.loss)
        loss["contrastive_kind"] = self.contrastive_kind.currentText()
        for key, sb in self.loss_weights.items():
            loss[key] = float(sb.value())
        overrides = {
            "name": self.name.text().strip() or "run", "model.kind": self.kind.currentText(), "model.params": params,
            "data.embedder": self.embedder.currentText().strip(), "data.target": self.target.currentText(),
            "data.pixel_basis": self.pixel_basis.currentText() if self._pixel_decoder() else "pixels",
            "data.pca_components": self.pca_components.value(),
            "loss": loss, "epochs": self.epochs.value(), "batch_size": self.batch.value(),
            "optim.lr": float(self.lr.value()), "precision": self.precision.currentText(), "seed": self.seed.value(),
        }
        if device:
            overrides["device"] = device
        return self._base.with_overrides(overrides)

    # --- marking the field a ConfigError names --------------------------------------------------------------------
    def widget_for_key(self, key: str | None) -> QWidget | None:
        """The widget that edits the config field ``key`` (dotted, e.g. ``"optim.lr"``, ``"model.params.hidden"``:
        the longest prefix the form shows), or ``None`` when the form does not show it."""
        widgets = {"name": self.name, "model.kind": self.kind, "model.params": self.params,
                   "data.embedder": self.embedder, "data.target": self.target, "data.pixel_basis": self.pixel_basis,
                   "data.pca_components": self.pca_components, "loss.contrastive_kind": self.contrastive_kind,
                   "epochs": self.epochs, "batch_size": self.batch, "optim.lr": self.lr, "precision": self.precision,
                   "seed": self.seed, **{f"loss.{k}": sb for k, sb in self.loss_weights.items()}}
        parts = (key or "").split(".")
        for n in range(len(parts), 0, -1):
            w = widgets.get(".".join(parts[:n]))
            if w is not None:
                return w
        return None

    def mark_error(self, error: ConfigError | None) -> QWidget | None:
        """Red border and the error as tooltip on the field ``error.key`` names (``None``: clear); returns the widget.

        Only the marked widget gets a style sheet, so the unmarked form looks exactly as before."""
        previous = self._marked
        w = None if error is None else self.widget_for_key(error.key)
        if previous is not None and previous[0] is not w:
            previous[0].setStyleSheet("")
            previous[0].setToolTip(previous[1])
            self._marked = previous = None
        if w is not None:
            if previous is None:
                self._marked = (w, w.toolTip())
            w.setStyleSheet(f"{type(w).__name__} {{ border: 1px solid {ERROR_COLOR}; }}")
            w.setToolTip(str(error))
        return w

    def _on_kind_changed(self, kind: str) -> None:
        if kind != self._base.model.kind and self.params.text() == _flow_yaml(self._base.model.params):
            self.params.clear()  # another model kind: its own defaults, not the preset's parameters
        torch_model = kind != "ridge"
        for w in (self.epochs, self.batch, self.lr, self.contrastive_kind, *self.loss_weights.values()):
            w.setEnabled(torch_model)
        self.loss_weights["load_balance"].setEnabled(kind == "moe")
        self._update_pixel_basis()

    def _pixel_decoder(self) -> bool:
        return self.kind.currentText() == "ridge" and self.embedder.currentText().strip() == "stimulus-pixels"

    def _update_pixel_basis(self) -> None:
        """The basis applies to pixel-ridge runs only; K to the PCA basis only."""
        on = self._pixel_decoder()
        self.pixel_basis.setEnabled(on)
        self.pca_components.setEnabled(on and self.pixel_basis.currentText() == "pca")


def _flow_yaml(d: dict) -> str:
    return yaml.safe_dump(d, default_flow_style=True, sort_keys=False).strip() if d else ""
