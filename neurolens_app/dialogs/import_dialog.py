"""``ImportArraysDialog``: import a subject from plain arrays (.npz, .mat, .h5) by filling in the mapping.

The user picks the arrays file; every array is listed with its shape. The form edits the mapping of
``engine.data.mapping`` (which array holds the betas, images, image indices, ROIs, labels; the image layout, value
range and memory order). A live preview shows the first images as they will be imported and a histogram of voxel
values. "Import" writes the mapping next to the output (for reproducibility) and runs the engine's import job in a
worker with progress; the new subject then opens.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyqtgraph as pg
from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QImage, QPixmap
from PySide6.QtWidgets import (QComboBox, QDialog, QDialogButtonBox, QFileDialog, QFormLayout, QGridLayout,
                               QGroupBox, QHBoxLayout, QHeaderView, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QSpinBox, QSplitter, QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

from neurolens_app.workers.short_job import submit

NONE = "(none)"
LAYOUTS = ("NHWC", "NCHW", "HWCN", "CHWN", "NHW", "HWN")
N_PREVIEW = 8


def array_shapes(path: str | Path, memory_order: str = "auto") -> dict[str, tuple[tuple[int, ...], str]]:
    """Array name → (shape, dtype) of a plain-array file, as the engine's reader will see them."""
    from engine.data.readers.arrays import ArrayFile

    src = ArrayFile(Path(path), memory_order)
    out = {}
    if src._cache is not None:
        for k, a in src._cache.items():
            out[k] = (tuple(a.shape), str(a.dtype))
    else:
        import h5py

        with h5py.File(src.path, "r") as f:
            for k in src.keys():
                ds = f[k]
                shape = tuple(ds.shape)[::-1] if (src.reverse and len(ds.shape) > 1) else tuple(ds.shape)
                out[k] = (shape, str(ds.dtype))
    return out


def preview_arrays(path: str | Path, mapping: dict, n_images: int = N_PREVIEW) -> dict:
    """First images (n, H, W, 3) uint8 as imported, and a sample of voxel values, for the preview.

    Raises the engine's errors (wrong layout, value range, shapes) so the dialog can show them.
    """
    from engine.data.readers.arrays import ArrayFile
    from engine.data.readers.checks import check_betas, to_uint8_images

    src = ArrayFile(Path(path), mapping.get("memory_order", "auto"))
    out: dict = {}
    im = mapping.get("images", {})
    key = im.get("train") or im.get("all")
    if key:
        a = src.get(key)
        layout = im.get("layout", "NHWC").upper()
        if a.ndim == len(layout):
            if layout == "NHW":
                a = a[:n_images]
            else:
                a = np.transpose(a, [layout.index(c) for c in "NHWC"])[:n_images]
        rng = im.get("range", "auto")
        out["images"] = to_uint8_images(a, src.path, key, layout="NHWC", value_range=None if rng == "auto" else rng)
    b = mapping.get("betas", {})
    bkey = b.get("train") or b.get("all")
    if bkey:
        x = check_betas(src.get(bkey), src.path, bkey)
        flat = np.asarray(x, np.float32).ravel()
        if flat.size > 200_000:
            flat = flat[np.random.default_rng(0).choice(flat.size, 200_000, replace=False)]
        out["values"] = flat[np.isfinite(flat)]
        out["betas_shape"] = tuple(x.shape)
    return out


