"""PySide6 6.12 on Python 3.11 drops a reference to True on every Python-side emit; importing neurolens_app guards
against the resulting crash ("bool_dealloc") by making True/False/None effectively immortal."""

from __future__ import annotations

import sys

from PySide6.QtCore import QObject, Signal

import neurolens_app


class _Emitter(QObject):
    ping = Signal(object)


def test_many_emissions_do_not_exhaust_true(qapp):
    e = _Emitter()
    got = []
    e.ping.connect(got.append)
    for i in range(20000):
        e.ping.emit(None)
    assert len(got) == 20000
    assert sys.getrefcount(True) > 10_000 and sys.getrefcount(None) > 10_000
    if sys.version_info < (3, 12):
        assert isinstance(neurolens_app.PROTECTED, bool)
