"""NeuroLens engine: data, models, training, reconstruction, metrics and the CLI.

The engine is GUI-free: nothing here imports Qt, pyqtgraph or ``neurolens_app`` (``tests/test_import_rules.py``
enforces it). Heavy dependencies (torch, diffusers, transformers) are imported inside the modules that need them,
never at package import, so ``import engine`` stays cheap for the GUI's start-up.
"""

from engine._version import __version__

__all__ = ["__version__"]
