"""``SubjectState``: the open subject, the selected trial and the selected voxel (the run is ``RunState``'s)."""

from __future__ import annotations

from PySide6.QtCore import QObject, Signal


class SubjectState(QObject):
    """What the user is looking at. Setters emit only on change, so views can bind both ways without echo.

    Signals
    -------
    subject_changed(object)  the ``engine.data.Subject`` (or None)
    trial_changed(int)       selected trial row, -1 for none
    voxel_changed(int)       selected voxel column, -1 for none
    """

    subject_changed = Signal(object)
    trial_changed = Signal(int)
    voxel_changed = Signal(int)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._subject = None
        self._trial = -1
        self._voxel = -1

    @property
    def subject(self):
        return self._subject

    @property
    def trial(self) -> int:
        return self._trial

    @property
    def voxel(self) -> int:
        return self._voxel

    def set_subject(self, subject) -> None:
        """Replace the subject; trial and voxel selections are cleared first (``RunState`` clears the run)."""
        self._trial = -1
        self._voxel = -1
        self._subject = subject
        self.subject_changed.emit(subject)
        self.trial_changed.emit(-1)
        self.voxel_changed.emit(-1)

    def set_trial(self, trial: int) -> None:
        trial = int(trial)
        if self._subject is not None and not (-1 <= trial < self._subject.n_trials):
            raise IndexError(f"trial {trial} out of range 0..{self._subject.n_trials - 1}")
        if trial != self._trial:
            self._trial = trial
            self.trial_changed.emit(trial)

    def set_voxel(self, voxel: int) -> None:
        voxel = int(voxel)
        if self._subject is not None and not (-1 <= voxel < self._subject.n_voxels):
            raise IndexError(f"voxel {voxel} out of range 0..{self._subject.n_voxels - 1}")
        if voxel != self._voxel:
            self._voxel = voxel
            self.voxel_changed.emit(voxel)
