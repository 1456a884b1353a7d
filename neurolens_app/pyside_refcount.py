"""Guard against a reference-count bug of PySide6 6.12 on Python 3.11.

Every ``SignalInstance.emit(...)`` called from Python returns ``True`` without taking a new reference, so each
emission steals one reference to ``True``. A session starts with a few thousand references; pyqtgraph and our widgets
emit on every mouse move, so the app eventually aborts with "Fatal Python error: bool_dealloc". Python 3.12 made
``True``, ``False`` and ``None`` immortal; on older Pythons we do the same once, when the bug is detected, by adding
2**40 to their reference counts (they are never freed anyway, so nothing leaks).
"""

from __future__ import annotations

import ctypes
import sys

_BOOST = 1 << 40


def emit_steals_true() -> bool:
    """True when emitting a signal from Python drops a reference to ``True`` (the bug is present)."""
    from PySide6.QtCore import QObject, Signal

    class _Probe(QObject):
        ping = Signal()

    probe = _Probe()
    before = sys.getrefcount(True)
    for _ in range(8):
        probe.ping.emit()
    return sys.getrefcount(True) < before - 4


def protect_singletons() -> bool:
    """Make ``True``, ``False`` and ``None`` effectively immortal if the bug is present; returns whether it acted."""
    if sys.version_info >= (3, 12) or not emit_steals_true():
        return False
    for obj in (True, False, None):
        ref = ctypes.c_ssize_t.from_address(id(obj))  # ob_refcnt is the first field of every CPython object
        if ref.value < _BOOST:
            ref.value += _BOOST
    return True
