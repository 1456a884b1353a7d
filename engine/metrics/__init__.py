"""Reconstruction metrics: pure array functions (``lowlevel``, ``identification``, ``semantic``, ``retrieval``,
``brain``, ``aggregate``), feature extractors (``features``), and the folder evaluation behind ``neurolens evaluate``
and the GUI's metric tables (``evaluate``, ``table``). Definitions follow the published MindEyeV2 and MinD-Vis
evaluation code.

Import the submodules directly; this package imports nothing heavy.
"""
