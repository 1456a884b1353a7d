"""Data layer: the ``Subject`` model, the native on-disk format, readers of the field's datasets, preprocessing.

``open_subject(path)`` opens any supported source (auto-detected) and returns a ``Subject``.
"""

from engine.data.subject import Subject, TrialTable, VoxelTable, Stimuli, SPLITS
from engine.data.formats import detect_format, FORMATS
from engine.data.sources import open_subject

__all__ = ["Subject", "TrialTable", "VoxelTable", "Stimuli", "SPLITS", "open_subject", "detect_format", "FORMATS"]
