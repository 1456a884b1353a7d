"""The single place the NeuroLens version lives (pyproject, CLI, About dialog and run provenance read it)."""

__version__ = "0.1.0"
