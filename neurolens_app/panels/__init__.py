"""Dockable panels. Each panel is registered as a ``PanelSpec``; the main window makes one dock per spec.

A panel is a QWidget built by ``factory(context)``; it reads and writes the shared state in ``context`` and never
calls other panels. Add a panel (e.g. a lab's own analysis) with::

    from neurolens_app.panels import PanelSpec, register_panel
    register_panel(PanelSpec("my-analysis", "My analysis", lambda ctx: MyAnalysisPanel(ctx), area="right"))

before the window is created, or at run time with ``MainWindow.add_panel(spec)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

AREAS = ("left", "right", "top", "bottom")


@dataclass(frozen=True)
class PanelSpec:
    """How to build and place one dock.

    Attributes
    ----------
    name : str, identifier used by ``--panel NAME``, the View menu and saved layouts
    title : str, dock title
    factory : callable ``factory(context) -> QWidget``
    area : "left", "right", "top" or "bottom"
    tabify_with : name of a panel to share a tabbed dock with, optional
    shortcut : key sequence that shows and focuses the panel, optional
    tooltip : one sentence shown on the dock's menu entry
    """

    name: str
    title: str
    factory: Callable
    area: str = "right"
    tabify_with: str | None = None
    shortcut: str | None = None
    tooltip: str = ""

    def __post_init__(self) -> None:
        if self.area not in AREAS:
            raise ValueError(f"panel {self.name!r}: area must be one of {AREAS}, got {self.area!r}")


_REGISTRY: list[PanelSpec] = []


def register_panel(spec: PanelSpec) -> None:
    """Add ``spec`` to the panels every new window builds (a spec with the same name is replaced)."""
    for i, s in enumerate(_REGISTRY):
        if s.name == spec.name:
            _REGISTRY[i] = spec
            return
    _REGISTRY.append(spec)


def panel_specs() -> list[PanelSpec]:
    """The built-in panels followed by the registered ones."""
    return _builtin() + [s for s in _REGISTRY if s.name not in {b.name for b in _builtin()}]


def _builtin() -> list[PanelSpec]:
    from neurolens_app.panels.brain import BrainPanel
    from neurolens_app.panels.data import DataPanel
    from neurolens_app.panels.experts import ExpertsPanel
    from neurolens_app.panels.log import LogPanel
    from neurolens_app.panels.reconstruction import ReconstructionPanel
    from neurolens_app.panels.training import TrainingPanel
    from neurolens_app.panels.trials import TrialsPanel

    return [
        PanelSpec("data", "Data", DataPanel, area="left", shortcut="Ctrl+1",
                  tooltip="The open subject, recent subjects and run folders"),
        PanelSpec("brain", "Brain view", BrainPanel, area="right", shortcut="Ctrl+2",
                  tooltip="Flatmap, 3-D surface or slices with overlays; click a voxel to inspect it"),
        PanelSpec("trials", "Trials", TrialsPanel, area="bottom", shortcut="Ctrl+3",
                  tooltip="Stimulus thumbnails with split, repeat and category"),
        PanelSpec("log", "Log", LogPanel, area="bottom", tabify_with="trials", shortcut="Ctrl+4",
                  tooltip="Messages of the app and the engine"),
        PanelSpec("training", "Training", TrainingPanel, area="right", tabify_with="brain", shortcut="Ctrl+5",
                  tooltip="Train an encoder from a preset or your config; live curves, cancel, resume, runs"),
        PanelSpec("reconstruction", "Reconstruction", ReconstructionPanel, area="right", tabify_with="brain",
                  shortcut="Ctrl+6", tooltip="Click a held-out trial to reconstruct the image it showed; metrics"),
        PanelSpec("experts", "Experts", ExpertsPanel, area="right", tabify_with="brain", shortcut="Ctrl+7",
                  tooltip="What each Mixture-of-Experts expert learned: ROIs, images, timesteps"),
    ]
