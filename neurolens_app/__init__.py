"""NeuroLens desktop application (Qt). Calls the engine; the engine never imports this package.

Importing ``neurolens_app`` is cheap: heavy modules (torch, diffusers, nilearn) are imported only inside the
functions and workers that need them, after the window is on screen.
"""

from neurolens_app.pyside_refcount import protect_singletons

# PySide6 6.12 on Python 3.11 loses a reference to True on every signal emission: guard before any Qt use.
PROTECTED = protect_singletons()
