"""Data layer: the ``Subject`` model, the native on-disk format, readers of the field's datasets, preprocessing.

``open_subject(path)`` opens any supported source (auto-detected) and returns a ``Subject``.
"""

from engine.data.subject import Subject, TrialTable, VoxelTable, Stimuli, SPLITS
from engine.data.formats import open_subject, detect_format, FORMATS

__all__ = ["Subject", "TrialTable", "VoxelTable", "Stimuli", "SPLITS", "open_subject", "detect_format", "FORMATS"]
