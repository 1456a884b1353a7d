"""``RunsList``: the run folders of a subject as a sortable table (name, status, model, step, final metrics).

Reads only each run's small files (status, config, whether a decoder exists) through ``engine.train.run.Run`` and
``engine.recon.decoder``; a folder whose files cannot be read is listed with the reason instead of its values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import QAbstractItemView, QHeaderView, QTreeWidget, QTreeWidgetItem

from engine.errors import NeuroLensError

METRIC_COLUMNS = ("two_way", "top1_retrieval", "cosine")
# "running" stays resumable for status files of older versions, which did not record the process (no pid to check)
RESUMABLE = ("cancelled", "failed", "interrupted", "running")
STATUS_TIPS = {"interrupted": "The process training this run is gone (killed or crashed). Resume continues it from its "
                              "newest complete checkpoint."}


@dataclass(frozen=True)
class RunSummary:
    """What the runs list shows of one run folder."""

    path: Path
    status: str
    kind: str = ""
    name: str = ""
    step: int = 0
    total: int = 0
    metrics: dict = field(default_factory=dict)
    has_decoder: bool = False
    error: str = ""

    @property
    def resumable(self) -> bool:
        """Cancelled, failed, or interrupted (its process was killed): the trainer can continue it."""
        return self.status in RESUMABLE


def runs_folder(context) -> Path | None:
    """Where the open subject's runs live: the folder of a run opened with ``--run`` (while its subject is open), the
    folder chosen in the Data panel, else ``runs/`` beside the subject."""
    override = getattr(context, "runs_folder_override", None)
    if override is not None and override[0] is context.subject.subject and context.subject.subject is not None:
        return Path(override[1])
    v = context.settings.value("folders/runs")
    if v:
        return Path(str(v))
    s = context.subject.subject
    return s.path.parent / "runs" if s is not None and s.path is not None else None


_CONFIGS: dict[Path, tuple[int, str, str]] = {}  # run folder -> (config file mtime_ns, kind, name)


def _kind_and_name(run: Path) -> tuple[str, str]:
    """Model kind and name from the run's config, parsed once per version of the file (YAML parsing is slow and the
    lists are refreshed from the GUI thread)."""
    from engine.train.run import Run

    mtime = Run(run).config_path.stat().st_mtime_ns
    hit = _CONFIGS.get(run)
    if hit is None or hit[0] != mtime:
        cfg = Run.open(run).config
        kind = cfg.model.kind
        if cfg.data.pixel_basis == "pca":  # a pixel decoder's basis is part of what the model is
            kind += f" (PCA K={cfg.data.pca_components})"
        elif cfg.data.pixel_basis == "multiscale":
            kind += " (multi-scale)"
        hit = _CONFIGS[run] = (mtime, kind, cfg.name)
    return hit[1], hit[2]


def summarize_run(path: Path) -> RunSummary:
    from engine.recon.decoder import has_decoder
    from engine.train.run import Run

    path = Path(path)
    try:
        kind, name = _kind_and_name(path)
        st = Run(path).status()
    except (NeuroLensError, OSError, ValueError) as e:
        return RunSummary(path, "unreadable", error=str(e))
    return RunSummary(path, str(st.get("status", "unknown")), kind, name,
                      int(st.get("step", 0) or 0), int(st.get("total", 0) or 0), dict(st.get("metrics") or {}),
                      has_decoder(path), str(st.get("error", "") or ""))


def list_runs(folder: Path | None) -> list[RunSummary]:
    """Summaries of the run folders (``Run.is_run_folder``) in ``folder``, newest first."""
    from engine.train.run import Run

    if folder is None or not Path(folder).is_dir():
        return []
    runs = [p for p in Path(folder).iterdir() if p.is_dir() and Run.is_run_folder(p)]
    runs.sort(key=lambda p: p.stat().st_mtime, reverse=True)
    return [summarize_run(p) for p in runs]


class _Item(QTreeWidgetItem):
    """Sorts numeric columns by value, not text."""

    def __lt__(self, other) -> bool:
        col = self.treeWidget().sortColumn() if self.treeWidget() else 0
        a, b = self.data(col, Qt.ItemDataRole.UserRole + 1), other.data(col, Qt.ItemDataRole.UserRole + 1)
        if isinstance(a, (int, float)) and isinstance(b, (int, float)):
            return a < b
        return self.text(col) < other.text(col)


class RunsList(QTreeWidget):
    """Signals: ``run_activated(object)`` (a ``Path``) on double-click."""

    run_activated = Signal(object)
    COLUMNS = ("Run", "Status", "Model", "Step", *METRIC_COLUMNS, "Decoder")

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.setColumnCount(len(self.COLUMNS))
        self.setHeaderLabels(list(self.COLUMNS))
        self.setRootIsDecorated(False)
        self.setSortingEnabled(True)
        self.setAlternatingRowColors(True)
        self.setSelectionMode(QAbstractItemView.SelectionMode.ExtendedSelection)
        self.header().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        for c in range(1, len(self.COLUMNS)):
            self.header().setSectionResizeMode(c, QHeaderView.ResizeMode.ResizeToContents)
        self.setToolTip("Run folders of this subject. Select two to compare their curves; double-click to show one")
        self.summaries: dict[str, RunSummary] = {}
        self.itemDoubleClicked.connect(
            lambda it, _c: self.run_activated.emit(Path(it.data(0, Qt.ItemDataRole.UserRole))))

    def set_runs(self, runs: list[RunSummary]) -> None:
        selected = {str(p) for p in self.selected_runs()}
        self.setSortingEnabled(False)
        self.clear()
        self.summaries = {}
        for r in runs:
            it = _Item()
            it.setData(0, Qt.ItemDataRole.UserRole, str(r.path))
            it.setText(0, r.path.name)
            it.setToolTip(0, str(r.path) + (f"\n{r.error}" if r.error else ""))
            it.setText(1, r.status)
            if r.status in STATUS_TIPS:
                it.setToolTip(1, STATUS_TIPS[r.status])
            it.setText(2, r.kind)
            it.setText(3, f"{r.step}/{r.total}" if r.total else str(r.step))
            it.setData(3, Qt.ItemDataRole.UserRole + 1, r.step)
            for j, m in enumerate(METRIC_COLUMNS, start=4):
                v = r.metrics.get(m)
                if isinstance(v, (int, float)):
                    it.setText(j, f"{v:.3f}")
                    it.setData(j, Qt.ItemDataRole.UserRole + 1, float(v))
                    it.setTextAlignment(j, Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            it.setText(len(self.COLUMNS) - 1, "fine-tuned" if r.has_decoder else "")
            self.addTopLevelItem(it)
            self.summaries[str(r.path)] = r
            if str(r.path) in selected:
                it.setSelected(True)
        self.setSortingEnabled(True)

    def selected_runs(self) -> list[Path]:
        return [Path(it.data(0, Qt.ItemDataRole.UserRole)) for it in self.selectedItems()]

    def select_run(self, path: Path | None) -> None:
        self.clearSelection()
        for i in range(self.topLevelItemCount()):
            it = self.topLevelItem(i)
            if path is not None and Path(it.data(0, Qt.ItemDataRole.UserRole)) == Path(path):
                it.setSelected(True)
                self.setCurrentItem(it)
                return