class ImportArraysDialog(QDialog):
    """Signal ``subject_imported(str)``: the path of the native subject written."""

    subject_imported = Signal(str)

    def __init__(self, context, parent=None) -> None:
        super().__init__(parent)
        self.context = context
        self.settings = context.settings
        self.setWindowTitle("Import arrays")
        self.shapes: dict[str, tuple[tuple[int, ...], str]] = {}
        self.worker = None
        self._preview_job = None
        self.last_preview: dict = {}
        self.output_path: Path | None = None
        em = self.fontMetrics().height()
        lay = QVBoxLayout(self)
        lay.addLayout(self._build_file_row())
        split = QSplitter(Qt.Orientation.Horizontal)
        lay.addWidget(split, 1)
        split.addWidget(self._build_arrays_and_mapping(em))
        split.addWidget(self._build_preview(em))
        lay.addLayout(self._build_buttons())
        self.import_button.setEnabled(False)
        self.resize(60 * em, 40 * em)

    # --- layout --------------------------------------------------------------------------------------------------
    def _build_file_row(self) -> QHBoxLayout:
        top = QHBoxLayout()
        top.addWidget(QLabel("Arrays file"))
        self.file = QLineEdit()
        self.file.setPlaceholderText(".npz, .mat (v5 or v7.3) or .h5")
        self.file.setToolTip("The file holding betas, images and the other arrays")
        self.file.editingFinished.connect(lambda: self.set_file(self.file.text()))
        top.addWidget(self.file, 1)
        browse = QPushButton("Browse…")
        browse.setToolTip("Choose the arrays file")
        browse.clicked.connect(self._browse)
        top.addWidget(browse)
        return top

    def _build_arrays_and_mapping(self, em: int) -> QWidget:
        """The arrays in the file, and the mapping form."""
        left = QWidget()
        ll = QVBoxLayout(left)
        ll.setContentsMargins(0, 0, 0, 0)
        self.array_table = QTableWidget(0, 3)
        self.array_table.setHorizontalHeaderLabels(["Array", "Shape", "Type"])
        self.array_table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        self.array_table.verticalHeader().setVisible(False)
        self.array_table.setEditTriggers(QTableWidget.EditTrigger.NoEditTriggers)
        self.array_table.setToolTip("Arrays in the file, with the shapes the importer will see")
        self.array_table.setMinimumHeight(8 * em)
        self.array_table.verticalHeader().setDefaultSectionSize(int(1.5 * em))
        ll.addWidget(self.array_table, 1)
        ll.addWidget(self._build_mapping_form(em))
        return left

    def _build_mapping_form(self, em: int) -> QGroupBox:
        """Which array holds what, the image layout, value range, memory order, index base, ROIs, name, output."""
        form_box = QGroupBox("Mapping")
        form = QFormLayout(form_box)
        self.combos: dict[str, QComboBox] = {}
        fields = [
            ("betas.train", "Betas (train)", "Training betas, (n_trials, n_voxels)"),
            ("betas.test", "Betas (test)", "Test betas, (n_trials, n_voxels); optional"),
            ("images.train", "Images (train)", "Training images, in the layout below"),
            ("images.test", "Images (test)", "Test images; optional"),
            ("trials.train_image_index", "Train image index", "Image of each training trial; optional when "
                                                              "there is one image per trial"),
            ("trials.test_image_index", "Test image index", "Image of each test trial (repeats share an index)"),
            ("labels", "Category labels", "Integer category per image; optional"),
            ("noise_ceiling", "Noise ceiling", "Per-voxel noise ceiling in [0, 1]; optional"),
        ]
        for key, label, tip in fields:
            cb = QComboBox()
            cb.setToolTip(tip)
            cb.currentIndexChanged.connect(self._on_mapping_changed)
            self.combos[key] = cb
            form.addRow(label, cb)
        self._add_array_format_rows(form)
        self.roi_table = QTableWidget(0, 2)
        self.roi_table.setHorizontalHeaderLabels(["ROI name", "Mask array"])
        self.roi_table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeMode.Stretch)
        self.roi_table.verticalHeader().setVisible(False)
        self.roi_table.setToolTip("One boolean mask (n_voxels,) per ROI; edit the names freely")
        self.roi_table.setMaximumHeight(7 * em)
        self.roi_table.verticalHeader().setDefaultSectionSize(int(1.5 * em))
        form.addRow("ROIs", self.roi_table)
        self.name = QLineEdit()
        self.name.setToolTip("Name of the imported subject")
        form.addRow("Subject name", self.name)
        out_row = QHBoxLayout()
        self.out = QLineEdit()
        self.out.setToolTip("The native subject folder to write (*.nlsubj)")
        out_row.addWidget(self.out, 1)
        ob = QPushButton("…")
        ob.setToolTip("Choose the output folder")
        ob.clicked.connect(self._browse_out)
        out_row.addWidget(ob)
        form.addRow("Output", out_row)
        return form_box

    def _add_array_format_rows(self, form: QFormLayout) -> None:
        """Image layout, value range, memory order and index base."""
        self.layout_box = QComboBox()
        self.layout_box.addItems(LAYOUTS)
        self.layout_box.setToolTip("Axis order of the image arrays: N images, H height, W width, C colour channels")
        self.range_box = QComboBox()
        self.range_box.addItems(["auto", "0-255", "0-1", "-1-1"])
        self.range_box.setToolTip("Pixel value range (auto: guessed from the dtype and the values)")
        self.order_box = QComboBox()
        self.order_box.addItems(["auto", "C", "F"])
        self.order_box.setToolTip("Memory order: F reverses the axes of arrays written by MATLAB to HDF5 "
                                  "(auto does it for .mat v7.3 files)")
        self.base_box = QSpinBox()
        self.base_box.setRange(0, 1)
        self.base_box.setToolTip("Image indices start at 0 (Python) or 1 (MATLAB)")
        for w in (self.layout_box, self.range_box):
            w.currentIndexChanged.connect(self._on_mapping_changed)
        self.order_box.currentIndexChanged.connect(lambda _: self.set_file(self.file.text()))
        self.base_box.valueChanged.connect(self._on_mapping_changed)
        form.addRow("Image layout", self.layout_box)
        form.addRow("Value range", self.range_box)
        form.addRow("Memory order", self.order_box)
        form.addRow("Index base", self.base_box)

    def _build_preview(self, em: int) -> QWidget:
        """The first images as they will be imported, the histogram of voxel values, the message line."""
        right = QWidget()
        rl = QVBoxLayout(right)
        rl.setContentsMargins(0, 0, 0, 0)
        rl.addWidget(QLabel("First images, as they will be imported"))
        self.thumbs = QGridLayout()
        self.thumb_labels = []
        for i in range(N_PREVIEW):
            lab = QLabel()
            lab.setFixedSize(5 * em, 5 * em)
            lab.setAlignment(Qt.AlignmentFlag.AlignCenter)
            lab.setToolTip(f"Image {i}")
            self.thumbs.addWidget(lab, i // 4, i % 4)
            self.thumb_labels.append(lab)
        rl.addLayout(self.thumbs)
        rl.addWidget(QLabel("Voxel values (training betas)"))
        self.hist = pg.PlotWidget(background=self.palette().color(self.backgroundRole()))
        self.hist.setToolTip("Histogram of the training betas: check for outliers, constant voxels or wrong scaling")
        self.hist.setLabel("bottom", "beta")
        self.hist.setLabel("left", "count")
        self.hist.setMouseEnabled(False, False)
        rl.addWidget(self.hist, 1)
        self.message = QLabel("")
        self.message.setWordWrap(True)
        self.message.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
        rl.addWidget(self.message)
        return right

    def _build_buttons(self) -> QHBoxLayout:
        bottom = QHBoxLayout()
        self.progress = QProgressBar()
        self.progress.setVisible(False)
        self.progress.setToolTip("Import progress")
        bottom.addWidget(self.progress, 1)
        self.buttons = QDialogButtonBox()
        self.import_button = self.buttons.addButton("Import", QDialogButtonBox.ButtonRole.AcceptRole)
        self.import_button.setToolTip("Write the mapping and import the subject (runs in the background)")
        self.cancel_button = self.buttons.addButton(QDialogButtonBox.StandardButton.Cancel)
        self.cancel_button.setToolTip("Cancel the running import, or close this dialog")
        self.import_button.clicked.connect(self.start_import)
        self.cancel_button.clicked.connect(self._cancel)
        bottom.addWidget(self.buttons)
        return bottom

    # --- file ----------------------------------------------------------------------------------------------------
    def _browse(self) -> None:
        p, _ = QFileDialog.getOpenFileName(self, "Arrays file", self.settings.last_folder("import"),
                                           "Arrays (*.npz *.mat *.h5 *.hdf5);;All files (*)")
        if p:
            self.settings.set_last_folder(Path(p).parent, "import")
            self.set_file(p)

    def _browse_out(self) -> None:
        p, _ = QFileDialog.getSaveFileName(self, "Output subject folder", self.out.text(), "NeuroLens subject (*.nlsubj)")
        if p:
            self.out.setText(p if p.endswith(".nlsubj") else p + ".nlsubj")

    def set_file(self, path: str) -> None:
        """Read the arrays' names and shapes and guess a mapping (the user checks and edits it)."""
        if not path:
            return
        self.file.setText(path)
        try:
            self.shapes = array_shapes(path, self.order_box.currentText())
        except (OSError, ValueError) as exc:
            self.shapes = {}
            self._show_message(str(exc), error=True)
            self.import_button.setEnabled(False)
            return
        self.array_table.setRowCount(len(self.shapes))
        for i, (k, (shape, dtype)) in enumerate(sorted(self.shapes.items())):
            for j, v in enumerate((k, " × ".join(map(str, shape)), dtype)):
                self.array_table.setItem(i, j, QTableWidgetItem(v))
        keys = [NONE] + sorted(self.shapes)
        guesses = self._guess()
        for field, cb in self.combos.items():
            cb.blockSignals(True)
            cb.clear()
            cb.addItems(keys)
            cb.setCurrentText(guesses.get(field, NONE))
            cb.blockSignals(False)
        self.roi_table.setRowCount(0)
        for name, key in guesses.get("rois", {}).items():
            self._add_roi_row(name, key)
        p = Path(path)
        if not self.name.text():
            self.name.setText(p.stem)
        if not self.out.text():
            self.out.setText(str(p.with_suffix(".nlsubj")))
        self._on_mapping_changed()

    def _guess(self) -> dict:
        """Guess fields from array names and shapes (common names in NSD/GOD/MindEye exports)."""
        g: dict = {"rois": {}}
        for k, (shape, dtype) in self.shapes.items():
            low = k.lower().split("/")[-1]
            is_int = dtype.startswith(("int", "uint")) and "8" not in dtype
            if len(shape) == 2 and ("fmri" in low or "beta" in low or low.startswith(("x_", "resp"))):
                g["betas.test" if "test" in low else "betas.train"] = k
            elif len(shape) in (3, 4) and ("stim" in low or "img" in low or "image" in low):
                g["images.test" if "test" in low else "images.train"] = k
            elif len(shape) == 1 and ("index" in low or "idx" in low or low.startswith("lab")) and "test" in low:
                g["trials.test_image_index"] = k
            elif len(shape) == 1 and ("index" in low or "idx" in low) and "train" in low:
                g["trials.train_image_index"] = k
            elif len(shape) == 1 and ("categ" in low or low in ("labels", "label")) and is_int:
                g["labels"] = k
            elif len(shape) == 1 and ("noise" in low or low == "nc"):
                g["noise_ceiling"] = k
            elif len(shape) == 1 and (dtype == "bool" or low.startswith(("roi", "mask"))):
                name = low.replace("roi_", "").replace("mask_", "").replace("roi", "").replace("mask", "") or k
                g["rois"][name.upper() if len(name) <= 3 else name] = k
        return g

    def _add_roi_row(self, name: str, key: str) -> None:
        r = self.roi_table.rowCount()
        self.roi_table.insertRow(r)
        self.roi_table.setItem(r, 0, QTableWidgetItem(name))
        self.roi_table.setItem(r, 1, QTableWidgetItem(key))

    # --- mapping -------------------------------------------------------------------------------------------------
    def mapping(self) -> dict:
        """The mapping as a plain dict (the YAML document written next to the output)."""
        def val(field):
            cb = self.combos[field]
            t = cb.currentText()
            return None if t in ("", NONE) else t

        m: dict = {"version": 1, "file": self.file.text(), "name": self.name.text() or None,
                   "memory_order": self.order_box.currentText()}
        m["betas"] = {k: v for k, v in (("train", val("betas.train")), ("test", val("betas.test"))) if v}
        m["images"] = {k: v for k, v in (("train", val("images.train")), ("test", val("images.test"))) if v}
        m["images"]["layout"] = self.layout_box.currentText()
        m["images"]["range"] = self.range_box.currentText()
        trials = {k: v for k, v in (("train_image_index", val("trials.train_image_index")),
                                    ("test_image_index", val("trials.test_image_index"))) if v}
        if trials:
            trials["index_base"] = self.base_box.value()
            m["trials"] = trials
        rois = {}
        for r in range(self.roi_table.rowCount()):
            n, k = self.roi_table.item(r, 0), self.roi_table.item(r, 1)
            if n and k and n.text() and k.text():
                rois[n.text()] = k.text()
        if rois:
            m["rois"] = rois
        for f in ("labels", "noise_ceiling"):
            if val(f):
                m[f] = val(f)
        return {k: v for k, v in m.items() if v is not None}

    def _on_mapping_changed(self, *_args) -> None:
        from engine.data.mapping import parse_mapping
        from engine.errors import ConfigError

        if not self.shapes:
            return
        m = self.mapping()
        try:
            parse_mapping(m, Path(self.file.text()).with_suffix(".mapping.yaml"))
        except ConfigError as exc:
            self._show_message(str(exc), error=True)
            self.import_button.setEnabled(False)
            return
        self.import_button.setEnabled(self.worker is None)
        if self._preview_job is not None:
            self._preview_job.discard()
        self._preview_job = submit(preview_arrays, self.file.text(), m, on_result=self._show_preview,
                                   on_error=lambda exc, tb: self._show_message(str(exc), error=True))

    def _show_preview(self, p: dict) -> None:
        self.last_preview = p
        imgs = p.get("images")
        for i, lab in enumerate(self.thumb_labels):
            if imgs is not None and i < len(imgs):
                a = np.ascontiguousarray(imgs[i])
                h, w = a.shape[:2]
                q = QImage(a.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()
                lab.setPixmap(QPixmap.fromImage(q).scaled(lab.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                                          Qt.TransformationMode.SmoothTransformation))
            else:
                lab.clear()
        self.hist.clear()
        v = p.get("values")
        if v is not None and v.size:
            counts, edges = np.histogram(v, bins=80)
            self.hist.plot(edges, counts, stepMode="center", fillLevel=0, brush=(31, 119, 180, 150))
        msg = []
        if "betas_shape" in p:
            msg.append(f"Training betas: {p['betas_shape'][0]} trials × {p['betas_shape'][1]} voxels")
        if imgs is not None:
            msg.append(f"images {imgs.shape[1]} × {imgs.shape[2]} RGB")
        self._show_message("; ".join(msg) or "Mapping is valid")

    def _show_message(self, text: str, error: bool = False) -> None:
        self.message.setText(text)
        self.message.setStyleSheet("color: #c0392b;" if error else "")

    # --- import --------------------------------------------------------------------------------------------------
    def start_import(self) -> None:
        """Write the mapping YAML beside the output and run ``engine.data.readers.importer.import_subject``."""
        import yaml

        from engine.data.readers.importer import import_subject

        out = Path(self.out.text())
        mapping_path = out.parent / f"{out.stem}.mapping.yaml"
        m = self.mapping()
        m["file"] = str(Path(self.file.text()).resolve())
        try:
            from engine.atomic import atomic_write_bytes

            atomic_write_bytes(mapping_path, yaml.safe_dump(m, sort_keys=False).encode())
        except OSError as exc:
            self._show_message(f"{mapping_path}: cannot write the mapping ({exc})", error=True)
            return
        self.output_path = out
        self.progress.setVisible(True)
        self.progress.setRange(0, 0)
        self.import_button.setEnabled(False)
        self.worker = self.context.jobs.create(
            lambda cancel: import_subject(mapping_path, out, format="arrays", cancel=cancel),
            f"Importing {Path(self.file.text()).name}", on_result=self._on_imported)
        self.worker.progress.connect(self._on_progress)
        self.context.jobs.finished.connect(self._on_job_finished)
        self.worker.start()

    def _on_progress(self, ev) -> None:
        if ev.total:
            self.progress.setRange(0, ev.total)
            self.progress.setValue(ev.step)
        self.progress.setFormat(f"{ev.stage} %p%")

    def _on_imported(self, path) -> None:
        self._show_message(f"Imported to {path}")
        self.subject_imported.emit(str(path))
        self.accept()

    def _on_job_finished(self, worker) -> None:
        if worker is not self.worker:
            return
        self.context.jobs.finished.disconnect(self._on_job_finished)
        self.worker = None
        self.progress.setVisible(False)
        if worker.outcome == "errored":
            self._show_message("The import failed: see the error dialog.", error=True)
        elif worker.outcome == "cancelled":
            self._show_message("Import cancelled; nothing was written.")
        self.import_button.setEnabled(True)

    def _cancel(self) -> None:
        if self.worker is not None:
            self.worker.cancel()
        else:
            self.reject()
